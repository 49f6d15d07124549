// Tests of mp/pool.hpp: CPython's _TestPool, _TestPoolWorkerLifetime and _TestPoolWorkerErrors
// (Lib/test/_test_multiprocessing.py), under every start method, plus the guarantees beyond
// CPython listed in docs/RELIABILITY.md.
#ifndef _WIN32
#  include <signal.h>
#endif

#include <algorithm>
#include <atomic>
#include <future>
#include <numeric>
#include <optional>
#include <ranges>
#include <set>
#include <thread>

#include "mp/pool.hpp"
#include "counting_range.hpp"
#include "mp_test.hpp"
#include "platform/process.hpp"
#include "platform/wait.hpp"
#include "queue_faults.hpp"

namespace {

using namespace std::chrono_literals;
using mp_test::kTimeout;

int sqr(int x) { return x * x; }
int add(int a, int b) { return a + b; }
int sqr_slow(int x, double seconds) {
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  return x * x;
}
int my_pid() { return mp::platform::current_pid(); }
void nothing(int) {}
std::string greet(std::string who) { return "hello " + who; }

int raise_invalid(int) { throw std::invalid_argument("bad value"); }
struct CustomError : std::runtime_error {
  using std::runtime_error::runtime_error;
};
int raise_custom(int) { throw CustomError("custom failure"); }
int raise_timeout(int) { throw mp::TimeoutError("inner timeout"); }
int raise_int(int) { throw 42; }
int raise_at_5(int x) {
  if (x == 5) throw std::out_of_range("five");
  return x * x;
}

int g_init_value = 0;
void init_value(int v) { g_init_value = v; }
int read_init_value(int) { return g_init_value; }

struct Point {
  int x;
  double y;
  bool operator==(const Point&) const = default;
};
Point scale(Point p, short k) { return {p.x * k, p.y * k}; }
std::tuple<int, double> split(long long v) {
  return {static_cast<int>(v % 1000), static_cast<double>(v) / 2};
}

class PoolTest : public mp_test::StartMethodTest {
 protected:
  mp::PoolOptions opts(int n) const { return {.processes = n, .context = ctx()}; }
};

TEST_P(PoolTest, Apply) {
  mp::Pool pool(ctx(), 2);
  EXPECT_EQ(pool.apply(sqr, 5), 25);
  EXPECT_EQ(pool.apply(add, 2, 3), 5);
  EXPECT_EQ(pool.apply(greet, "world"), "hello world");
  EXPECT_EQ(pool.apply([](int a, int b) { return a * b; }, 6, 7), 42);
  pool.apply(nothing, 1);
}

TEST_P(PoolTest, Map) {
  mp::Pool pool(ctx(), 2);
  std::vector<int> in(10);
  std::iota(in.begin(), in.end(), 0);
  std::vector<int> want;
  for (int x : in) want.push_back(x * x);
  EXPECT_EQ(pool.map(sqr, in), want);
  std::vector<int> big(100);
  std::iota(big.begin(), big.end(), 0);
  std::vector<int> big_want;
  for (int x : big) big_want.push_back(x * x);
  EXPECT_EQ(pool.map(sqr, big, 20), big_want);
  EXPECT_EQ(pool.map(sqr, mp_test::Counting<int>(0, 100)), big_want);
#if !defined(__clang__) || __clang_major__ >= 15  // clang 14 cannot compile libstdc++ 12's views
  EXPECT_EQ(pool.map(sqr, std::views::iota(0, 100)), big_want);
  auto lazy = std::views::iota(0, 100) | std::views::transform([](int x) { return x; });
  std::vector<int> got;
  for (int x : pool.imap(sqr, lazy, 7)) got.push_back(x);  // an lvalue view: kept by reference
  EXPECT_EQ(got, big_want);
  got.clear();
  for (int x : pool.imap(sqr, std::views::iota(0, 100))) got.push_back(x);  // moved in
  EXPECT_EQ(got, big_want);
#endif
  EXPECT_TRUE(pool.map(sqr, std::vector<int>{}).empty());
  pool.map(nothing, in);
}

// Values that travel as their bytes (arithmetic, trivially copyable structs, argument tuples of
// them without their padding) are read and written in place, and a map's results are decoded
// straight into its list: every value lands at its own index, in chunks of every size.
TEST_P(PoolTest, MapRawValuesInPlace) {
  mp::Pool pool(ctx(), 2);
  std::vector<std::tuple<Point, short>> in;
  std::vector<Point> want;
  for (int i = 0; i < 30'000; ++i) {
    in.emplace_back(Point{i, i * 0.25}, static_cast<short>(i % 7 - 3));
    want.push_back(scale(std::get<0>(in.back()), std::get<1>(in.back())));
  }
  EXPECT_EQ(pool.starmap(scale, in), want);
  EXPECT_EQ(pool.starmap(scale, in, 7), want);
  std::vector<long long> big(50'001);
  std::iota(big.begin(), big.end(), -25'000);
  std::vector<std::tuple<int, double>> split_want;
  for (long long v : big) split_want.push_back(split(v));
  for (int round = 0; round < 3; ++round) EXPECT_EQ(pool.map(split, big), split_want);
  EXPECT_EQ(pool.map(split, big, 1000), split_want);
}

TEST_P(PoolTest, Starmap) {
  mp::Pool pool(ctx(), 2);
  const std::vector<std::tuple<int, int>> in{{1, 2}, {3, 4}, {5, 6}};
  EXPECT_EQ(pool.starmap(add, in), (std::vector<int>{3, 7, 11}));
  EXPECT_EQ(pool.starmap_async(add, in, 1).get(kTimeout), (std::vector<int>{3, 7, 11}));
}

TEST_P(PoolTest, ApplyAsyncAndTimeout) {
  mp::Pool pool(ctx(), 2);
  auto r = pool.apply_async(sqr_slow, 7, 0.2);
  EXPECT_THROW(r.get(10ms), mp::TimeoutError);
  EXPECT_FALSE(r.ready());
  EXPECT_THROW(r.successful(), std::invalid_argument);
  EXPECT_EQ(r.get(kTimeout), 49);
  EXPECT_TRUE(r.ready());
  EXPECT_TRUE(r.successful());
  EXPECT_TRUE(r.wait(kTimeout));
  auto m = pool.map_async(sqr, std::vector<int>{1, 2, 3});
  m.wait();
  EXPECT_EQ(m.get(), (std::vector<int>{1, 4, 9}));
}

TEST_P(PoolTest, Imap) {
  mp::Pool pool(ctx(), 2);
  std::vector<int> in(10);
  std::iota(in.begin(), in.end(), 0);
  auto it = pool.imap(sqr, in);
  for (int i = 0; i < 10; ++i) EXPECT_EQ(it.next(kTimeout), i * i);
  EXPECT_EQ(it.next(kTimeout), std::nullopt);
  std::vector<int> got;
  for (int x : pool.imap(sqr, mp_test::Counting<int>(0, 1000), 100)) got.push_back(x);
  ASSERT_EQ(got.size(), 1000u);
  for (int i = 0; i < 1000; ++i) EXPECT_EQ(got[static_cast<std::size_t>(i)], i * i);
}

TEST_P(PoolTest, ImapUnordered) {
  mp::Pool pool(ctx(), 2);
  std::multiset<int> got;
  for (int x : pool.imap_unordered(sqr, mp_test::Counting<int>(0, 1000))) got.insert(x);
  std::multiset<int> want;
  for (int i = 0; i < 1000; ++i) want.insert(i * i);
  EXPECT_EQ(got, want);
  got.clear();
  for (int x : pool.imap_unordered(sqr, mp_test::Counting<int>(0, 1000), 53)) got.insert(x);
  EXPECT_EQ(got, want);
}

// CPython test_imap_handle_iterable_exception: the error comes out where its chunk begins.
struct ThrowingInput {
  int fail_at;
  struct iterator {
    using value_type = int;
    using difference_type = std::ptrdiff_t;
    int i = 0;
    int fail_at = 0;
    int operator*() const {
      if (i == fail_at) throw std::runtime_error("input failed");
      return i;
    }
    iterator& operator++() {
      ++i;
      return *this;
    }
    void operator++(int) { ++i; }
    bool operator==(std::default_sentinel_t) const { return i >= 20; }
  };
  iterator begin() const { return {0, fail_at}; }
  std::default_sentinel_t end() const { return {}; }
};

TEST_P(PoolTest, ImapInputException) {
  mp::Pool pool(ctx(), 2);
  auto it = pool.imap(sqr, ThrowingInput{10}, 1);
  for (int i = 0; i < 10; ++i) EXPECT_EQ(it.next(kTimeout), i * i);
  EXPECT_THROW(it.next(kTimeout), std::runtime_error);
  EXPECT_EQ(it.next(kTimeout), std::nullopt);
  EXPECT_THROW(pool.map(sqr, ThrowingInput{3}), std::runtime_error);  // map reads first
}

TEST_P(PoolTest, ImapTaskException) {
  mp::Pool pool(ctx(), 2);
  auto it = pool.imap(raise_at_5, mp_test::Counting<int>(0, 10), 1);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(it.next(kTimeout), i * i);
  EXPECT_THROW(it.next(kTimeout), std::out_of_range);
  for (int i = 6; i < 10; ++i) EXPECT_EQ(it.next(kTimeout), i * i);
  EXPECT_EQ(it.next(kTimeout), std::nullopt);
}

TEST_P(PoolTest, ExceptionTypes) {
  mp::Pool pool(ctx(), 1);
  EXPECT_THROW(pool.apply(raise_invalid, 1), std::invalid_argument);
  try {
    pool.apply(raise_invalid, 1);
  } catch (const std::invalid_argument& e) {
    EXPECT_STREQ(e.what(), "bad value");
  }
  EXPECT_THROW(pool.apply(raise_timeout, 1), mp::TimeoutError);
  try {
    pool.apply(raise_custom, 1);
    ADD_FAILURE() << "no exception";
  } catch (const mp::RemoteError& e) {
    EXPECT_NE(e.type_name().find("CustomError"), std::string::npos) << e.type_name();
    EXPECT_NE(std::string(e.what()).find("custom failure"), std::string::npos);
  }
  EXPECT_THROW(pool.apply(raise_int, 1), mp::RemoteError);
  EXPECT_THROW(pool.map(raise_invalid, std::vector<int>{1, 2, 3}), std::invalid_argument);
  auto r = pool.apply_async(raise_invalid, 1);
  r.wait();
  EXPECT_FALSE(r.successful());
  EXPECT_EQ(pool.apply(sqr, 3), 9);  // the pool goes on
}

TEST_P(PoolTest, Callbacks) {
  mp::Pool pool(ctx(), 2);
  std::atomic<int> got{0};
  std::atomic<bool> error_seen{false};
  auto r = pool.apply_async(mp::callbacks([&](const int& v) { got = v; }), sqr, 6);
  r.wait();
  EXPECT_EQ(got.load(), 36);  // the callback ran before wait() returned
  auto e = pool.apply_async(mp::callbacks([&](const int&) {},
                                          [&](std::exception_ptr p) {
                                            try {
                                              std::rethrow_exception(p);
                                            } catch (const std::invalid_argument&) {
                                              error_seen = true;
                                            }
                                          }),
                            raise_invalid, 1);
  e.wait();
  EXPECT_TRUE(error_seen.load());
  std::vector<int> mapped;
  auto m = pool.map_async(mp::callbacks([&](const std::vector<int>& v) { mapped = v; }), sqr,
                          std::vector<int>{1, 2});
  m.wait();
  EXPECT_EQ(mapped, (std::vector<int>{1, 4}));
}

TEST_P(PoolTest, Initializer) {
  mp::Pool pool(opts(2), init_value, 7);
  EXPECT_EQ(pool.apply(read_init_value, 0), 7);
  EXPECT_EQ(pool.map(read_init_value, std::vector<int>(10)), std::vector<int>(10, 7));
}

TEST_P(PoolTest, BadInput) {
  try {
    mp::Pool pool(ctx(), 0);
    ADD_FAILURE() << "no exception";
  } catch (const std::invalid_argument& e) {
    EXPECT_STREQ(e.what(), "Number of processes must be at least 1");
  }
  EXPECT_THROW(mp::Pool(mp::PoolOptions{.processes = 1, .maxtasksperchild = 0, .context = ctx()}),
               std::invalid_argument);
  mp::Pool pool(ctx(), 1);
  EXPECT_THROW(pool.map(sqr, std::vector<int>{1}, 0), std::invalid_argument);
  EXPECT_THROW(pool.imap(sqr, std::vector<int>{1}, -1), std::invalid_argument);
  try {
    pool.join();
    ADD_FAILURE() << "no exception";
  } catch (const std::invalid_argument& e) {
    EXPECT_STREQ(e.what(), "Pool is still running");
  }
  pool.close();
  for (auto call : std::vector<std::function<void()>>{
           [&] { pool.apply(sqr, 1); }, [&] { pool.apply_async(sqr, 1); },
           [&] { pool.map(sqr, std::vector<int>{1}); },
           [&] { pool.imap(sqr, std::vector<int>{1}); },
           [&] { pool.imap_unordered(sqr, std::vector<int>{1}); },
           [&] {
             pool.starmap(add, std::vector<std::tuple<int, int>>{{1, 2}});
           }}) {
    try {
      call();
      ADD_FAILURE() << "no exception";
    } catch (const std::invalid_argument& e) {
      EXPECT_STREQ(e.what(), "Pool not running");
    }
  }
  pool.join();
  mp::Pool p2(ctx(), 1);
  p2.terminate();
  EXPECT_THROW(p2.apply(sqr, 1), std::invalid_argument);
  p2.join();
}

// CPython test_terminate: terminate() with a long map pending returns quickly; the result fails.
TEST_P(PoolTest, Terminate) {
  mp::Pool pool(ctx(), 2);
  auto r = pool.map_async(sqr_slow, std::vector<std::tuple<int, double>>(1), 1);
  auto many = pool.starmap_async(sqr_slow, std::vector<std::tuple<int, double>>(100, {1, 0.1}), 1);
  const auto t0 = std::chrono::steady_clock::now();
  pool.terminate();
  pool.join();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 10s);
  EXPECT_TRUE(many.wait(kTimeout));
  EXPECT_THROW(many.get(), mp::ProcessError);
  (void)r;
}

TEST_P(PoolTest, CloseJoinFinishesWork) {
  mp::Pool pool(ctx(), 2);
  auto r = pool.starmap_async(sqr_slow, std::vector<std::tuple<int, double>>(6, {3, 0.02}));
  pool.close();
  pool.join();
  ASSERT_TRUE(r.ready());
  EXPECT_EQ(r.get(), std::vector<int>(6, 9));
}

// _TestPoolWorkerLifetime.test_pool_worker_lifetime: workers are replaced after maxtasksperchild.
TEST_P(PoolTest, WorkerLifetime) {
  mp::Pool pool(mp::PoolOptions{.processes = 3, .maxtasksperchild = 10, .context = ctx()});
  std::vector<mp::AsyncResult<int>> results;
  for (int i = 0; i < 100; ++i) results.push_back(pool.apply_async(my_pid));
  std::set<int> pids;
  for (auto& r : results) pids.insert(r.get(kTimeout));
  EXPECT_GE(pids.size(), 10u);  // 100 tasks, at most 10 per worker
  pool.close();
  pool.join();
}

// test_pool_worker_lifetime_early_close
TEST_P(PoolTest, WorkerLifetimeEarlyClose) {
  mp::Pool pool(mp::PoolOptions{.processes = 3, .maxtasksperchild = 1, .context = ctx()});
  std::vector<mp::AsyncResult<int>> results;
  for (int i = 0; i < 6; ++i) results.push_back(pool.apply_async(sqr_slow, i, 0.01));
  pool.close();
  pool.join();
  for (int i = 0; i < 6; ++i) EXPECT_EQ(results[static_cast<std::size_t>(i)].get(kTimeout), i * i);
}

TEST_P(PoolTest, Destructor) {
  auto r = [&] {
    mp::Pool pool(ctx(), 2);
    EXPECT_EQ(pool.apply(sqr, 2), 4);
    return pool.apply_async(sqr_slow, 1, 5.0);
  }();
  EXPECT_TRUE(r.wait(kTimeout));
  EXPECT_FALSE(r.successful());
}

// An ended pool's queues are kept for the next pool of this process (their making and unmapping
// cost a quarter of a Pool(4)'s start and end), reset; and only once no other process can use
// them: here a forked child that inherited them while the first pool ran, and still runs.
std::string big_text(int n) { return std::string(static_cast<std::size_t>(n) << 10, 'x'); }
#ifndef _WIN32
void wait_event(mp::Event e) { e.wait(); }
#endif

TEST_P(PoolTest, QueuesReusedOnlyOnceNoOtherProcessCanUseThem) {
  using mp::detail::pool::spare_queues;
  [[maybe_unused]] const std::size_t before = spare_queues();
  {
    mp::Pool pool(ctx(), 2);  // three queues: two workers' tasks and the results
    EXPECT_EQ(pool.map(sqr, std::vector<int>{1, 2, 3}), (std::vector<int>{1, 4, 9}));
    pool.close();
    pool.join();
  }
  const std::size_t kept = spare_queues();
#ifdef _WIN32
  EXPECT_EQ(kept, 0u);  // never reused on Windows (out-of-band items may be in flight)
  const std::size_t three = 0;
#else
  EXPECT_EQ(kept, std::max<std::size_t>(before, 3));  // three taken (or made), three back
  const std::size_t three = 3;
#endif
  {
    // Taken again, the queues work as new; results of 1 MiB go past the pages a reset keeps.
    mp::Pool pool(ctx(), 2);
    EXPECT_EQ(spare_queues(), kept - three);
    EXPECT_EQ(pool.map(sqr, std::vector<int>{4, 5}), (std::vector<int>{16, 25}));
    const auto texts = pool.map(big_text, std::vector<int>{1024, 1024, 1024, 1024});
    ASSERT_EQ(texts.size(), 4u);
    for (const auto& t : texts) EXPECT_EQ(t, big_text(1024));
  }  // the destructor terminates the workers: the queues are kept all the same
  EXPECT_EQ(spare_queues(), kept);
  {
    mp::Pool pool(ctx(), 2);
    EXPECT_EQ(pool.map(sqr, std::vector<int>{6}), (std::vector<int>{36}));
    pool.close();
    pool.join();
  }
  EXPECT_EQ(spare_queues(), kept);
#ifndef _WIN32
  if (GetParam() == std::string("fork")) {
    // A forked child inherits the queues of the pool alive at its start (a lease on them, as
    // on every shared block): they are not reused while it runs.
    mp::Event go;
    std::optional<mp::Process> child;
    {
      mp::Pool pool(ctx(), 2);
      EXPECT_EQ(spare_queues(), kept - 3);
      child.emplace(ctx(), wait_event, go);
      child->start();
      pool.close();
      pool.join();
    }
    EXPECT_EQ(spare_queues(), kept - 3);
    go.set();
    child->join(kTimeout);
    ASSERT_EQ(child->exitcode(), 0);
  }
#endif
}

// Shared objects: as initargs they travel with the workers (TerminateAfterDeathHoldingQueueLock
// passes a Value); as task arguments (apply, map, starmap, imap) their descriptors are passed to
// the running worker with the task: the worker uses the parent's very objects, also ones created
// after the pool and ones the caller destroyed before the task ran. Proxies too.
int set_in_dict(mp::managers::DictProxy<std::string, int> d, int v) {
  d.setitem("k", v);
  return v;
}
int read_value(mp::Value<int> v) { return v.value(); }
int add_locked(mp::Value<int> v, mp::Lock lock, int n) {
  lock.acquire();
  v.set_value(v.value() + n);
  lock.release();
  return n;
}
bool lock_is_free(mp::Lock lock) {
  const bool got = lock.acquire(false);
  if (got) lock.release();
  return got;
}
int put_square(mp::Queue<int> q, int x) {
  q.put(x * x);
  return x;
}

TEST_P(PoolTest, ProxyAsTaskArgument) {
  auto manager = mp::Manager();
  auto d = manager.dict<std::string, int>();
  mp::Pool pool(ctx(), 2);
  EXPECT_EQ(pool.apply(set_in_dict, d, 5), 5);
  EXPECT_EQ(d.get("k"), 5);
  manager.shutdown();
}

TEST_P(PoolTest, SharedObjectsAsTaskArguments) {
  mp::Pool pool(ctx(), 2);
  // Created after the workers started.
  mp::Value<int> v(3);
  mp::Lock lock;
  mp::Queue<int> q;
  EXPECT_EQ(pool.apply(read_value, v), 3);
  lock.acquire();
  EXPECT_FALSE(pool.apply(lock_is_free, lock));  // the same lock, held here
  lock.release();
  EXPECT_TRUE(pool.apply(lock_is_free, lock));

  // map/starmap in chunks: every task updates the one Value under the one Lock.
  std::vector<std::tuple<mp::Value<int>, mp::Lock, int>> adds;
  for (int i = 1; i <= 40; ++i) adds.emplace_back(v, lock, i);
  EXPECT_EQ(pool.starmap(add_locked, adds, 3).size(), 40u);
  EXPECT_EQ(v.value(), 3 + 40 * 41 / 2);
  std::vector<std::tuple<mp::Queue<int>, int>> puts;
  for (int i = 0; i < 10; ++i) puts.emplace_back(q, i);
  EXPECT_EQ(pool.starmap(put_square, puts).size(), 10u);
  int sum = 0;
  for (int i = 0; i < 10; ++i) sum += q.get(true, kTimeout);
  EXPECT_EQ(sum, 285);
  std::vector<mp::Value<int>> values(5, v);
  for (int r : pool.imap(read_value, values)) EXPECT_EQ(r, 3 + 40 * 41 / 2);

  // The caller's object is gone before the task runs: the task still has it.
  auto r = [&] {
    mp::Value<int> temp(42);
    return pool.apply_async(read_value, temp);
  }();
  EXPECT_EQ(r.get(kTimeout), 42);
}

MP_INSTANTIATE_START_METHODS(PoolTest);

// ---- Guarantees beyond CPython (docs/RELIABILITY.md), each under every start method.
class PoolGuarantee : public PoolTest {};

// Ends the worker as a kill would: SIGKILL; on Windows TerminateProcess, as Process::kill(), which
// reports -SIGTERM (mp_test::kKilledExitCode).
int die_killed(int) { mp::platform::kill_self(); }
const std::string kKilledBy = mp::platform::signal_name(-mp_test::kKilledExitCode);
int die_abort(int) { std::abort(); }
int die_exit(int) { std::exit(3); }

// 1. A worker that dies fails only the task it was running; the tasks it had been handed but
// had not started complete elsewhere; it is replaced.
TEST_P(PoolGuarantee, WorkerDeathFailsOnlyItsTask) {
  mp::Pool pool(ctx(), 1);  // one worker: the tasks behind the fatal one were handed to it
  auto before = pool.apply_async(sqr_slow, 2, 0.05);
  auto fatal = pool.apply_async(die_killed, 0);
  std::vector<mp::AsyncResult<int>> after;
  for (int i = 0; i < 6; ++i) after.push_back(pool.apply_async(sqr, i));
  EXPECT_EQ(before.get(kTimeout), 4);
  try {
    fatal.get(kTimeout);
    ADD_FAILURE() << "no exception";
  } catch (const mp::WorkerLostError& e) {
    EXPECT_NE(std::string(e.what()).find(kKilledBy), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(std::to_string(e.pid())), std::string::npos) << e.what();
    EXPECT_EQ(e.exitcode(), mp_test::kKilledExitCode);
  }
  for (int i = 0; i < 6; ++i) EXPECT_EQ(after[static_cast<std::size_t>(i)].get(kTimeout), i * i);
  EXPECT_EQ(pool.apply(sqr, 9), 81);  // replaced, and the pool goes on
}

int die_on_zero(int x) {
  if (x == 0) mp::platform::kill_self();
  return x * x;
}

// map() sends a contiguous input of the task's parameter type from the caller's memory. When it
// fails with chunks still to send (here the worker dies on the first of 32), the pool reads
// none of that memory once map() has returned: no further chunk of it is sent (the input is
// overwritten with items that would kill a worker, and freed), and the pool goes on.
TEST_P(PoolGuarantee, MapFromTheCallersInputReadsNoneOfItAfterFailing) {
  for (int round = 0; round < 3; ++round) {
    mp::Pool pool(ctx(), 1);
    auto in = std::make_unique<std::vector<int>>(64, 3);
    (*in)[0] = 0;
    EXPECT_THROW(pool.map(die_on_zero, *in, 2), mp::WorkerLostError);
    const std::uint64_t sent = pool.chunks_sent();
    std::fill(in->begin(), in->end(), 0);
    in.reset();
    std::vector<int> ok(1000);
    std::iota(ok.begin(), ok.end(), 1);
    std::vector<int> want;
    for (int x : ok) want.push_back(x * x);
    EXPECT_EQ(pool.map(die_on_zero, ok, 100), want);
    // The 10 chunks of this map, and at most the failed map's chunk that was queued behind the
    // fatal one (sent again, or failed, before map() returned).
    EXPECT_LE(pool.chunks_sent() - sent, 11u);
    pool.close();
    pool.join();
  }
}

TEST_P(PoolGuarantee, WorkerAbortAndExit) {
  mp::Pool pool(ctx(), 2);
  try {
    pool.apply(die_abort, 0);
    ADD_FAILURE() << "no exception";
  } catch (const mp::WorkerLostError& e) {
#ifdef _WIN32  // the C runtime's abort() exits with code 3 (CPython's os.abort() there too)
    EXPECT_EQ(e.exitcode(), 3) << e.what();
#else
    EXPECT_NE(std::string(e.what()).find("SIGABRT"), std::string::npos) << e.what();
#endif
  }
  try {
    pool.apply(die_exit, 0);
    ADD_FAILURE() << "no exception";
  } catch (const mp::WorkerLostError& e) {
    EXPECT_NE(std::string(e.what()).find("exited with code 3"), std::string::npos) << e.what();
    EXPECT_EQ(e.exitcode(), 3);
  }
  // In a map, the whole map fails (as any task error does); an imap fails only at that item.
  EXPECT_THROW(pool.map(die_killed, std::vector<int>{1}), mp::WorkerLostError);
  auto it = pool.imap(raise_at_5, mp_test::Counting<int>(0, 8), 1);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(it.next(kTimeout), i * i);
  EXPECT_THROW(it.next(kTimeout), std::out_of_range);
  EXPECT_EQ(pool.apply(sqr, 4), 16);
}

// 2. A result that cannot be serialized (in the worker), or decoded (in the parent), fails only its
// own task: the worker lives on, the pool goes on. Every wait is bounded: without the mechanism
// the task would never finish (CPython hangs) or its worker would die (WorkerLostError).
struct Unsendable {
  int v = 0;
  template <class Archive>
  void save(Archive&) const {
    throw mp::PicklingError("cannot serialize Unsendable");
  }
  template <class Archive>
  void load(Archive& ar) {
    ar(v);
  }
};
struct Undecodable {
  int v = 0;
  template <class Archive>
  void save(Archive& ar) const {
    ar(v);
  }
  template <class Archive>
  void load(Archive& ar) {
    ar(v);
    if (v == 3) throw mp::UnpicklingError("cannot decode Undecodable 3");
  }
};
Unsendable make_unsendable(int v) { return {v}; }
int worker_pid(int) { return mp::platform::current_pid(); }
Undecodable make_undecodable(int v) { return {v}; }

TEST_P(PoolGuarantee, UnserializableResultFailsOnlyItsTask) {
  mp::Pool pool(ctx(), 1);
  const int pid = pool.apply_async(worker_pid, 0).get(kTimeout);
  EXPECT_THROW(pool.apply_async(make_unsendable, 1).get(kTimeout), mp::PicklingError);
  EXPECT_EQ(pool.apply_async(sqr, 5).get(kTimeout), 25);
  EXPECT_THROW(pool.apply_async(make_undecodable, 3).get(kTimeout), mp::UnpicklingError);
  EXPECT_EQ(pool.apply_async(make_undecodable, 4).get(kTimeout).v, 4);
  EXPECT_EQ(pool.apply_async(worker_pid, 0).get(kTimeout), pid);  // the same worker throughout
  auto it = pool.imap(make_undecodable, mp_test::Counting<int>(0, 6), 1);
  for (int i = 0; i < 6; ++i) {
    if (i == 3) {
      EXPECT_THROW(it.next(kTimeout), mp::UnpicklingError);
    } else {
      EXPECT_EQ(it.next(kTimeout)->v, i);
    }
  }
  EXPECT_EQ(it.next(kTimeout), std::nullopt);
}

// 3. A callback that throws does not stop the pool's result thread.
TEST_P(PoolGuarantee, ThrowingCallback) {
  mp::Pool pool(ctx(), 2);
  for (int i = 0; i < 3; ++i) {
    auto r = pool.apply_async(
        mp::callbacks([](const int&) { throw std::runtime_error("callback fails"); }), sqr, i);
    EXPECT_EQ(r.get(kTimeout), i * i);
    auto e = pool.apply_async(
        mp::callbacks(nullptr,
                      [](std::exception_ptr) { throw std::runtime_error("error callback fails"); }),
        raise_invalid, i);
    EXPECT_THROW(e.get(kTimeout), std::invalid_argument);
  }
  EXPECT_EQ(pool.map(sqr, std::vector<int>{1, 2, 3}), (std::vector<int>{1, 4, 9}));
}

// 4. imap/imap_unordered read a huge lazy input lazily, with bounded buffering.
std::atomic<long long> g_pulled{0};
long long ident(long long x) { return x; }

TEST_P(PoolGuarantee, LazyBoundedImap) {
  mp::Pool pool(ctx(), 2);
  for (bool ordered : {true, false}) {
    g_pulled = 0;
    const mp_test::Counting<long long> input(0, 100'000'000, &g_pulled);
    const auto t0 = std::chrono::steady_clock::now();
    {
      auto it = ordered ? pool.imap(ident, input) : pool.imap_unordered(ident, input);
      ASSERT_TRUE(it.next(kTimeout).has_value());
      EXPECT_LT(std::chrono::steady_clock::now() - t0, 10s);
      // A consumer that pauses: the pool must not read ahead (the bound holds at any moment;
      // the pause only gives an unbounded reader time to show itself).
      std::this_thread::sleep_for(300ms);
      for (int i = 0; i < 10'000; ++i) ASSERT_TRUE(it.next(kTimeout).has_value());
      std::this_thread::sleep_for(300ms);
      // Bounded: what was consumed plus a few chunks in flight or buffered (at most
      // (4 * 2 + 2) * 4096 items here, with some slack), whatever the input's length.
      EXPECT_LT(g_pulled.load(), 10'001 + 12 * 4096);
      RecordProperty(ordered ? "pulled_imap" : "pulled_imap_unordered",
                     std::to_string(g_pulled.load()));
    }  // abandoning a partly consumed iterator stops reading the input
  }
  // close() + join() with a partly consumed iterator of a finite input: no deadlock.
  auto it = pool.imap(sqr, mp_test::Counting<int>(0, 20'000));
  EXPECT_EQ(it.next(kTimeout), 0);
  pool.close();
  pool.join();
  int n = 1;
  while (it.next(kTimeout)) ++n;
  EXPECT_EQ(n, 20'000);
}

// 5. maxtasksperchild never strands queued work: a worker is never handed more than it has left
// to run, so no chunk waits in the queue of a worker that exits (none has to be handed out again:
// chunks_sent() counts every hand-out, re-sends included).
TEST_P(PoolGuarantee, MaxTasksPerChildStrandsNothing) {
  mp::Pool pool(mp::PoolOptions{.processes = 2, .maxtasksperchild = 1, .context = ctx()});
#ifdef _WIN32
  std::vector<int> in(10);  // a worker per item: 40 took 6-31 s under Wine
#else
  std::vector<int> in(40);
#endif
  std::iota(in.begin(), in.end(), 0);
  std::vector<int> want;
  for (int x : in) want.push_back(x * x);
  const auto sent = pool.chunks_sent();
  EXPECT_EQ(pool.map_async(sqr, in, 1).get(kTimeout), want);
  EXPECT_EQ(pool.chunks_sent() - sent, in.size());
  std::vector<int> got;
  for (int x : pool.imap(sqr, in)) got.push_back(x);
  EXPECT_EQ(got, want);
  pool.close();
  pool.join();
}

// 6. terminate() is bounded even when a worker died holding the result queue's lock.
// Kills the first worker to reach the fault point (a shared object passed as initargs).
std::optional<mp::Value<int>> g_fired;
void die_in_result_put(mp::Value<int> fired) {
  g_fired = fired;
  mp::detail::queue_fault = [](mp::detail::QueueFault f) {
    if (f != mp::detail::QueueFault::producer_switch_recorded) return;
    std::lock_guard g(g_fired->get_lock());
    if (g_fired->value() != 0) return;
    g_fired->set_value(1);
    mp::platform::kill_self();
  };
}
std::string big_result(int n) { return std::string(static_cast<std::size_t>(n), 'x'); }

TEST_P(PoolGuarantee, TerminateAfterDeathHoldingQueueLock) {
  mp::Value<int> fired(0);
  mp::Pool pool(mp::PoolOptions{.processes = 2, .context = ctx()}, die_in_result_put, fired);
  // Results of 1 MiB soon make a worker switch rings inside put(): it dies holding the lock.
  bool lost = false;
  for (int i = 0; i < 40 && !lost; ++i) {
    try {
      pool.apply_async(big_result, 1 << 20).get(kTimeout);
    } catch (const mp::WorkerLostError&) {
      lost = true;
    }
  }
  EXPECT_TRUE(lost);
  EXPECT_EQ(pool.apply_async(sqr, 3).get(kTimeout), 9);  // the lock was taken over
  const auto t0 = std::chrono::steady_clock::now();
  pool.terminate();
  pool.join();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 10s);
}

// A large result (more than half the result queue's ring: it travels out of band, as its own
// shared memory) arrives although its worker ended before the pool read it: killed right after
// sending it, or exited (maxtasksperchild). On Windows the memory is handed to the queue's owner
// when it is sent (DESIGN §6, "Handle passing's lifetime"): taken out of the sender instead, it
// would be gone with the worker. The pool's thread is held in a callback meanwhile, so the worker
// surely ends first.
TEST_P(PoolGuarantee, LargeResultOutlivesItsWorker) {
  const int big = 20 << 20;
  for (bool killed : {true, false}) {
    SCOPED_TRACE(killed ? "worker killed after sending" : "worker exited after sending");
    mp::Pool pool(mp::PoolOptions{.processes = 1,
                                  .maxtasksperchild = killed ? std::nullopt : std::optional<int>(2),
                                  .context = ctx()});
    const auto workers = mp::active_children();
    ASSERT_EQ(workers.size(), 1u);
    const int worker = *workers.front().pid();
    std::promise<void> entered, gate;
    std::shared_future<void> open = gate.get_future().share();
    auto held = pool.apply_async(mp::callbacks([&entered, open](const int&) {
                                   entered.set_value();
                                   open.wait_for(kTimeout);
                                 }),
                                 sqr, 2);
    ASSERT_EQ(entered.get_future().wait_for(kTimeout), std::future_status::ready);
    auto large = pool.apply_async(big_result, big);
    std::optional<mp::AsyncResult<int>> fatal;
    if (killed) fatal = pool.apply_async(die_killed, 0);
    const auto deadline = std::chrono::steady_clock::now() + kTimeout;
    while (!mp::platform::process_dead(worker) && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(5ms);
    EXPECT_TRUE(mp::platform::process_dead(worker));
    gate.set_value();
    EXPECT_EQ(held.get(kTimeout), 4);
    const std::string got = large.get(kTimeout);
    EXPECT_EQ(got.size(), static_cast<std::size_t>(big));
    EXPECT_EQ(got.find_first_not_of('x'), std::string::npos);
    if (fatal) {
      EXPECT_THROW(fatal->get(kTimeout), mp::WorkerLostError);
    }
    EXPECT_EQ(pool.apply(sqr, 5), 25);  // replaced
  }
}

// 7. Workers die with their owner, also when it is SIGKILLed or interrupted (Ctrl-C).
int slow_pid(double seconds) {
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  return mp::platform::current_pid();
}
void pool_owner(mp::Queue<int> pids, std::string method) {
  {
    // Its engine thread is kept and makes the next pool's workers (lib/pool_engine.cpp
    // EngineThreads): they too must die with this process.
    mp::Pool first(mp::get_context(method), 1);
    first.close();
    first.join();
  }
  mp::Pool pool(mp::get_context(method), 2);
  for (int pid : pool.map(slow_pid, std::vector<double>{0.2, 0.2}, 1)) pids.put(pid);
  pids.put(0);
  std::this_thread::sleep_for(60s);
}

// Killed: Process::kill() (SIGKILL; on Windows TerminateProcess, and the workers end with the
// kill-on-close job object). Interrupted: SIGINT, POSIX only (Ctrl-C on Windows is a console
// event for a whole process group, not a signal one process sends another).
TEST_P(PoolGuarantee, WorkersDieWithOwner) {
  std::vector<int> interrupts{0};  // 0: Process::kill()
#ifndef _WIN32
  interrupts.push_back(SIGINT);
#endif
  for (int sig : interrupts) {
    mp::Queue<int> pids;
    mp::Process owner(ctx(), pool_owner, pids, GetParam());
    owner.start();
    std::vector<int> workers;
    for (int pid = pids.get(true, kTimeout); pid != 0; pid = pids.get(true, kTimeout))
      workers.push_back(pid);
    ASSERT_FALSE(workers.empty());
#ifndef _WIN32
    if (sig != 0) ::kill(*owner.pid(), sig);
#endif
    if (sig == 0) owner.kill();
    mp_test::join_or_fail(owner);
    EXPECT_EQ(owner.exitcode(), sig == 0 ? mp_test::kKilledExitCode : -sig);
    const auto deadline = std::chrono::steady_clock::now() + kTimeout;
    for (int w : workers) {
      while (!mp::platform::process_dead(w) && std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(5ms);
      EXPECT_TRUE(mp::platform::process_dead(w))
          << "worker " << w << " outlived its pool's process";
    }
  }
}

// Forked workers end with the engine's thread (the OS's parent-death signal), not with the
// thread that made the pool: a pool made in a thread that has ended works on, and its workers
// (and their replacements) still die with their owner (WorkersDieWithOwner).
TEST_P(PoolGuarantee, PoolOutlivesTheThreadThatMadeIt) {
  std::optional<mp::Pool> pool;
  std::set<int> workers;
  std::thread([&] {
    pool.emplace(ctx(), 2);
    for (const mp::Process& p : mp::active_children()) workers.insert(*p.pid());
  }).join();
  ASSERT_EQ(workers.size(), 2u);
  // The same workers run the tasks: none was killed when the thread ended.
  for (int pid : pool->map(slow_pid, std::vector<double>{0.05, 0.05, 0.05, 0.05}, 1))
    EXPECT_EQ(workers.count(pid), 1u) << "task ran in " << pid << ", not in an original worker";
  EXPECT_EQ(pool->map(sqr, std::vector<int>{1, 2, 3}), (std::vector<int>{1, 4, 9}));
  pool->close();
  pool->join();
}

// A pool's engine thread, kept once the pool has ended, may serve the next pool: a callback run
// there may still join the ended pool (it is no longer that pool's own thread).
TEST_P(PoolGuarantee, EndedPoolJoinsFromTheNextPoolsCallback) {
  mp::Pool first(ctx(), 1);
  first.close();
  first.join();
  mp::Pool second(ctx(), 1);
  std::atomic<int> joined{0};  // 1: returned, 2: threw
  auto r = second.apply_async(mp::callbacks([&](const int&) {
                                try {
                                  first.join();
                                  joined = 1;
                                } catch (...) {
                                  joined = 2;
                                }
                              }),
                              sqr, 3);
  // No get() until the callback has run: a waiting caller would run it itself.
  const auto deadline = std::chrono::steady_clock::now() + kTimeout;
  while (joined.load() == 0 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(1ms);
  EXPECT_EQ(joined.load(), 1);
  EXPECT_EQ(r.get(kTimeout), 9);
}

// 8. Per-task time limit: the task fails with TimeoutError, its worker is replaced.
TEST_P(PoolGuarantee, TaskTimeout) {
  mp::Pool pool(mp::PoolOptions{.processes = 2, .context = ctx(), .task_timeout = 300ms});
  auto slow = pool.apply_async(sqr_slow, 3, 30.0);
  auto fast = pool.apply_async(sqr_slow, 4, 0.01);
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_THROW(slow.get(kTimeout), mp::TimeoutError);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 10s);
  EXPECT_EQ(fast.get(kTimeout), 16);
  EXPECT_EQ(pool.apply(sqr, 5), 25);
}

// 9. chunksize left out adapts: tiny tasks are batched, long ones are not.
TEST_P(PoolGuarantee, AdaptiveChunksize) {
  mp::Pool pool(ctx(), 2);
  std::vector<long long> in(100'000);
  std::iota(in.begin(), in.end(), 0);
  const auto before = pool.chunks_sent();
  const auto out = pool.map(ident, in);
  ASSERT_EQ(out.size(), in.size());
  EXPECT_EQ(out[300], 300);
  EXPECT_LT(pool.chunks_sent() - before, 500u);  // far fewer chunks than items
  const auto before_long = pool.chunks_sent();
  pool.starmap(sqr_slow, std::vector<std::tuple<int, double>>(24, {2, 0.01}));
  EXPECT_EQ(pool.chunks_sent() - before_long, 24u);  // a task of 10 ms is not batched
}

// Threads that used the library end cleanly: its per-thread objects (the buffers of Queue.put,
// Connection.send and the pool's result reading, a pool task's captured handles, Windows' event
// for overlapped I/O) were thread_locals with destructors, which mingw-w64 destroys after freeing
// their storage: on Windows a thread that had used them corrupted the heap when it ended
// (FuturesTest.SharedObjectsAsArguments crashed 16 runs in 20 under Wine).
TEST_P(PoolGuarantee, ThreadsThatUsedTheLibraryEndCleanly) {
  mp::Pool pool(ctx(), 2);
  mp::Value<int> v(11);
  mp::Queue<std::string> q;
  auto pipe = mp::Pipe();
  mp::Connection& a = pipe.first;
  mp::Connection& b = pipe.second;
  for (int round = 0; round < 8; ++round) {
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t)
      threads.emplace_back([&, t] {
        EXPECT_EQ(pool.apply(read_value, v), 11);
        q.put(std::string(100, static_cast<char>('a' + t)));
        auto r = pool.apply_async(sqr, t);
        EXPECT_TRUE(r.wait(kTimeout));
      });
    for (auto& th : threads) th.join();
    std::thread([&] { a.send(std::string(1000, 'z')); }).join();
    ASSERT_TRUE(b.poll(kTimeout));
    EXPECT_EQ(b.recv<std::string>(), std::string(1000, 'z'));
    for (int t = 0; t < 4; ++t) EXPECT_EQ(q.get(true, kTimeout).size(), 100u);
#ifdef _WIN32
    HANDLE heaps[64];
    const DWORD n = ::GetProcessHeaps(64, heaps);
    for (DWORD i = 0; i < n && i < 64; ++i)
      ASSERT_TRUE(::HeapValidate(heaps[i], 0, nullptr)) << "heap " << i << " corrupted";
#endif
  }
}

MP_INSTANTIATE_START_METHODS(PoolGuarantee);

// ThreadPool: the same API over threads, any callable.
TEST(ThreadPool, Api) {
  int base = 10;
  mp::ThreadPool pool(3);
  EXPECT_EQ(pool.apply([&](int x) { return x + base; }, 5), 15);
  std::vector<int> in{1, 2, 3};
  EXPECT_EQ(pool.map([&](int x) { return x * base; }, in), (std::vector<int>{10, 20, 30}));
  std::multiset<int> got;
  for (int x : pool.imap_unordered([](int x) { return -x; }, mp_test::Counting<int>(0, 100)))
    got.insert(x);
  EXPECT_EQ(got.size(), 100u);
  EXPECT_THROW(pool.apply(raise_invalid, 1), std::invalid_argument);
  auto r = pool.apply_async(
      mp::callbacks([](const int&) { throw std::runtime_error("callback fails"); }), sqr, 2);
  EXPECT_EQ(r.get(kTimeout), 4);
  EXPECT_EQ(pool.apply(sqr, 3), 9);
  pool.close();
  pool.join();
}

// A timeout too long for the clock (hours::max()) waits as long as needed; it used to overflow
// into a deadline in the past and time out at once. The gate opens after a delay only so that
// the waits really block; the outcome does not depend on it.
TEST(ThreadPool, HugeTimeoutsWaitInsteadOfTimingOutAtOnce) {
  mp::ThreadPool pool(1);
  std::promise<void> go;
  std::shared_future<void> gate = go.get_future().share();
  auto r = pool.apply_async([gate] {
    gate.wait();
    return 7;
  });
  auto it = pool.imap(
      [gate](int x) {
        gate.wait();
        return x;
      },
      std::vector<int>{1});
  std::jthread opener([&] {
    std::this_thread::sleep_for(50ms);
    go.set_value();
  });
  EXPECT_EQ(r.get(std::chrono::hours::max()), 7);
  EXPECT_TRUE(r.wait(std::chrono::hours::max()));
  EXPECT_EQ(it.next(std::chrono::hours::max()), 1);
  opener.join();
  pool.close();
  pool.join();
}

}  // namespace
