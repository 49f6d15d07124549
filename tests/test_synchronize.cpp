// mp/synchronize.hpp under every start method (CPython: _TestLock, _TestSemaphore, _TestCondition,
// _TestEvent, _TestBarrier), plus crash tests: a holder, a waiter or a barrier party is SIGKILLed
// and the others go on within the bound.
#ifdef _WIN32
#  include <pthread.h>
#else
#  include <pthread.h>
#  include <sys/syscall.h>
#endif

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <set>
#include <thread>

#include "mp_test.hpp"

using namespace mp_test;
using Clock = std::chrono::steady_clock;

namespace {

// Bound for "the others proceed": 50 ms by design, plus generous noise for a loaded machine.
constexpr auto kCrashBound = 50ms + 950ms;

std::chrono::milliseconds since(Clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t);
}

// ---- child targets (plain functions: they run under spawn too)

void increment_under_lock(mp::Lock lock, mp::RawValue<long> counter, int n) {
  for (int i = 0; i < n; ++i) {
    std::lock_guard guard(lock);
    counter.get_obj() = counter.get_obj() + 1;
  }
}

void increment_under_rlock(mp::RLock lock, mp::RawValue<long> counter, int n) {
  for (int i = 0; i < n; ++i) {
    std::lock_guard outer(lock);
    std::lock_guard inner(lock);
    counter.get_obj() = counter.get_obj() + 1;
  }
}

void release_lock(mp::Lock lock) {
  lock.release();
  std::exit(lock.locked() ? 2 : 0);
}

void release_foreign_rlock(mp::RLock lock) {
  try {
    lock.release();
  } catch (const std::logic_error&) {
    std::exit(0);
  }
  std::exit(3);
}

// Holds both locks in a second thread after the main thread has ended by a raw thread exit: the
// process lives on (its /proc entry shows the thread-group leader as a zombie) until `release`.
void hold_locks_after_main_thread_exits(mp::Lock lock, mp::RLock rlock, mp::Event held,
                                        mp::Event release) {
  std::thread([=]() mutable {
    if (!lock.acquire(true, kTimeout) || !rlock.acquire(true, kTimeout)) std::_Exit(2);
    held.set();
    const bool released = release.wait(kTimeout);
    rlock.release();
    lock.release();
    if (!released) std::_Exit(3);
  }).detach();
#ifdef _WIN32
  ::ExitThread(0);  // ends this thread only; the process ends with the other one
#else
  ::syscall(SYS_exit, 0);  // ends this thread only; the process ends with the other one
#endif
}

void hold_lock_forever(mp::Lock lock, mp::Event ready) {
  if (!lock.acquire(true, kTimeout)) std::exit(2);
  ready.set();
  for (;;) std::this_thread::sleep_for(std::chrono::hours(1));
}

void hold_rlock_forever(mp::RLock lock, mp::Event ready) {
  lock.acquire();
  lock.acquire();
  ready.set();
  for (;;) std::this_thread::sleep_for(std::chrono::hours(1));
}

void release_semaphore(mp::Semaphore s) { s.release(); }

void wait_event(mp::Event e, mp::Semaphore done) {
  if (!e.wait(kTimeout)) std::exit(2);
  done.release();
}

void condition_waiter(mp::Condition c, mp::Semaphore sleeping, mp::Semaphore woken) {
  std::unique_lock guard(c);
  sleeping.release();
  if (!c.wait(kTimeout)) std::exit(2);
  woken.release();
}

void condition_waiter_forever(mp::Condition c, mp::Semaphore sleeping) {
  std::unique_lock guard(c);
  sleeping.release();
  c.wait();
  for (;;) std::this_thread::sleep_for(std::chrono::hours(1));
}

void set_value_and_notify(mp::Condition c, mp::RawValue<int> state, int value) {
  std::lock_guard guard(c);
  state.set_value(value);
  c.notify_all();
}

// Condition ping-pong: waits for turn == 1, sets it to 0, notifies; `rounds` times.
void condition_pong(mp::Condition c, mp::RawValue<int> turn, int rounds) {
  for (int i = 0; i < rounds; ++i) {
    std::unique_lock guard(c);
    if (!c.wait_for([&] { return turn.value() == 1; }, kTimeout)) std::exit(2);
    turn.set_value(0);
    c.notify();
  }
}

