// MPIPoolExecutor (mp/mpi.hpp). The same binary runs in both modes, registered by
// tests/mpi/CMakeLists.txt:
//   mpiexec -n 4 test_mpi   rank 0 runs these tests, ranks 1-3 are the workers
//   test_mpi                alone: each executor spawns its workers (MPI_Comm_spawn)
// and, from tests/mpi/*.sh, across two network-namespace "hosts" and with a rank killed.
#include <gtest/gtest.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <cstdlib>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "mp/mpi.hpp"

namespace {

using namespace std::chrono_literals;
using mp::mpi::MPIPoolExecutor;
constexpr auto kTimeout = 60s;

int square(int x) { return x * x; }
int fails(int x) {
  if (x == 3) throw std::invalid_argument("three is not allowed");
  return x;
}
struct Custom : std::exception {
  const char* what() const noexcept override { return "custom"; }
};
int throws_custom() { throw Custom(); }
int slow_pid(int ms) {
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  return static_cast<int>(::getpid());
}
std::string concat(std::string a, const std::vector<int>& v) {
  for (int x : v) a += std::to_string(x);
  return a;
}
// The IPv4 addresses of this rank's network interfaces, loopback left out ("host" of the rank).
std::string host_address(int) {
  std::string out;
  ifaddrs* list = nullptr;
  if (::getifaddrs(&list) != 0) return "?";
  for (ifaddrs* a = list; a; a = a->ifa_next) {
    if (!a->ifa_addr || a->ifa_addr->sa_family != AF_INET) continue;
    char text[INET_ADDRSTRLEN];
    ::inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(a->ifa_addr)->sin_addr, text, sizeof text);
    if (std::string(text).rfind("127.", 0) == 0) continue;
    out += (out.empty() ? "" : ",") + std::string(text);
  }
  ::freeifaddrs(list);
  return out;
}
std::string grow(std::string s, int extra) {
  return s + std::string(static_cast<std::size_t>(extra), 'x');
}
int negate(int x) { return -x; }
int kill_self(int) {
  ::raise(SIGKILL);
  return 0;
}

int workers_expected() { return mp::mpi::world_size() > 1 ? mp::mpi::world_size() - 1 : 2; }
// Spawn mode: two workers; mpiexec mode: all of them.
MPIPoolExecutor make_executor() {
  if (mp::mpi::world_size() > 1) return MPIPoolExecutor();
  return MPIPoolExecutor(2);
}

TEST(MPIPoolExecutor, SubmitResult) {
  auto ex = make_executor();
  EXPECT_EQ(ex.num_workers(), workers_expected());
  auto f = ex.submit(square, 7);
  EXPECT_EQ(f.result(kTimeout), 49);
  EXPECT_TRUE(f.done());
  auto g = ex.submit(concat, std::string("ab"), std::vector<int>{1, 2, 3});
  EXPECT_EQ(g.result(kTimeout), "ab123");
}

TEST(MPIPoolExecutor, ExceptionsComeBack) {
  auto ex = make_executor();
  auto f = ex.submit(fails, 3);
  try {
    f.result(kTimeout);
    FAIL() << "no exception";
  } catch (const std::invalid_argument& e) {
    EXPECT_STREQ(e.what(), "three is not allowed");
  }
  auto g = ex.submit(throws_custom);
  EXPECT_THROW(g.result(kTimeout), mp::RemoteError);
  EXPECT_NE(g.exception(kTimeout), nullptr);
  // The executor goes on.
  EXPECT_EQ(ex.submit(square, 2).result(kTimeout), 4);
}

TEST(MPIPoolExecutor, MapInOrderEveryChunksize) {
  auto ex = make_executor();
  std::vector<int> in(1000);
  for (int i = 0; i < 1000; ++i) in[static_cast<std::size_t>(i)] = i;
  for (std::optional<int> cs : {std::optional<int>(1), std::optional<int>(7),
                                std::optional<int>(1000), std::optional<int>()}) {
    auto it = ex.map(square, in, cs);
    for (int i = 0; i < 1000; ++i) {
      auto v = it.next(kTimeout);
      ASSERT_TRUE(v);
      ASSERT_EQ(*v, i * i);
    }
    EXPECT_FALSE(it.next(kTimeout));
  }
  EXPECT_THROW(ex.map(square, in, 0), std::invalid_argument);
}

