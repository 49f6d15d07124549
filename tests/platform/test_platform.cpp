// Tests of the OS layer itself (lib/platform/), built on every platform, the ported part of it on
// Windows (run under Wine there): the capabilities the library stands on, without the library.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <new>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "support/futex_lock.hpp"
#include "platform/handle.hpp"
#include "platform/process.hpp"
#include "platform/shared_memory.hpp"
#include "platform/wait.hpp"

namespace {

using namespace std::chrono_literals;
namespace platform = mp::platform;

// A segment mapped once for a test; unmapped and closed after it.
struct Segment {
  explicit Segment(std::size_t n) : size(n), handle(platform::create_shared_memory(n)) {
    base = platform::map_shared(handle, size);
  }
  ~Segment() {
    platform::unmap(base, size);
    platform::close_handle(handle);
  }
  std::atomic<std::uint32_t>* word(std::size_t i) {
    return static_cast<std::atomic<std::uint32_t>*>(base) + i;
  }
  std::size_t size;
  platform::Handle handle;
  void* base = nullptr;
};

TEST(SharedMemory, IsZeroFilledAndSizedAsAsked) {
  Segment s(10000);
  EXPECT_EQ(platform::shared_memory_size(s.handle), 10000u);
  const auto* p = static_cast<const unsigned char*>(s.base);
  for (std::size_t i = 0; i < s.size; ++i) ASSERT_EQ(p[i], 0) << i;
}

TEST(SharedMemory, TwoViewsSeeTheSameBytes) {
  Segment s(4096);
  void* second = platform::map_shared(s.handle, s.size);
  ASSERT_NE(second, s.base);
  std::memcpy(s.base, "hello", 6);
  EXPECT_STREQ(static_cast<const char*>(second), "hello");
  platform::unmap(second, s.size);
  EXPECT_STREQ(static_cast<const char*>(s.base), "hello");  // the first view outlives the second
}

TEST(SharedMemory, ADuplicatedHandleOutlivesTheOriginal) {
  const platform::Handle h = platform::create_shared_memory(64);
  const platform::Handle dup = platform::duplicate_handle(h);
  void* a = platform::map_shared(h, 64);
  platform::close_handle(h);
  static_cast<char*>(a)[0] = 'x';
  void* b = platform::map_shared(dup, 64);
  EXPECT_EQ(static_cast<char*>(b)[0], 'x');
  platform::unmap(a, 64);
  platform::unmap(b, 64);
  platform::close_handle(dup);
}

// The wait object, on a shared word and on a process-private one.
class Wait : public testing::TestWithParam<bool> {
 protected:
  std::atomic<std::uint32_t>* word(std::size_t i) {
    return GetParam() ? segment_.word(i) : &private_words_[i];
  }
  Segment segment_{4096};
  std::atomic<std::uint32_t> private_words_[256] = {};
};

TEST_P(Wait, ReturnsAtOnceWhenTheWordDiffers) {
  word(0)->store(7);
  const platform::Nanos forever = 3600s;
  EXPECT_TRUE(platform::wait_on_address(word(0), 8, &forever));
}

TEST_P(Wait, TimesOut) {
  const platform::Nanos t = 30ms;
  const auto start = platform::Clock::now();
  bool woke = true;
  // A spurious wake-up may return true; a time-out must come by the deadline (widely bounded).
  while (woke && platform::Clock::now() - start < 10s)
    woke = platform::wait_on_address(word(0), 0, &t);
  EXPECT_FALSE(woke);
}

TEST_P(Wait, WakesAWaitingThread) {
  std::atomic<bool> done{false};
  std::thread waiter([&] {
    const platform::Nanos slice = 30s;
    while (word(1)->load() == 0) platform::wait_on_address(word(1), 0, &slice);
    done = true;
  });
  word(1)->store(1);
  platform::wake_address(word(1), 1);
  waiter.join();
  EXPECT_TRUE(done);
}

TEST_P(Wait, WakeAllReachesEveryWaiterAndNeighboursStayAsleepOrRecheck) {
  constexpr int kThreads = 4;
  std::atomic<int> woken{0};
  std::thread threads[kThreads];
  // Words 2 and 66 share a bucket on Windows (64 buckets per segment): waking one must still wake
  // all waiters of the other word only spuriously, never lose a wake-up of its own.
  for (auto& t : threads)
    t = std::thread([&] {
      const platform::Nanos slice = 30s;
      while (word(2)->load() == 0) platform::wait_on_address(word(2), 0, &slice);
      ++woken;
    });
  std::thread neighbour([&] {
    const platform::Nanos slice = 30s;
    while (word(66)->load() == 0) platform::wait_on_address(word(66), 0, &slice);
  });
  word(2)->store(1);
  platform::wake_address(word(2), INT32_MAX);
  for (auto& t : threads) t.join();
  EXPECT_EQ(woken.load(), kThreads);
  word(66)->store(1);
  platform::wake_address(word(66), 1);
  neighbour.join();
}

// A ping-pong of many rounds: every wake-up must arrive (a lost one hangs until the 30 s slice).
TEST_P(Wait, PingPongLosesNoWakeUp) {
  constexpr std::uint32_t kRounds = 2000;
  std::atomic<std::uint32_t>* w = word(3);
  std::thread peer([&] {
    const platform::Nanos slice = 30s;
    for (std::uint32_t i = 1; i <= kRounds; i += 2) {
      for (std::uint32_t v; (v = w->load()) != i;)
        ASSERT_TRUE(platform::wait_on_address(w, v, &slice)) << i;
      w->store(i + 1);
      platform::wake_address(w, 1);
    }
  });
  const platform::Nanos slice = 30s;
  for (std::uint32_t i = 0; i < kRounds; i += 2) {
    for (std::uint32_t v; (v = w->load()) != i;)
      ASSERT_TRUE(platform::wait_on_address(w, v, &slice)) << i;
    w->store(i + 1);
    platform::wake_address(w, 1);
  }
  peer.join();
  EXPECT_EQ(w->load(), kRounds);
}

INSTANTIATE_TEST_SUITE_P(Platform, Wait, testing::Values(true, false),
                         [](const auto& info) { return info.param ? "shared" : "private"; });

TEST(Identity, PidAndTidAreThisProcessAndThread) {
  EXPECT_GT(platform::current_pid(), 0);
  EXPECT_FALSE(platform::process_dead(platform::current_pid()));
  int other = 0;
  std::thread([&] { other = platform::current_tid(); }).join();
  EXPECT_NE(other, platform::current_tid());
}

// ---- processes: this binary run again as the child (MP_PLATFORM_CHILD=<role> in its environment;
// argv[1] the shared segment's handle, the rest the role's arguments).
constexpr const char* kChildVar = "MP_PLATFORM_CHILD";
constexpr std::size_t kSegment = 65536;

int spawn_child(const std::string& role, platform::Handle segment,
                const std::vector<std::string>& extra = {}) {
  std::vector<std::string> args{platform::executable_path(), std::to_string(segment)};
  args.insert(args.end(), extra.begin(), extra.end());
  return platform::spawn_process(platform::executable_path(), args, kChildVar, role, {segment});
}

// Reaps the child within `limit`, killing it (and failing) if it has not ended by then.
int reap_within(platform::Handle process, std::chrono::seconds limit = 60s) {
  const auto deadline = platform::Clock::now() + limit;
  while (platform::Clock::now() < deadline) {
    if (auto code = platform::reap(process, false)) return *code;
    platform::sleep_for(5ms);
  }
  ADD_FAILURE() << "child did not end within " << limit.count() << " s; killing it";
  platform::send_signal(process, platform::kKillSignal);
  return platform::reap(process, true).value_or(-1000);
}

// Rounds of a ping-pong on a word of a shared segment, between two processes.
constexpr std::uint32_t kRounds = 500;
bool ping_pong(std::atomic<std::uint32_t>* w, std::uint32_t first) {
  const platform::Nanos slice = 30s;
  for (std::uint32_t i = first; i < kRounds; i += 2) {
    for (std::uint32_t v; (v = w->load()) != i;)
      if (!platform::wait_on_address(w, v, &slice)) return false;
    w->store(i + 1);
    platform::wake_address(w, 1);
  }
  return true;
}

TEST(Process, ChildSharesMemoryAndTheWaitObject) {
  Segment s(kSegment);
  const int pid = spawn_child("ping", s.handle);
  const platform::Handle process = platform::open_process(pid);
  EXPECT_TRUE(ping_pong(s.word(0), 0));
  EXPECT_EQ(reap_within(process), 7);
  EXPECT_EQ(s.word(0)->load(), kRounds);
  platform::close_handle(process);
}

TEST(Process, ArgumentsArriveExactly) {
  Segment s(kSegment);
  const std::vector<std::string> args{"plain",
                                      "two words",
                                      "",
                                      "quote\"inside",
                                      "trailing\\",
                                      "back\\\\\"slash",
                                      "tab\tnew\nline",
                                      "caf\xc3\xa9 \xe2\x82\xac"};
  const platform::Handle process = platform::open_process(spawn_child("echo", s.handle, args));
  ASSERT_EQ(reap_within(process), 0);
  platform::close_handle(process);
  std::string expected;
  for (const auto& a : args) expected += a + '\0';
  EXPECT_EQ(std::string(static_cast<const char*>(s.base), expected.size()), expected);
}

TEST(Process, TerminatedChildReportsMinusSigterm) {
  Segment s(kSegment);
  const platform::Handle process = platform::open_process(spawn_child("sleep", s.handle));
  // Wait until the child runs (it raises word 0), then terminate it while it sleeps.
  const platform::Nanos slice = 30s;
  for (std::uint32_t v; (v = s.word(0)->load()) == 0;)
    ASSERT_TRUE(platform::wait_on_address(s.word(0), v, &slice));
  platform::send_signal(process, platform::kTerminateSignal);
  EXPECT_EQ(reap_within(process), -platform::kTerminateSignal);
  platform::close_handle(process);
}

// The robust lock (lib/futex_lock) on the wait object: a holder killed while holding it is found
// dead (process_dead) and the lock taken over, in another process.
TEST(RobustLock, KilledHolderIsTakenOver) {
  Segment s(kSegment);
  auto* lock = new (static_cast<char*>(s.base) + 64) mp::detail::FutexLock;
  const platform::Handle process = platform::open_process(spawn_child("hold", s.handle));
  const platform::Nanos slice = 30s;
  for (std::uint32_t v; (v = s.word(0)->load()) == 0;)
    ASSERT_TRUE(platform::wait_on_address(s.word(0), v, &slice));
  ASSERT_TRUE(lock->locked());
  const std::chrono::nanoseconds poll{0};
  EXPECT_EQ(lock->acquire(&poll), mp::detail::Acquire::timed_out);  // the holder lives
  platform::send_signal(process, platform::kKillSignal);
  reap_within(process);
  const std::chrono::nanoseconds bound = 30s;
  EXPECT_EQ(lock->acquire(&bound), mp::detail::Acquire::owner_died);
  EXPECT_TRUE(lock->held_by_this_process());
  lock->release();
  platform::close_handle(process);
}

// The lifeline: a child's own children end when it is killed (Windows: its kill-on-close job;
// Linux: the library's lifeline is above this layer, so the check is Windows-only).
TEST(Process, GrandchildEndsWithItsKilledParent) {
#ifndef _WIN32
  GTEST_SKIP() << "Linux's lifeline is lib/lifeline.cpp (a pipe the child watches), tested by "
                  "test_reliability";
#endif
  Segment s(kSegment);
  const platform::Handle process = platform::open_process(spawn_child("spawner", s.handle));
  const platform::Nanos slice = 30s;
  for (std::uint32_t v; (v = s.word(0)->load()) == 0;)
    ASSERT_TRUE(platform::wait_on_address(s.word(0), v, &slice));
  const int grandchild = static_cast<int>(s.word(2)->load());
  ASSERT_GT(grandchild, 0);
  EXPECT_FALSE(platform::process_dead(grandchild));
  platform::send_signal(process, platform::kKillSignal);
  reap_within(process);
  const auto deadline = platform::Clock::now() + 30s;
  while (!platform::process_dead(grandchild) && platform::Clock::now() < deadline)
    platform::sleep_for(10ms);
  EXPECT_TRUE(platform::process_dead(grandchild)) << "the grandchild outlived its killed parent";
  platform::close_handle(process);
}

int child_main(const std::string& role, int argc, char** argv) {
  const auto segment = static_cast<platform::Handle>(std::strtoll(argv[1], nullptr, 10));
  void* base = platform::map_shared(segment, kSegment);
  auto* words = static_cast<std::atomic<std::uint32_t>*>(base);
  int code = 1;
  if (role == "ping") {
    code = ping_pong(&words[0], 1) ? 7 : 2;
  } else if (role == "echo") {
    std::string all;
    const std::vector<std::string> args = platform::program_arguments(argc, argv);
    for (std::size_t i = 2; i < args.size(); ++i) all += args[i] + '\0';
    std::memcpy(base, all.data(), std::min(all.size(), kSegment));
    code = 0;
  } else if (role == "hold") {
    auto* lock =
        std::launder(reinterpret_cast<mp::detail::FutexLock*>(static_cast<char*>(base) + 64));
    lock->acquire(nullptr);
    words[1].store(0);
    words[0].store(1);
    platform::wake_address(&words[0], 1);
    for (;;) platform::wait_on_address(&words[1], 0, nullptr);  // until killed, holding the lock
  } else if (role == "spawner") {
    // Starts a sleeping grandchild on a segment of its own, reports its pid in word 2, then sleeps.
    const platform::Handle own = platform::create_shared_memory(kSegment);
    void* own_base = platform::map_shared(own, kSegment);
    const int grandchild = spawn_child("sleep", own);
    auto* own_words = static_cast<std::atomic<std::uint32_t>*>(own_base);
    for (std::uint32_t v; (v = own_words[0].load()) == 0;)
      platform::wait_on_address(&own_words[0], v, nullptr);
    words[2].store(static_cast<std::uint32_t>(grandchild));
    words[1].store(0);
    words[0].store(1);
    platform::wake_address(&words[0], 1);
    for (;;) platform::wait_on_address(&words[1], 0, nullptr);  // until killed
  } else if (role == "sleep") {
    words[1].store(0);
    words[0].store(1);
    platform::wake_address(&words[0], 1);
    for (;;) platform::wait_on_address(&words[1], 0, nullptr);  // until terminated
  }
  platform::unmap(base, kSegment);
  return code;
}

}  // namespace

int main(int argc, char** argv) {
  if (const char* role = std::getenv(kChildVar); role && argc >= 2)
    return child_main(role, argc, argv);
  testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