void barrier_indices(mp::Barrier b, mp::RawArray<int> seen, int party, int rounds) {
  for (int r = 0; r < rounds; ++r) {
    const int index = b.wait(kTimeout);
    seen[r * b.parties() + party] = index;
  }
}

void barrier_expect_broken(mp::Barrier b, mp::Event ready) {
  ready.set();
  try {
    b.wait(kTimeout);
  } catch (const mp::BrokenBarrierError&) {
    std::exit(0);
  }
  std::exit(3);
}

void barrier_wait_forever(mp::Barrier b) {
  b.wait();
  for (;;) std::this_thread::sleep_for(std::chrono::hours(1));
}

// The Barrier action: appends one byte to the file named by MP_TEST_BARRIER_FILE (the environment
// reaches fork and spawn children alike).
void barrier_action() {
  const char* path = std::getenv("MP_TEST_BARRIER_FILE");
  if (!path) std::exit(9);
  std::ofstream f(path, std::ios::app | std::ios::binary);
  if (!(f << 'x') || !f.flush()) std::exit(10);
}

void barrier_rounds(mp::Barrier b, int rounds) {
  for (int r = 0; r < rounds; ++r) b.wait(kTimeout);
}

bool wait_until(const std::function<bool()>& ready) {
  const auto deadline = Clock::now() + kTimeout;
  while (!ready()) {
    if (Clock::now() > deadline) return false;
    std::this_thread::yield();
  }
  return true;
}

}  // namespace

// ================================================================ single-process behaviour

// Python's acquire(timeout=1), e.wait(0.5), p.join(1.5): a duration alone for acquire (a number
// would be Python's `block`), seconds as a number where Python's first argument is the timeout.
TEST(Synchronize, PorterTimeoutForms) {
  mp::Lock lock;
  EXPECT_TRUE(lock.acquire(1s));
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_FALSE(lock.acquire(30ms));
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 25ms);
  lock.release();
  mp::RLock rlock;
  EXPECT_TRUE(rlock.acquire(1s));
  rlock.release();
  mp::Semaphore sem(0);
  EXPECT_FALSE(sem.acquire(10ms));
  mp::Event e;
  t0 = std::chrono::steady_clock::now();
  EXPECT_FALSE(e.wait(0.03));
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 25ms);
  e.set();
  EXPECT_TRUE(e.wait(1));
  EXPECT_TRUE(e.wait(1e300));  // huge: no overflow
  mp::Condition c;
  ASSERT_TRUE(c.acquire(1s));
  EXPECT_FALSE(c.wait(0.01));
  EXPECT_FALSE(c.wait_for([] { return false; }, 0.01));
  c.release();
  mp::Barrier b(1);
  EXPECT_EQ(b.wait(0.5), 0);
}

TEST(Lock, AcquireRelease) {
  mp::Lock lock;
  EXPECT_TRUE(lock.acquire());
  EXPECT_FALSE(lock.acquire(false));
  EXPECT_FALSE(lock.acquire(true, 0ms));
  EXPECT_FALSE(lock.acquire(true, -5s));  // negative: a poll
  const auto start = Clock::now();
  EXPECT_FALSE(lock.acquire(true, 50ms));
  EXPECT_GE(since(start), 50ms);
  lock.release();
  try {
    lock.release();
    ADD_FAILURE() << "release of an unlocked Lock did not throw";
  } catch (const std::invalid_argument& e) {
    EXPECT_STREQ(e.what(), "semaphore or lock released too many times");
  }
  EXPECT_TRUE(lock.acquire(false));
  EXPECT_FALSE(lock.previous_owner_died());
  lock.release();
  // A huge timeout saturates (no overflow): the waiter blocks until the release.
  EXPECT_TRUE(lock.acquire());
  std::thread waiter([&] {
    EXPECT_TRUE(lock.acquire(true, std::chrono::hours::max()));
    lock.release();
  });
  std::this_thread::sleep_for(20ms);  // lets the waiter block (the test is valid either way)
  lock.release();
  waiter.join();
}

TEST(Lock, StdLockable) {
  mp::Lock a;
  mp::RLock b;
  {
    std::scoped_lock both(a, b);
    EXPECT_TRUE(a.locked());
    EXPECT_TRUE(b.is_mine());
  }
  EXPECT_FALSE(a.locked());
  std::unique_lock ul(a, std::defer_lock);
  EXPECT_TRUE(ul.try_lock_for(10ms));
  ul.unlock();
  EXPECT_TRUE(a.try_lock_until(Clock::now() + 10ms));
  EXPECT_FALSE(a.try_lock());
  a.unlock();
}