// Messages larger than the receives each side keeps posted (64 KiB, lib/mpi/wire.hpp) go the
// other way (announced to the worker, probed for by the client): in order with the small ones,
// a function's definition before its first task, whatever their sizes.
TEST(MPIPoolExecutor, LargeMessages) {
  auto ex = make_executor();
  const std::string big(300'000, 'a');
  std::vector<mp::futures::Future<std::string>> fs;
  for (int round = 0; round < 2; ++round) {
    fs.push_back(ex.submit(grow, big, 1));                     // large task, large result
    fs.push_back(ex.submit(grow, std::string("s"), 200'000));  // small task, large result
    fs.push_back(ex.submit(grow, big.substr(0, 100), 2));      // both small
  }
  for (int round = 0; round < 2; ++round) {
    EXPECT_EQ(fs[3 * static_cast<std::size_t>(round)].result(kTimeout), big + "x");
    EXPECT_EQ(fs[3 * static_cast<std::size_t>(round) + 1].result(kTimeout),
              "s" + std::string(200'000, 'x'));
    EXPECT_EQ(fs[3 * static_cast<std::size_t>(round) + 2].result(kTimeout),
              big.substr(0, 100) + "xx");
  }
  std::vector<int> in(100'000);
  for (int i = 0; i < 100'000; ++i) in[static_cast<std::size_t>(i)] = i;
  auto it = ex.map(negate, in, 30'000);  // chunks of 120 KB each way
  for (int i = 0; i < 100'000; ++i) {
    auto v = it.next(kTimeout);
    ASSERT_TRUE(v);
    ASSERT_EQ(*v, -i);
  }
  EXPECT_FALSE(it.next(kTimeout));
  EXPECT_EQ(ex.submit(square, 6).result(kTimeout), 36);
}

TEST(MPIPoolExecutor, MapErrorAtItsPosition) {
  auto ex = make_executor();
  std::vector<int> in{1, 2, 3, 4};
  auto it = ex.map(fails, in, 1);
  EXPECT_EQ(*it.next(kTimeout), 1);
  EXPECT_EQ(*it.next(kTimeout), 2);
  EXPECT_THROW(it.next(kTimeout), std::invalid_argument);
}

TEST(MPIPoolExecutor, TasksRunOnEveryWorker) {
  auto ex = make_executor();
  std::vector<int> in(4 * static_cast<std::size_t>(ex.num_workers()), 50);
  std::set<int> pids;
  for (int pid : ex.map(slow_pid, in, 1)) pids.insert(pid);
  EXPECT_EQ(static_cast<int>(pids.size()), ex.num_workers());
  EXPECT_EQ(pids.count(static_cast<int>(::getpid())), 0u);  // not in the client
}

TEST(MPIPoolExecutor, WaitAndAsCompleted) {
  auto ex = make_executor();
  std::vector<mp::futures::Future<int>> fs;
  for (int i = 0; i < 20; ++i) fs.push_back(ex.submit(square, i));
  auto [done, not_done] = mp::futures::wait(fs, kTimeout);
  EXPECT_EQ(done.size(), 20u);
  EXPECT_TRUE(not_done.empty());
  std::vector<mp::futures::Future<int>> gs{ex.submit(slow_pid, 500), ex.submit(square, 5)};
  auto first = mp::futures::wait(gs, kTimeout, mp::futures::FIRST_COMPLETED);
  EXPECT_GE(first.done.size(), 1u);
  int sum = 0, n = 0;
  for (auto& f : mp::futures::as_completed(fs, kTimeout)) {
    sum += f.result();
    ++n;
  }
  EXPECT_EQ(n, 20);
  EXPECT_EQ(sum, 2470);
  EXPECT_THROW(gs[0].result(1ms), mp::TimeoutError);
}

TEST(MPIPoolExecutor, ShutdownRefusesAndCancels) {
  auto ex = make_executor();
  std::vector<mp::futures::Future<int>> fs;
  for (int i = 0; i < 40; ++i) fs.push_back(ex.submit(slow_pid, 20));
  ex.shutdown(true, true);
  int cancelled = 0, finished = 0;
  for (auto& f : fs) {
    ASSERT_TRUE(f.done());
    if (f.cancelled()) {
      ++cancelled;
      EXPECT_THROW(f.result(), mp::futures::CancelledError);
    } else {
      ++finished;
      EXPECT_GT(f.result(), 0);
    }
  }
  EXPECT_GT(cancelled, 0);
  EXPECT_GT(finished, 0);
  try {
    ex.submit(square, 1);
    FAIL() << "submit after shutdown";
  } catch (const std::runtime_error& e) {
    EXPECT_STREQ(e.what(), "cannot schedule new futures after shutdown");
  }
}

TEST(MPIPoolExecutor, OneAfterAnotherAndArguments) {
  for (int round = 0; round < 3; ++round) {
    auto ex = make_executor();
    EXPECT_EQ(ex.submit(square, round).result(kTimeout), round * round);
  }
  EXPECT_THROW(MPIPoolExecutor(0), std::invalid_argument);
  if (mp::mpi::world_size() > 1) {
    EXPECT_THROW(MPIPoolExecutor(mp::mpi::world_size()), std::invalid_argument);
    MPIPoolExecutor a(1);
    EXPECT_THROW(MPIPoolExecutor(1), std::runtime_error);  // the world's workers are taken
    EXPECT_EQ(a.submit(square, 3).result(kTimeout), 9);
  }
}

TEST(MPIPoolExecutor, DestructorWaitsForPending) {
  std::vector<mp::futures::Future<int>> fs;
  {
    auto ex = make_executor();
    for (int i = 0; i < 10; ++i) fs.push_back(ex.submit(slow_pid, 10));
  }
  for (auto& f : fs) EXPECT_GT(f.result(0s), 0);
}

// Results no thread waits on in result() (wait, as_completed, callbacks, map) are delivered by
// the engine thread: right after other work (it naps), and after an idle spell (it sleeps and a
// submit wakes it). The pause is not a synchronisation: it only lets the engine thread go to
// sleep, and the test passes either way.
TEST(MPIPoolExecutor, ResultsNoThreadAwaits) {
  auto ex = make_executor();
  EXPECT_EQ(ex.submit(square, 1).result(kTimeout), 1);
  for (int round = 0; round < 2; ++round) {
    if (round == 1) std::this_thread::sleep_for(300ms);
    std::vector<mp::futures::Future<int>> fs{ex.submit(square, 4)};
    auto [done, not_done] = mp::futures::wait(fs, kTimeout);
    ASSERT_EQ(done.size(), 1u);
    std::mutex m;
    std::condition_variable cv;
    bool called = false;
    auto f = ex.submit(square, 5);
    f.add_done_callback([&](const mp::futures::Future<int>&) {
      std::lock_guard g(m);
      called = true;
      cv.notify_all();
    });
    {
      std::unique_lock g(m);
      ASSERT_TRUE(cv.wait_for(g, kTimeout, [&] { return called; }));
    }
    EXPECT_EQ(f.result(0s), 25);
    std::vector<int> two{2, 3};
    auto it = ex.map(square, two);
    EXPECT_EQ(*it.next(kTimeout), 4);
    EXPECT_EQ(*it.next(kTimeout), 9);
  }
}

// Threads waiting on results receive each other's results (and a map's) and deliver them.
TEST(MPIPoolExecutor, ManyWaitersAndAStream) {
  auto ex = make_executor();
  std::atomic<int> wrong{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < 300; ++i) {
        const int x = t * 1000 + i;
        try {
          if (ex.submit(square, x).result(kTimeout) != x * x) ++wrong;
        } catch (...) {
          ++wrong;
        }
      }
    });
  std::vector<int> in(2000);
  for (int i = 0; i < 2000; ++i) in[static_cast<std::size_t>(i)] = i;
  auto it = ex.map(square, in, 1);
  for (int i = 0; i < 2000; ++i) {
    auto v = it.next(kTimeout);
    ASSERT_TRUE(v);
    EXPECT_EQ(*v, i * i);
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(wrong.load(), 0);
}

// tests/mpi/multihost.sh: ranks in two network namespaces; MP_MPI_HOSTS=2 says so.
TEST(MPIPoolExecutor, Hosts) {
  auto ex = make_executor();
  std::vector<int> in(64);
  for (int i = 0; i < 64; ++i) in[static_cast<std::size_t>(i)] = i;
  std::set<std::string> hosts;
  for (const std::string& h : ex.map(host_address, in, 1)) hosts.insert(h);
  // Results in order across hosts.
  auto it = ex.map(square, in, 3);
  for (int i = 0; i < 64; ++i) ASSERT_EQ(*it.next(kTimeout), i * i);
  for (const auto& h : hosts) std::printf("mp-mpi-host: %s\n", h.c_str());
  const char* expect = std::getenv("MP_MPI_HOSTS");
  if (expect) {
    EXPECT_EQ(static_cast<int>(hosts.size()), std::atoi(expect));
  }
}

// A worker rank SIGKILLed while the client waits on its task (MP_MPI_KILL_RANK set):
// - mpiexec mode (tests/mpi/dead_rank.sh): Open MPI 4.1 ends the whole job; the client must end
//   with it (mpiexec exits non-zero), never reaching the end of this test;
// - spawn mode: the client lives on and the executor breaks, as the local one.
TEST(MPIPoolExecutor, KillRank) {
  if (!std::getenv("MP_MPI_KILL_RANK"))
    GTEST_SKIP() << "run by tests/mpi/dead_rank.sh and mpi.dead_rank_spawn";
  auto ex = make_executor();
  auto f = ex.submit(kill_self, 0);
  std::printf("mp-mpi: waiting for the killed task\n");
  std::fflush(stdout);
  std::exception_ptr e = f.exception(kTimeout);
  if (mp::mpi::world_size() > 1) {
    ADD_FAILURE() << "the client was not ended with its job";
    return;
  }
  ASSERT_NE(e, nullptr);
  EXPECT_THROW(std::rethrow_exception(e), mp::futures::BrokenProcessPool);
  EXPECT_THROW(ex.submit(square, 1), mp::futures::BrokenProcessPool);
}

}  // namespace

int main(int argc, char** argv) {
  mp::mpi::init(argc, argv);  // worker ranks serve here and exit
  testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
