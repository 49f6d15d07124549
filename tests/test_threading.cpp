// Thread safety of the foundation within one process (labelled `tsan`: ThreadSanitizer sees these
// races). Several threads start, poll, join, signal and enumerate processes at once, encode and
// decode values at once, and share queues; CPython's equivalent is guarded by the GIL.
#include <signal.h>

#include <atomic>
#include <cstring>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "mp/heap.hpp"
#include "mp/queues.hpp"
#include "mp_test.hpp"

using namespace mp_test;

namespace {

void exit_with(int code) { std::exit(code); }
void sleep_forever() {
  for (;;) std::this_thread::sleep_for(std::chrono::hours(1));
}

constexpr int kThreads = 4;

}  // namespace

class ThreadingTest : public StartMethodTest {};

// Processes made and started from several threads at once get distinct names and pids, and each
// is joined with its own exit code.
TEST_P(ThreadingTest, StartFromManyThreads) {
  constexpr int kPerThread = 5;
  std::vector<std::vector<mp::Process>> made(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        made[t].emplace_back(ctx(), exit_with, t * kPerThread + i);
        made[t].back().start();
      }
      for (auto& p : made[t]) p.join(kTimeout);
    });
  for (auto& th : threads) th.join();
  std::set<std::string> names;
  std::set<int> pids;
  for (int t = 0; t < kThreads; ++t)
    for (int i = 0; i < kPerThread; ++i) {
      mp::Process& p = made[t][i];
      EXPECT_EQ(p.exitcode(), t * kPerThread + i);
      names.insert(p.name());
      pids.insert(p.pid().value_or(-1));
    }
  EXPECT_EQ(names.size(), static_cast<std::size_t>(kThreads * kPerThread));
  EXPECT_EQ(pids.size(), static_cast<std::size_t>(kThreads * kPerThread));
}

// One Process used from several threads: joins, polls and signals race with each other.
TEST_P(ThreadingTest, OneProcessFromManyThreads) {
  mp::Process p(ctx(), sleep_forever);
  p.start();
  std::atomic<int> ended{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&] {
      p.join(kTimeout);
      if (p.exitcode()) ended.fetch_add(1);
      (void)p.is_alive();
      (void)p.pid();
    });
  std::thread poller([&] {
    while (p.is_alive()) (void)mp::active_children();
  });
  p.terminate();
  for (auto& th : threads) th.join();
  poller.join();
  EXPECT_EQ(ended.load(), kThreads);
  EXPECT_EQ(p.exitcode(), -SIGTERM);
  EXPECT_FALSE(p.is_alive());
}

// current_process(), parent_process() and active_children() while other threads start children.
TEST_P(ThreadingTest, EnumerateWhileStarting) {
  std::atomic<bool> done{false};
  std::thread reader([&] {
    while (!done.load()) {
      EXPECT_EQ(mp::current_process().name(), "MainProcess");
      EXPECT_FALSE(mp::parent_process());
      for (mp::Process& c : mp::active_children()) (void)c.name();
    }
  });
  std::vector<mp::Process> ps;
  for (int i = 0; i < 10; ++i) {
    ps.emplace_back(ctx(), exit_with, 0);
    ps.back().start();
  }
  for (auto& p : ps) join_or_fail(p);
  done = true;
  reader.join();
}

MP_INSTANTIATE_START_METHODS(ThreadingTest);

// Encoding and decoding on several threads at once (type tags are initialized lazily).
TEST(ThreadingReduction, ConcurrentDumpsAndLoads) {
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < 200; ++i) {
        const std::map<std::string, std::vector<int>> m{{std::to_string(t), {i, t}}};
        const auto back =
            mp::reduction::loads<std::map<std::string, std::vector<int>>>(mp::reduction::dumps(m));
        if (back == m) ok.fetch_add(1);
      }
    });
  for (auto& th : threads) th.join();
  EXPECT_EQ(ok.load(), kThreads * 200);
}

// Shared blocks made, copied and dropped on several threads.
TEST(ThreadingHeap, ConcurrentSharedBlocks) {
  mp::heap::SharedBlock shared(sizeof(std::atomic<int>));
  auto* counter = static_cast<std::atomic<int>*>(shared.data());
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&] {
      for (int i = 0; i < 50; ++i) {
        mp::heap::SharedBlock mine(128);
        mp::heap::SharedBlock copy = shared;
        static_cast<std::atomic<int>*>(copy.data())->fetch_add(1);
      }
    });
  for (auto& th : threads) th.join();
  EXPECT_EQ(counter->load(), kThreads * 50);
}

// Threads of one process sharing a queue handle: producers and consumers of small and ring-sized
// items (the rings switch every few MiB), each item received once and whole, FIFO per producer.
TEST(ThreadingQueue, ProducersAndConsumersShareOneHandle) {
  mp::Queue<std::string> q;
  constexpr int kProducers = 2, kConsumers = 2, kPerProducer = 400;
  auto item = [](int producer, int i) {
    const std::size_t size = i % 8 == 0 ? (std::size_t{1} << 20) + static_cast<std::size_t>(i) : 16;
    std::string s(size, static_cast<char>('a' + producer));
    std::memcpy(s.data(), &i, sizeof i);
    return s;
  };
  std::vector<std::thread> threads;
  for (int p = 0; p < kProducers; ++p)
    threads.emplace_back([&, p] {
      for (int i = 0; i < kPerProducer; ++i) q.put(item(p, i), true, kTimeout);
    });
  std::vector<std::vector<std::pair<int, int>>> got(kConsumers);
  std::atomic<int> remaining{kProducers * kPerProducer};
  for (int c = 0; c < kConsumers; ++c)
    threads.emplace_back([&, c] {
      while (remaining.fetch_sub(1) > 0) {
        const std::string s = q.get(true, kTimeout);
        int i = 0;
        std::memcpy(&i, s.data(), sizeof i);
        const int p = s.back() - 'a';
        if (s != item(p, i)) ADD_FAILURE() << "torn item";
        got[c].emplace_back(p, i);
      }
    });
  for (auto& t : threads) t.join();
  std::set<std::pair<int, int>> all;
  for (const auto& g : got) {
    std::map<int, int> last;
    for (const auto& [p, i] : g) {
      EXPECT_TRUE(all.insert({p, i}).second) << "item received twice";
      auto [it, fresh] = last.emplace(p, i);
      if (!fresh) {
        EXPECT_GT(i, it->second) << "out of order for one consumer";
        it->second = i;
      }
    }
  }
  EXPECT_EQ(all.size(), static_cast<std::size_t>(kProducers * kPerProducer));
  EXPECT_TRUE(q.empty());
}