TEST(Lock, AnotherThreadMayRelease) {
  mp::Lock lock;
  lock.acquire();
  std::thread([&] { lock.release(); }).join();
  EXPECT_FALSE(lock.locked());
}

TEST(RLock, RecursionAndOwnership) {
  mp::RLock lock;
  EXPECT_TRUE(lock.acquire());
  EXPECT_TRUE(lock.acquire());
  EXPECT_TRUE(lock.acquire(false));
  EXPECT_EQ(lock.count(), 3u);
  std::thread([&] {
    EXPECT_FALSE(lock.acquire(false));
    EXPECT_FALSE(lock.acquire(true, 20ms));
    EXPECT_THROW(lock.release(), std::logic_error);
  }).join();
  lock.release();
  lock.release();
  lock.release();
  EXPECT_EQ(lock.count(), 0u);
  EXPECT_THROW(lock.release(), std::logic_error);
  std::thread([&] {
    EXPECT_TRUE(lock.acquire(false));
    lock.release();
  }).join();
}

TEST(Semaphore, Counting) {
  mp::Semaphore s(2);
  EXPECT_EQ(s.get_value(), 2);
  EXPECT_TRUE(s.acquire());
  EXPECT_EQ(s.get_value(), 1);
  EXPECT_TRUE(s.acquire(false));
  EXPECT_FALSE(s.acquire(false));
  const auto start = Clock::now();
  EXPECT_FALSE(s.acquire(true, 50ms));
  EXPECT_GE(since(start), 50ms);
  EXPECT_FALSE(s.acquire(true, -1s));
  s.release();
  s.release();
  s.release();  // an unbounded Semaphore may go above its initial value
  EXPECT_EQ(s.get_value(), 3);
  EXPECT_THROW(mp::Semaphore(-1), std::invalid_argument);
}

TEST(Semaphore, Bounded) {
  mp::BoundedSemaphore s(2);
  EXPECT_THROW(s.release(), std::invalid_argument);
  s.acquire();
  s.release();
  EXPECT_THROW(s.release(), std::invalid_argument);
  EXPECT_EQ(s.get_value(), 2);
  std::lock_guard guard(s);
  EXPECT_EQ(s.get_value(), 1);
}

TEST(Semaphore, WakesThreadWaiter) {
  mp::Semaphore s(0);
  std::thread t([&] { EXPECT_TRUE(s.acquire(true, kTimeout)); });
  s.release();
  t.join();
  EXPECT_EQ(s.get_value(), 0);
}

TEST(Event, SetClearWait) {
  mp::Event e;
  EXPECT_FALSE(e.is_set());
  EXPECT_FALSE(e.wait(0ms));
  const auto start = Clock::now();
  EXPECT_FALSE(e.wait(50ms));
  EXPECT_GE(since(start), 50ms);
  e.set();
  EXPECT_TRUE(e.is_set());
  EXPECT_TRUE(e.wait());
  EXPECT_TRUE(e.wait(0ms));
  e.clear();
  EXPECT_FALSE(e.is_set());
  EXPECT_FALSE(e.wait(-1s));
}

TEST(Condition, MisuseThrows) {
  mp::Condition c;
  EXPECT_THROW(c.wait(10ms), std::logic_error);
  EXPECT_THROW(c.notify(), std::logic_error);
  EXPECT_THROW(c.notify_all(), std::logic_error);
  mp::Condition with_lock{mp::Lock()};
  EXPECT_THROW(with_lock.wait(10ms), std::logic_error);
}

TEST(Condition, WaitTimeoutRestoresRecursiveLock) {
  mp::RLock lock;
  mp::Condition c(lock);
  c.acquire();
  c.acquire();
  const auto start = Clock::now();
  EXPECT_FALSE(c.wait(50ms));
  EXPECT_GE(since(start), 50ms);
  EXPECT_TRUE(lock.is_mine());
  EXPECT_EQ(lock.count(), 2u);
  EXPECT_FALSE(c.wait_for([] { return false; }, 20ms));
  EXPECT_TRUE(c.wait_for([] { return true; }, 0ms));
  c.release();
  c.release();
  EXPECT_FALSE(lock.is_mine());
}

