// Tests of mp/futures.hpp: the behaviours of CPython's Lib/test/test_concurrent_futures/
// (test_process_pool, test_thread_pool, test_wait, test_as_completed, test_future,
// test_shutdown), under every start method; every wait is bounded.
#include <atomic>
#include <future>
#include <numeric>
#include <ranges>
#include <set>
#include <thread>

#include "mp/futures.hpp"
#include "counting_range.hpp"
#include "mp_test.hpp"
#include "platform/process.hpp"
#include "platform/wait.hpp"

namespace {

using namespace std::chrono_literals;
using mp_test::kTimeout;
namespace fut = mp::futures;

int sqr(int x) { return x * x; }
int mul(int a, int b) { return a * b; }
int sleep_and_return(double seconds, int x) {
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  return x;
}
int raise_range(int) { throw std::range_error("out of range"); }
int my_pid(int) { return mp::platform::current_pid(); }
// Ends the worker as a kill would (SIGKILL; on Windows TerminateProcess, as Process::kill()).
int die(int) { mp::platform::kill_self(); }
int g_init = 0;
void init(int v) { g_init = v; }
int get_init(int) { return g_init; }

class FuturesTest : public mp_test::StartMethodTest {
 protected:
  fut::ProcessPoolExecutorOptions opts(int n) const {
    return {.max_workers = n, .mp_context = ctx()};
  }
};

TEST_P(FuturesTest, SubmitResult) {
  fut::ProcessPoolExecutor ex(ctx(), 2);
  auto f = ex.submit(mul, 6, 7);
  EXPECT_EQ(f.result(kTimeout), 42);
  EXPECT_TRUE(f.done());
  EXPECT_FALSE(f.running());
  EXPECT_FALSE(f.cancelled());
  EXPECT_EQ(f.exception(kTimeout), nullptr);
  auto g = ex.submit(raise_range, 1);
  EXPECT_THROW(g.result(kTimeout), std::range_error);
  EXPECT_NE(g.exception(kTimeout), nullptr);
  auto slow = ex.submit(sleep_and_return, 0.3, 1);
  EXPECT_THROW(slow.result(10ms), mp::TimeoutError);
  EXPECT_EQ(slow.result(kTimeout), 1);
}

// Shared objects as submit()/map() arguments: the worker uses the parent's objects.
int add_to(mp::Value<int> v, mp::Lock lock, int n) {
  lock.acquire();
  v.set_value(v.value() + n);
  lock.release();
  return n;
}
int put_twice(mp::Queue<int> q, int x) {
  q.put(2 * x);
  return x;
}

TEST_P(FuturesTest, SharedObjectsAsArguments) {
  fut::ProcessPoolExecutor ex(ctx(), 2);
  mp::Value<int> v(0);
  mp::Lock lock;
  mp::Queue<int> q;
  std::vector<fut::Future<int>> fs;
  for (int i = 1; i <= 10; ++i) fs.push_back(ex.submit(add_to, v, lock, i));
  for (auto& f : fs) f.result(kTimeout);
  EXPECT_EQ(v.value(), 55);
  EXPECT_EQ(ex.submit(put_twice, q, 21).result(kTimeout), 21);
  EXPECT_EQ(q.get(true, kTimeout), 42);
}

TEST_P(FuturesTest, Map) {
  fut::ProcessPoolExecutor ex(opts(2));
  std::vector<int> got;
  for (int x : ex.map(sqr, mp_test::Counting<int>(0, 100))) got.push_back(x);
  ASSERT_EQ(got.size(), 100u);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(got[static_cast<std::size_t>(i)], i * i);
  got.clear();
  for (int x : ex.map(sqr, std::vector<int>{1, 2, 3}, 2)) got.push_back(x);
  EXPECT_EQ(got, (std::vector<int>{1, 4, 9}));
  auto it = ex.map(raise_range, std::vector<int>{1, 2});
  EXPECT_THROW(it.next(kTimeout), std::range_error);
  auto slow = ex.map(sleep_and_return, std::vector<std::tuple<double, int>>{{0.5, 1}});
  (void)slow;
}

TEST_P(FuturesTest, InitializerAndMaxTasksPerChild) {
  fut::ProcessPoolExecutor ex(
      fut::ProcessPoolExecutorOptions{
          .max_workers = 1, .mp_context = ctx(), .max_tasks_per_child = 2},
      init, 5);
  std::vector<fut::Future<int>> pids;
  for (int i = 0; i < 6; ++i) pids.push_back(ex.submit(my_pid, 0));
  std::set<int> distinct;
  for (auto& f : pids) distinct.insert(f.result(kTimeout));
  EXPECT_EQ(distinct.size(), 3u);
  EXPECT_EQ(ex.submit(get_init, 0).result(kTimeout), 5);
}

TEST_P(FuturesTest, BadInput) {
  try {
    fut::ProcessPoolExecutor ex(ctx(), 0);
    ADD_FAILURE() << "no exception";
  } catch (const std::invalid_argument& e) {
    EXPECT_STREQ(e.what(), "max_workers must be greater than 0");
  }
  EXPECT_THROW(fut::ProcessPoolExecutor(fut::ProcessPoolExecutorOptions{
                   .max_workers = 1, .mp_context = ctx(), .max_tasks_per_child = 0}),
               std::invalid_argument);
  try {
    fut::ThreadPoolExecutor ex(0);
    ADD_FAILURE() << "no exception";
  } catch (const std::invalid_argument& e) {
    EXPECT_STREQ(e.what(), "max_workers must be greater than 0");
  }
  fut::ProcessPoolExecutor ex(ctx(), 1);
  ex.shutdown();
  try {
    ex.submit(sqr, 1);
    ADD_FAILURE() << "no exception";
  } catch (const std::runtime_error& e) {
    EXPECT_STREQ(e.what(), "cannot schedule new futures after shutdown");
  }
  EXPECT_THROW(ex.map(sqr, std::vector<int>{1}), std::runtime_error);
  ex.shutdown();  // again: nothing happens
}

TEST_P(FuturesTest, CancelAndShutdownCancelFutures) {
  fut::ProcessPoolExecutor ex(ctx(), 1);
  auto running = ex.submit(sleep_and_return, 0.3, 1);
  std::vector<fut::Future<int>> pending;
  for (int i = 0; i < 10; ++i) pending.push_back(ex.submit(sleep_and_return, 0.0, i));
  // The last ones are still pending (one worker, two chunks handed out at most).
  EXPECT_TRUE(pending.back().cancel());
  EXPECT_TRUE(pending.back().cancelled());
  EXPECT_TRUE(pending.back().done());
  EXPECT_THROW(pending.back().result(kTimeout), fut::CancelledError);
  EXPECT_THROW(pending.back().exception(kTimeout), fut::CancelledError);
  EXPECT_FALSE(running.cancel());
  ex.shutdown(true, /*cancel_futures=*/true);
  EXPECT_EQ(running.result(kTimeout), 1);
  int cancelled = 0;
  for (auto& f : pending) {
    ASSERT_TRUE(f.done());
    if (f.cancelled()) ++cancelled;
  }
  EXPECT_GE(cancelled, 7);
}

TEST_P(FuturesTest, DoneCallbacks) {
  fut::ProcessPoolExecutor ex(ctx(), 2);
  std::promise<int> seen;
  auto f = ex.submit(sqr, 4);
  f.add_done_callback([&](fut::Future<int> g) { seen.set_value(g.result()); });
  f.add_done_callback([](fut::Future<int>) { throw std::runtime_error("callback fails"); });
  f.result(kTimeout);
  // As in CPython, waiters may wake before the done callbacks have run.
  auto seen_value = seen.get_future();
  ASSERT_EQ(seen_value.wait_for(kTimeout), std::future_status::ready);
  EXPECT_EQ(seen_value.get(), 16);
  std::atomic<bool> immediate{false};
  f.add_done_callback([&](fut::Future<int>) { immediate = true; });
  EXPECT_TRUE(immediate.load());
  EXPECT_EQ(ex.submit(sqr, 5).result(kTimeout), 25);
}

TEST_P(FuturesTest, Wait) {
  fut::ProcessPoolExecutor ex(ctx(), 2);
  std::vector<fut::Future<int>> fs{ex.submit(sleep_and_return, 0.0, 1),
                                   ex.submit(sleep_and_return, 1.5, 2)};
  auto [done, not_done] = fut::wait(fs, kTimeout, fut::FIRST_COMPLETED);
  EXPECT_EQ(done.size(), 1u);
  EXPECT_EQ(not_done.size(), 1u);
  auto timed = fut::wait(fs, 10ms, fut::ALL_COMPLETED);
  EXPECT_EQ(timed.not_done.size(), 1u);
  std::vector<fut::Future<int>> errs{ex.submit(raise_range, 0),
                                     ex.submit(sleep_and_return, 1.5, 3)};
  auto first_exc = fut::wait(errs, kTimeout, fut::FIRST_EXCEPTION);
  EXPECT_EQ(first_exc.done.size(), 1u);
  auto all = fut::wait(fs, kTimeout);
  EXPECT_EQ(all.done.size(), 2u);
  EXPECT_TRUE(all.not_done.empty());
}

TEST_P(FuturesTest, AsCompleted) {
  fut::ProcessPoolExecutor ex(ctx(), 2);
  std::vector<fut::Future<int>> fs{ex.submit(sleep_and_return, 0.6, 1),
                                   ex.submit(sleep_and_return, 0.0, 2)};
  fs.push_back(fs[1]);  // duplicates come once
  std::vector<int> order;
  for (auto& f : fut::as_completed(fs, kTimeout)) order.push_back(f.result());
  EXPECT_EQ(order, (std::vector<int>{2, 1}));
  std::vector<fut::Future<int>> slow{ex.submit(sleep_and_return, 1.0, 1),
                                     ex.submit(sleep_and_return, 0.0, 2)};
  try {
    for (auto& f : fut::as_completed(slow, 300ms)) (void)f;
    ADD_FAILURE() << "no exception";
  } catch (const mp::TimeoutError& e) {
    EXPECT_STREQ(e.what(), "1 (of 2) futures unfinished");
  }
}

// CPython's contract: an abruptly dying worker breaks the executor, and nothing hangs.
TEST_P(FuturesTest, BrokenProcessPool) {
  fut::ProcessPoolExecutor ex(ctx(), 2);
  std::vector<fut::Future<int>> pending;
  for (int i = 0; i < 4; ++i) pending.push_back(ex.submit(sleep_and_return, 0.3, i));
  auto fatal = ex.submit(die, 0);
  EXPECT_THROW(fatal.result(kTimeout), fut::BrokenProcessPool);
  for (auto& f : pending) {
    ASSERT_TRUE(f.exception(kTimeout) != nullptr || f.done());
  }
  EXPECT_THROW(ex.submit(sqr, 1), fut::BrokenProcessPool);
  ex.shutdown();
}

TEST_P(FuturesTest, TerminateAndKillWorkers) {
  for (bool kill : {false, true}) {
    fut::ProcessPoolExecutor ex(ctx(), 2);
    std::vector<fut::Future<int>> fs;
    for (int i = 0; i < 4; ++i) fs.push_back(ex.submit(sleep_and_return, 30.0, i));
    const auto t0 = std::chrono::steady_clock::now();
    if (kill) {
      ex.kill_workers();
    } else {
      ex.terminate_workers();
    }
    EXPECT_LT(std::chrono::steady_clock::now() - t0, 10s);
    for (auto& f : fs) EXPECT_THROW(f.result(kTimeout), fut::BrokenProcessPool);
    EXPECT_THROW(ex.submit(sqr, 1), std::runtime_error);
  }
}

TEST_P(FuturesTest, ShutdownNoWait) {
  auto ex = std::make_unique<fut::ProcessPoolExecutor>(ctx(), 2);
  auto f = ex->submit(sleep_and_return, 0.1, 7);
  ex->shutdown(false);
  EXPECT_EQ(f.result(kTimeout), 7);
  ex.reset();  // the destructor waits for the workers
}

MP_INSTANTIATE_START_METHODS(FuturesTest);

TEST(ThreadPoolExecutor, Api) {
  int base = 3;
  fut::ThreadPoolExecutor ex(4);
  auto f = ex.submit([&](int x) { return x * base; }, 5);
  EXPECT_EQ(f.result(kTimeout), 15);
  std::vector<int> got;
  for (int x : ex.map([&](int x) { return x + base; }, mp_test::Counting<int>(0, 50)))
    got.push_back(x);
  ASSERT_EQ(got.size(), 50u);
  EXPECT_EQ(got[49], 52);
  EXPECT_THROW(ex.submit(raise_range, 1).result(kTimeout), std::range_error);
  std::vector<fut::Future<int>> fs;
  for (int i = 0; i < 8; ++i) fs.push_back(ex.submit(sleep_and_return, 0.01 * i, i));
  auto [done, not_done] = fut::wait(fs, kTimeout);
  EXPECT_EQ(done.size(), 8u);
  ex.shutdown();
  EXPECT_THROW(ex.submit(sqr, 1), std::runtime_error);
}

// A timeout too long for the clock (hours::max(), nanoseconds::max()) waits as long as needed;
// it used to overflow into a deadline in the past and time out at once. The gate opens after a
// delay only so that the waits really block; the outcome does not depend on it.
TEST(ThreadPoolExecutor, HugeTimeoutsWaitInsteadOfTimingOutAtOnce) {
  fut::ThreadPoolExecutor ex(1);
  std::promise<void> go;
  std::shared_future<void> gate = go.get_future().share();
  auto f = ex.submit([gate] {
    gate.wait();
    return 3;
  });
  std::jthread opener([&] {
    std::this_thread::sleep_for(50ms);
    go.set_value();
  });
  auto [done, not_done] = fut::wait(std::vector{f}, std::chrono::nanoseconds::max());
  EXPECT_EQ(done.size(), 1u);
  EXPECT_TRUE(not_done.empty());
  EXPECT_EQ(f.result(std::chrono::hours::max()), 3);
  int seen = 0;
  for (auto& g : fut::as_completed(std::vector{f}, std::chrono::hours::max())) seen += g.result();
  EXPECT_EQ(seen, 3);
  opener.join();
}

TEST(ThreadPoolExecutor, DefaultWorkersAndInitializer) {
  std::atomic<int> inits{0};
  {
    fut::ThreadPoolExecutor ex(
        2, [&](int add) { inits += add; }, 1);
    EXPECT_EQ(ex.submit(sqr, 3).result(kTimeout), 9);
  }
  EXPECT_EQ(inits.load(), 2);
  fut::ThreadPoolExecutor dflt;
  EXPECT_EQ(dflt.submit(sqr, 2).result(kTimeout), 4);
}

}  // namespace