TEST(Barrier, ThreadsAndState) {
  mp::Barrier b(3);
  EXPECT_EQ(b.parties(), 3);
  EXPECT_EQ(b.n_waiting(), 0);
  EXPECT_FALSE(b.broken());
  std::vector<int> idx(3, -1);
  std::vector<std::thread> ts;
  for (int i = 0; i < 3; ++i) ts.emplace_back([&, i] { idx[i] = b.wait(kTimeout); });
  for (auto& t : ts) t.join();
  EXPECT_EQ(std::set<int>(idx.begin(), idx.end()), (std::set<int>{0, 1, 2}));
  // Many quick rounds: the indices of each round are a permutation of 0..parties-1.
  constexpr int kRounds = 3000;
  std::vector<int> seen(3 * kRounds, -1);
  ts.clear();
  for (int i = 0; i < 3; ++i)
    ts.emplace_back([&, i] {
      for (int r = 0; r < kRounds; ++r) seen[r * 3 + i] = b.wait(kTimeout);
    });
  for (auto& t : ts) t.join();
  for (int r = 0; r < kRounds; ++r)
    ASSERT_EQ(std::set<int>(seen.begin() + r * 3, seen.begin() + r * 3 + 3),
              (std::set<int>{0, 1, 2}))
        << r;
  EXPECT_THROW(mp::Barrier(0), std::invalid_argument);
  mp::Barrier one(1);
  EXPECT_EQ(one.wait(), 0);
}

#ifndef _WIN32
// Issue 13, bug 9: an action that ends its thread (pthread_exit) is not swallowed by the barrier's
// catch-all (glibc would abort: "FATAL: exception not rethrown"); the thread ends and the process
// goes on.
void exit_this_thread() { ::pthread_exit(nullptr); }

TEST(Barrier, ActionCallingPthreadExitEndsOnlyItsThread) {
  mp::Barrier b(1, &exit_this_thread);
  pthread_t t;
  ASSERT_EQ(::pthread_create(
                &t, nullptr,
                [](void* arg) -> void* {
                  static_cast<mp::Barrier*>(arg)->wait();
                  return arg;  // not reached: the action ends the thread
                },
                &b),
            0);
  void* result = &b;
  ASSERT_EQ(::pthread_join(t, &result), 0);
  EXPECT_EQ(result, nullptr);  // pthread_exit's value
}
#endif

TEST(Barrier, DefaultTimeoutBreaks) {
  mp::Barrier b(2, nullptr, 30ms);
  const auto start = Clock::now();
  EXPECT_THROW(b.wait(), mp::BrokenBarrierError);
  EXPECT_GE(since(start), 30ms);
  EXPECT_TRUE(b.broken());
  EXPECT_THROW(b.wait(), mp::BrokenBarrierError);
  b.reset();
  EXPECT_FALSE(b.broken());
}

// ================================================================ between processes

class SynchronizeTest : public StartMethodTest {};

TEST_P(SynchronizeTest, LockMutualExclusion) {
  mp::Lock lock;
  mp::RawValue<long> counter(0);
  std::vector<mp::Process> ps;
  for (int i = 0; i < 3; ++i) ps.emplace_back(ctx(), increment_under_lock, lock, counter, 20000);
  for (auto& p : ps) p.start();
  increment_under_lock(lock, counter, 20000);
  for (auto& p : ps) join_or_fail(p);
  for (auto& p : ps) EXPECT_EQ(p.exitcode(), 0);
  EXPECT_EQ(counter.value(), 80000);
}

TEST_P(SynchronizeTest, RLockMutualExclusion) {
  mp::RLock lock;
  mp::RawValue<long> counter(0);
  mp::Process a(ctx(), increment_under_rlock, lock, counter, 20000);
  mp::Process b(ctx(), increment_under_rlock, lock, counter, 20000);
  a.start();
  b.start();
  increment_under_rlock(lock, counter, 20000);
  join_or_fail(a);
  join_or_fail(b);
  EXPECT_EQ(counter.value(), 60000);
}

TEST_P(SynchronizeTest, LockReleasedByAnotherProcess) {
  mp::Lock lock;
  lock.acquire();
  mp::Process p(ctx(), release_lock, lock);
  p.start();
  join_or_fail(p);
  EXPECT_EQ(p.exitcode(), 0);
  EXPECT_TRUE(lock.acquire(false));
  lock.release();
}

TEST_P(SynchronizeTest, RLockReleaseByOtherProcessThrows) {
  mp::RLock lock;
  lock.acquire();
  mp::Process p(ctx(), release_foreign_rlock, lock);
  p.start();
  join_or_fail(p);
  EXPECT_EQ(p.exitcode(), 0);
  EXPECT_TRUE(lock.is_mine());
  lock.release();
}

TEST_P(SynchronizeTest, KilledLockHolderIsTakenOver) {
  mp::Lock lock;
  mp::Event ready;
  mp::Process p(ctx(), hold_lock_forever, lock, ready);
  p.start();
  ASSERT_TRUE(ready.wait(kTimeout));
  EXPECT_FALSE(lock.acquire(false));
  const auto killed = Clock::now();
  p.kill();
  ASSERT_TRUE(lock.acquire(true, kTimeout));
  const auto took = since(killed);
  EXPECT_LT(took, kCrashBound) << took.count() << " ms";
  EXPECT_TRUE(lock.previous_owner_died());
  join_or_fail(p);
  lock.release();
  EXPECT_TRUE(lock.acquire(false));
  EXPECT_FALSE(lock.previous_owner_died());
  lock.release();
}

// Issue 13 bug 6: a holder whose main thread has exited is alive; no one may take its locks.
TEST_P(SynchronizeTest, HolderWhoseMainThreadExitedKeepsItsLocks) {
  mp::Lock lock;
  mp::RLock rlock;
  mp::Event held;
  mp::Event release;
  mp::Process p(ctx(), hold_locks_after_main_thread_exits, lock, rlock, held, release);
  p.start();
  ASSERT_TRUE(held.wait(kTimeout));
  // Many times the 10 ms take-over check period.
  const bool took_lock = lock.acquire(true, 300ms);
  EXPECT_FALSE(took_lock) << "took the Lock from a live holder";
  if (took_lock) lock.release();
  const bool took_rlock = rlock.acquire(true, 300ms);
  EXPECT_FALSE(took_rlock) << "took the RLock from a live holder";
  if (took_rlock) rlock.release();
  release.set();
  ASSERT_TRUE(lock.acquire(true, kTimeout));
  EXPECT_FALSE(lock.previous_owner_died());
  ASSERT_TRUE(rlock.acquire(true, kTimeout));
  EXPECT_FALSE(rlock.previous_owner_died());
  rlock.release();
  lock.release();
  join_or_fail(p);
  EXPECT_EQ(p.exitcode(), 0);
}

TEST_P(SynchronizeTest, KilledRLockHolderIsTakenOver) {
  mp::RLock lock;
  mp::Event ready;
  mp::Process p(ctx(), hold_rlock_forever, lock, ready);
  p.start();
  ASSERT_TRUE(ready.wait(kTimeout));
  EXPECT_FALSE(lock.acquire(false));
  const auto killed = Clock::now();
  p.kill();
  ASSERT_TRUE(lock.acquire(true, kTimeout));
  EXPECT_LT(since(killed), kCrashBound);
  EXPECT_TRUE(lock.previous_owner_died());
  EXPECT_EQ(lock.count(), 1u);
  join_or_fail(p);
  lock.release();
  EXPECT_EQ(lock.count(), 0u);
  EXPECT_FALSE(lock.is_mine());
}

TEST_P(SynchronizeTest, SemaphoreReleasedByChild) {
  mp::Semaphore s(0);
  mp::Process p(ctx(), release_semaphore, s);
  p.start();
  EXPECT_TRUE(s.acquire(true, kTimeout));
  join_or_fail(p);
  EXPECT_EQ(s.get_value(), 0);
}

TEST_P(SynchronizeTest, EventWakesSeveralProcesses) {
  mp::Event e;
  mp::Semaphore done(0);
  std::vector<mp::Process> ps;
  for (int i = 0; i < 3; ++i) ps.emplace_back(ctx(), wait_event, e, done);
  for (auto& p : ps) p.start();
  EXPECT_FALSE(done.acquire(true, 20ms));  // nobody passes before set()
  e.set();
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(done.acquire(true, kTimeout));
  for (auto& p : ps) join_or_fail(p);
  for (auto& p : ps) EXPECT_EQ(p.exitcode(), 0);
}

TEST_P(SynchronizeTest, ConditionNotifyAndNotifyAll) {
  mp::Condition c;
  mp::Semaphore sleeping(0), woken(0);
  std::vector<mp::Process> ps;
  for (int i = 0; i < 4; ++i) ps.emplace_back(ctx(), condition_waiter, c, sleeping, woken);
  for (auto& p : ps) p.start();
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(sleeping.acquire(true, kTimeout));
  // Each waiter released `sleeping` while holding the lock; once we hold it, all of them wait.
  {
    std::lock_guard guard(c);
    c.notify();
  }
  EXPECT_TRUE(woken.acquire(true, kTimeout));
  EXPECT_FALSE(woken.acquire(true, 100ms));  // exactly one woke
  {
    std::lock_guard guard(c);
    c.notify(2);
  }
  EXPECT_TRUE(woken.acquire(true, kTimeout));
  EXPECT_TRUE(woken.acquire(true, kTimeout));
  EXPECT_FALSE(woken.acquire(true, 100ms));
  {
    std::lock_guard guard(c);
    c.notify_all();
  }
  EXPECT_TRUE(woken.acquire(true, kTimeout));
  for (auto& p : ps) join_or_fail(p);
  for (auto& p : ps) EXPECT_EQ(p.exitcode(), 0);
}

TEST_P(SynchronizeTest, ConditionWaitForWithTimeout) {
  mp::Condition c{mp::Lock()};
  mp::RawValue<int> state(0);
  {
    std::unique_lock guard(c);
    const auto start = Clock::now();
    EXPECT_FALSE(c.wait_for([&] { return state.value() == 4; }, 50ms));
    EXPECT_GE(since(start), 50ms);
  }
  mp::Process p(ctx(), set_value_and_notify, c, state, 4);
  p.start();
  {
    std::unique_lock guard(c);
    EXPECT_TRUE(c.wait_for([&] { return state.value() == 4; }, kTimeout));
  }
  join_or_fail(p);
}

TEST_P(SynchronizeTest, ConditionPingPong) {
  // A waiter that starts waiting right after a notify must not take that notification from the
  // waiter it was meant for (that loses the wake-up and both sides wait forever).
  constexpr int kRounds = 3000;
  mp::Condition c;
  mp::RawValue<int> turn(0);
  mp::Process p(ctx(), condition_pong, c, turn, kRounds);
  p.start();
  for (int i = 0; i < kRounds; ++i) {
    std::unique_lock guard(c);
    turn.set_value(1);
    c.notify();
    ASSERT_TRUE(c.wait_for([&] { return turn.value() == 0; }, kTimeout)) << "round " << i;
  }
  join_or_fail(p);
  EXPECT_EQ(p.exitcode(), 0);
}

TEST_P(SynchronizeTest, ConditionNotifyWithKilledWaiter) {
  mp::Condition c;
  mp::Semaphore sleeping(0), woken(0);
  mp::Process dead(ctx(), condition_waiter_forever, c, sleeping);
  dead.start();
  ASSERT_TRUE(sleeping.acquire(true, kTimeout));
  {
    std::lock_guard guard(c);  // the waiter is inside wait()
  }
  dead.kill();
  join_or_fail(dead);
  mp::Process live(ctx(), condition_waiter, c, sleeping, woken);
  live.start();
  ASSERT_TRUE(sleeping.acquire(true, kTimeout));
  const auto start = Clock::now();
  {
    std::lock_guard guard(c);
    c.notify_all();  // never waits for the dead waiter
  }
  EXPECT_LT(since(start), kCrashBound);
  EXPECT_TRUE(woken.acquire(true, kTimeout));
  join_or_fail(live);
  EXPECT_EQ(live.exitcode(), 0);
}

TEST_P(SynchronizeTest, BarrierIndicesAreDistinct) {
  constexpr int kParties = 3, kRounds = 300;
  mp::Barrier b(kParties);
  mp::RawArray<int> seen(kParties * kRounds);
  mp::Process p1(ctx(), barrier_indices, b, seen, 1, kRounds);
  mp::Process p2(ctx(), barrier_indices, b, seen, 2, kRounds);
  p1.start();
  p2.start();
  barrier_indices(b, seen, 0, kRounds);
  join_or_fail(p1);
  join_or_fail(p2);
  for (int r = 0; r < kRounds; ++r) {
    std::set<int> round;
    for (int i = 0; i < kParties; ++i) round.insert(seen[r * kParties + i]);
    EXPECT_EQ(round, (std::set<int>{0, 1, 2})) << "round " << r;
  }
}

TEST_P(SynchronizeTest, BarrierActionRunsOncePerRound) {
  const auto path =
      std::filesystem::temp_directory_path() /
      ("mp_barrier_" + std::to_string(*mp::current_process().pid()) + "_" + GetParam());
  std::filesystem::remove(path);
  set_env("MP_TEST_BARRIER_FILE", path.string());
  constexpr int kRounds = 4;
  mp::Barrier b(3, barrier_action);
  mp::Process p1(ctx(), barrier_rounds, b, kRounds), p2(ctx(), barrier_rounds, b, kRounds);
  p1.start();
  p2.start();
  barrier_rounds(b, kRounds);
  join_or_fail(p1);
  join_or_fail(p2);
  EXPECT_EQ(p1.exitcode(), 0);
  EXPECT_EQ(p2.exitcode(), 0);
  EXPECT_EQ(std::filesystem::file_size(path), static_cast<std::uintmax_t>(kRounds));
  std::filesystem::remove(path);
  unset_env("MP_TEST_BARRIER_FILE");
}

TEST_P(SynchronizeTest, BarrierAbortBreaksWaiters) {
  mp::Barrier b(3);
  mp::Event ready;
  mp::Process p(ctx(), barrier_expect_broken, b, ready);
  p.start();
  ASSERT_TRUE(ready.wait(kTimeout));
  ASSERT_TRUE(wait_until([&] { return b.n_waiting() == 1; }));
  b.abort();
  join_or_fail(p);
  EXPECT_EQ(p.exitcode(), 0);
  EXPECT_TRUE(b.broken());
  EXPECT_THROW(b.wait(kTimeout), mp::BrokenBarrierError);
  b.reset();
  EXPECT_FALSE(b.broken());
}

TEST_P(SynchronizeTest, BarrierResetBreaksWaitersThenWorks) {
  mp::Barrier b(2);
  mp::Event ready;
  mp::Process p(ctx(), barrier_expect_broken, b, ready);
  p.start();
  ASSERT_TRUE(ready.wait(kTimeout));
  ASSERT_TRUE(wait_until([&] { return b.n_waiting() == 1; }));
  b.reset();
  join_or_fail(p);
  EXPECT_EQ(p.exitcode(), 0);
  EXPECT_FALSE(b.broken());
  mp::Process q(ctx(), barrier_rounds, b, 1);
  q.start();
  EXPECT_NO_THROW(b.wait(kTimeout));
  join_or_fail(q);
  EXPECT_EQ(q.exitcode(), 0);
}

TEST_P(SynchronizeTest, BarrierTimeoutBreaksAll) {
  mp::Barrier b(3);
  mp::Event ready;
  mp::Process p(ctx(), barrier_expect_broken, b, ready);
  p.start();
  ASSERT_TRUE(ready.wait(kTimeout));
  ASSERT_TRUE(wait_until([&] { return b.n_waiting() == 1; }));
  EXPECT_THROW(b.wait(50ms), mp::BrokenBarrierError);
  join_or_fail(p);
  EXPECT_EQ(p.exitcode(), 0);
  EXPECT_TRUE(b.broken());
}

TEST_P(SynchronizeTest, BarrierBreaksWhenAPartyDies) {
  mp::Barrier b(3);
  mp::Process p(ctx(), barrier_wait_forever, b);
  p.start();
  ASSERT_TRUE(wait_until([&] { return b.n_waiting() == 1; }));
  std::atomic<bool> broke{false};
  std::thread waiter([&] {
    try {
      b.wait(kTimeout);
    } catch (const mp::BrokenBarrierError&) {
      broke = true;
    }
  });
  ASSERT_TRUE(wait_until([&] { return b.n_waiting() == 2; }));
  const auto killed = Clock::now();
  p.kill();
  waiter.join();
  EXPECT_LT(since(killed), kCrashBound);
  EXPECT_TRUE(broke.load());
  join_or_fail(p);
  b.reset();
  EXPECT_FALSE(b.broken());
  EXPECT_EQ(b.n_waiting(), 0);
}

MP_INSTANTIATE_START_METHODS(SynchronizeTest);
