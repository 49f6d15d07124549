// mp/synchronize.hpp — Lock, RLock, Semaphore, BoundedSemaphore, Event, Condition, Barrier
// (CPython: multiprocessing/synchronize.py).
//
// Each class is a copyable handle to an object in the shared heap (mp/heap.hpp: no descriptor of
// its own): copies, and the copies a child gets when the handle is a Process argument (fork, spawn,
// forkserver), all refer to the same lock. Its memory is reused once no process holds it, and
// nothing outlives the program, even after SIGKILL. Serialized, an object is its block(s) as
// heap::SharedBlock::Wire (arena id + offset; Condition: its lock's, then its own; Barrier: then its
// action).
//
// Timeouts are std::chrono durations; zero polls, a negative timeout counts as zero (CPython).
// acquire(timeout) is Python's acquire(timeout=...) (lock.acquire(1s)); where Python's first
// argument is the timeout (Event/Condition/Barrier wait) a number of seconds works too
// (e.wait(0.5)). acquire() takes no number: Python's acquire(1) means block=True.
// Locks and semaphores are also C++ Lockables (lock/unlock/try_lock/try_lock_for/try_lock_until)
// so std::lock_guard, std::unique_lock and std::scoped_lock play the part of Python's `with`.
//
// Crash safety (beyond CPython, which loses a lock for good when its holder dies):
// - Lock/RLock: when the holding process ends without releasing (SIGKILL, crash, exit), the next
//   acquirer gets the lock within ~10 ms and previous_owner_died() tells it so. A process has
//   ended when all its threads have: one whose main thread exited while another thread holds
//   the lock keeps it.
// - Condition, Event and Barrier never wait for an acknowledgement from another process: a dead
//   waiter cannot block notify()/set(); a Barrier party that dies while waiting breaks the barrier
//   (the others get BrokenBarrierError) instead of hanging — within ~10 ms for a few parties and
//   ~50-200 ms for hundreds, whose sleepers look for dead parties less often so that they do not
//   starve the machine.
// - Semaphore has no owner (any process may release it, as in CPython): units taken by a process
//   that dies are not given back.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <variant>

#include "mp/detail/timeout.hpp"
#include "mp/errors.hpp"
#include "mp/export.hpp"
#include "mp/heap.hpp"

namespace mp {

namespace detail {

// Gives lock/unlock/try_lock/try_lock_for/try_lock_until to a class with acquire/release.
template <class Derived>
class Lockable {
 public:
  void lock() { self().acquire(); }
  void unlock() { self().release(); }
  bool try_lock() { return self().acquire(false); }
  template <class Rep, class Period>
  bool try_lock_for(std::chrono::duration<Rep, Period> d) {
    return self().acquire(true, d);
  }
  template <class Clock, class Duration>
  bool try_lock_until(std::chrono::time_point<Clock, Duration> t) {
    return self().acquire(true, t - Clock::now());
  }

 private:
  Derived& self() { return static_cast<Derived&>(*this); }
};

// acquire(block) / acquire(block, timeout) for a class whose acquire_impl(timeout) takes a null
// timeout as "forever" and zero as "poll" (Lock, RLock, Semaphore).
template <class Derived>
class TimedAcquire : public Lockable<Derived> {
 public:
  bool acquire(bool block = true) {
    static constexpr std::chrono::nanoseconds poll{0};
    return static_cast<Derived&>(*this).acquire_impl(block ? nullptr : &poll);
  }
  template <class Rep, class Period>
  bool acquire(bool block, std::chrono::duration<Rep, Period> timeout) {
    const std::chrono::nanoseconds t = block ? to_nanos(timeout) : std::chrono::nanoseconds::zero();
    return static_cast<Derived&>(*this).acquire_impl(&t);
  }
  // acquire(timeout): Python's acquire(timeout=1) (block = true).
  template <class Rep, class Period>
  bool acquire(std::chrono::duration<Rep, Period> timeout) {
    return acquire(true, timeout);
  }
};

// Seconds as a number (Python's wait(0.5)), as a duration.
inline std::chrono::duration<double> seconds(double s) noexcept {
  return std::chrono::duration<double>(s);
}

// threading.Condition.wait_for over anything with wait() and wait(timeout): waits until
// predicate() is true or the timeout (null: none) has passed; returns predicate()'s last value.
template <class Cond, class Predicate>
auto wait_for_predicate(Cond& cond, Predicate& predicate, const std::chrono::nanoseconds* timeout) {
  const auto deadline =
      std::chrono::steady_clock::now() + (timeout ? *timeout : std::chrono::nanoseconds::zero());
  auto result = predicate();
  while (!result) {
    if (!timeout) {
      cond.wait();
    } else {
      const auto left = deadline - std::chrono::steady_clock::now();
      if (left <= std::chrono::nanoseconds::zero()) break;
      cond.wait(left);
    }
    result = predicate();
  }
  return result;
}

// The shared-memory layouts (lib/synchronize.cpp).
struct LockState;
struct RLockState;
struct SemaphoreState;
struct EventState;
struct ConditionState;
struct BarrierState;

}  // namespace detail

// ---------------------------------------------------------------------------------------------
// Lock: a non-recursive lock that any thread of any process may release (multiprocessing.Lock).
class MP_API Lock : public detail::TimedAcquire<Lock> {
 public:
  // A new, unlocked lock in shared memory. Throws OSError if the memory cannot be had.
  Lock();

  // Lock::acquire(): blocks until the lock is had and returns true. acquire(false) polls;
  // acquire(true, timeout) waits at most `timeout` and returns false if it passed.
  using detail::TimedAcquire<Lock>::acquire;
  // Lock::release(). Throws std::invalid_argument "semaphore or lock released too many times" if
  // the lock is not locked.
  void release();

  // Whether the last acquisition took the lock over from a process that ended while holding it
  // (the data it guards may be half-updated). Meaningful while the caller holds the lock; reset by
  // the next acquisition. Python: no equivalent (CPython's lock stays locked forever).
  bool previous_owner_died() const noexcept;
  // Whether the lock is held (by anyone). Python: SemLock._count() != 0.
  bool locked() const noexcept;

  template <class Archive>
  void save(Archive& ar) const {
    ar(block_);
  }
  template <class Archive>
  void load(Archive& ar) {
    ar(block_);
    attach();
  }

 private:
  friend class Condition;
  friend class detail::TimedAcquire<Lock>;
  bool acquire_impl(const std::chrono::nanoseconds* timeout);
  bool is_mine() const noexcept;  // held, acquired by the calling thread
  void attach();
  heap::SharedBlock block_;
  detail::LockState* state_ = nullptr;
};

// ---------------------------------------------------------------------------------------------
// RLock: a recursive lock owned by one thread of one process (multiprocessing.RLock).
class MP_API RLock : public detail::TimedAcquire<RLock> {
 public:
  RLock();

  // As Lock::acquire; the owner may acquire again (each acquire needs a release).
  using detail::TimedAcquire<RLock>::acquire;
  // Throws std::logic_error "cannot release un-acquired lock" unless the caller owns the lock.
  void release();

  // As Lock::previous_owner_died (the recursion count restarts at 1 after a take-over).
  bool previous_owner_died() const noexcept;
  // Whether the calling thread owns the lock. Python: SemLock._is_mine().
  bool is_mine() const noexcept;
  // The recursion depth (0 when free). Python: SemLock._count().
  unsigned count() const noexcept;

  template <class Archive>
  void save(Archive& ar) const {
    ar(block_);
  }
  template <class Archive>
  void load(Archive& ar) {
    ar(block_);
    attach();
  }

 private:
  friend class Condition;
  friend class detail::TimedAcquire<RLock>;
  bool acquire_impl(const std::chrono::nanoseconds* timeout);
  unsigned release_save();               // releases all levels; returns the depth
  void acquire_restore(unsigned depth);  // re-acquires and restores the depth
  void attach();
  heap::SharedBlock block_;
  detail::RLockState* state_ = nullptr;
};

// ---------------------------------------------------------------------------------------------
// Semaphore(value = 1) (multiprocessing.Semaphore): acquire() takes one unit, release() gives one.
class MP_API Semaphore : public detail::TimedAcquire<Semaphore> {
 public:
  // Throws std::invalid_argument "semaphore initial value must be >= 0" if value < 0.
  explicit Semaphore(int value = 1) : Semaphore(value, -1) {}

  using detail::TimedAcquire<Semaphore>::acquire;
  // Gives one unit back and wakes one waiter. BoundedSemaphore: throws std::invalid_argument
  // "semaphore or lock released too many times" past the initial value.
  void release();
  // The current number of units (Python: get_value()).
  int get_value() const noexcept;

  template <class Archive>
  void save(Archive& ar) const {
    ar(block_);
  }
  template <class Archive>
  void load(Archive& ar) {
    ar(block_);
    attach();
  }

 protected:
  Semaphore(int value, int max_value);  // max_value < 0: unbounded

 private:
  friend class detail::TimedAcquire<Semaphore>;
  bool acquire_impl(const std::chrono::nanoseconds* timeout);
  void attach();
  heap::SharedBlock block_;
  detail::SemaphoreState* state_ = nullptr;
};

// BoundedSemaphore(value = 1): a Semaphore whose release() past `value` throws.
class MP_API BoundedSemaphore : public Semaphore {
 public:
  explicit BoundedSemaphore(int value = 1) : Semaphore(value, value) {}
};

// ---------------------------------------------------------------------------------------------
// Event (multiprocessing.Event): a flag that processes can wait for.
class MP_API Event {
 public:
  Event();
  bool is_set() const noexcept;
  // Sets the flag and wakes every waiter (never waits for them).
  void set();
  void clear();
  // Blocks until the flag is set; returns the flag (false only when the timeout passed).
  bool wait() { return wait_impl(nullptr); }
  template <class Rep, class Period>
  bool wait(std::chrono::duration<Rep, Period> timeout) {
    const auto t = detail::to_nanos(timeout);
    return wait_impl(&t);
  }
  bool wait(double timeout_seconds) { return wait(detail::seconds(timeout_seconds)); }

  template <class Archive>
  void save(Archive& ar) const {
    ar(block_);
  }
  template <class Archive>
  void load(Archive& ar) {
    ar(block_);
    attach();
  }

 private:
  bool wait_impl(const std::chrono::nanoseconds* timeout);
  void attach();
  heap::SharedBlock block_;
  detail::EventState* state_ = nullptr;
};

// ---------------------------------------------------------------------------------------------
// Condition (multiprocessing.Condition): a condition variable with its lock — a new RLock by
// default, or the given Lock/RLock. Lockable through its lock.
// Python: notify() never waits for the woken process (CPython waits for an acknowledgement, which
// hangs if that process died). A waiter killed while waiting may cost one later waiter a spurious
// wake-up (wait() returning true without a notify); wait_for() is immune.
class MP_API Condition : public detail::Lockable<Condition> {
 public:
  Condition() : Condition(RLock()) {}
  explicit Condition(Lock lock);
  explicit Condition(RLock lock);

  bool acquire(bool block = true);
  template <class Rep, class Period>
  bool acquire(bool block, std::chrono::duration<Rep, Period> timeout) {
    return std::visit([&](auto& l) { return l.acquire(block, timeout); }, lock_);
  }
  template <class Rep, class Period>
  bool acquire(std::chrono::duration<Rep, Period> timeout) {
    return acquire(true, timeout);
  }
  void release();

  // Releases the lock, waits for a notify (or the timeout), re-acquires the lock. Returns false if
  // the timeout passed. Throws std::logic_error "must acquire() condition before using wait()" if
  // the caller does not hold the lock.
  bool wait() { return wait_impl(nullptr); }
  template <class Rep, class Period>
  bool wait(std::chrono::duration<Rep, Period> timeout) {
    const auto t = detail::to_nanos(timeout);
    return wait_impl(&t);
  }
  bool wait(double timeout_seconds) { return wait(detail::seconds(timeout_seconds)); }
  // Waits until predicate() is true; returns its last value (false when the timeout passed).
  template <class Predicate>
  bool wait_for(Predicate predicate) {
    return detail::wait_for_predicate(*this, predicate, nullptr);
  }
  template <class Predicate, class Rep, class Period>
  bool wait_for(Predicate predicate, std::chrono::duration<Rep, Period> timeout) {
    const auto t = detail::to_nanos(timeout);
    return detail::wait_for_predicate(*this, predicate, &t);
  }
  template <class Predicate>
  bool wait_for(Predicate predicate, double timeout_seconds) {
    return wait_for(std::move(predicate), detail::seconds(timeout_seconds));
  }
  // Wakes up to n waiters / all waiters. Throws std::logic_error "lock is not owned" if the caller
  // does not hold the lock.
  void notify(int n = 1);
  void notify_all();

  template <class Archive>
  void save(Archive& ar) const {
    ar(lock_, block_);
  }
  template <class Archive>
  void load(Archive& ar) {
    ar(lock_, block_);
    attach();
  }

 private:
  bool wait_impl(const std::chrono::nanoseconds* timeout);
  bool is_owned() const noexcept;
  void attach();
  std::variant<RLock, Lock> lock_;
  heap::SharedBlock block_;
  detail::ConditionState* state_ = nullptr;
};

// ---------------------------------------------------------------------------------------------
// Barrier(parties, action = nullptr, timeout = nullopt) (multiprocessing.Barrier).
// `action` is a plain function (it may have to be sent to a spawned child); it runs in exactly one
// party of each round, the last to arrive, before the others are released.
// Python: a party that dies while waiting breaks the barrier (CPython hangs the others). Rounds
// follow each other without CPython's draining phase: a party may enter the next round while the
// last round's waiters are still waking up.
class MP_API Barrier {
 public:
  using Action = void (*)();
  // Throws std::invalid_argument if parties < 1.
  explicit Barrier(int parties, Action action = nullptr,
                   std::optional<std::chrono::nanoseconds> timeout = std::nullopt);
  // A one-party barrier; exists so that a Barrier can be received by a spawned child.
  Barrier() : Barrier(1) {}

  // Waits until `parties` parties have called wait(); returns this party's index (0..parties-1,
  // distinct within a round). Throws BrokenBarrierError if the barrier is broken, or breaks while
  // waiting (abort(), reset(), a timeout — the given one, else the barrier's — or a dead party).
  int wait() { return wait_impl(nullptr); }
  template <class Rep, class Period>
  int wait(std::chrono::duration<Rep, Period> timeout) {
    const auto t = detail::to_nanos(timeout);
    return wait_impl(&t);
  }
  int wait(double timeout_seconds) { return wait(detail::seconds(timeout_seconds)); }
  // Returns the barrier to its empty state; current waiters get BrokenBarrierError.
  void reset();
  // Puts the barrier in the broken state; current and future waiters get BrokenBarrierError.
  void abort();
  int parties() const noexcept;
  int n_waiting() const noexcept;
  bool broken() const noexcept;

  template <class Archive>
  void save(Archive& ar) const {
    ar(block_, action_code());
  }
  template <class Archive>
  void load(Archive& ar) {
    std::string code;
    ar(block_, code);
    attach(code);
  }

 private:
  int wait_impl(const std::chrono::nanoseconds* timeout);
  std::string action_code() const;  // the action, as bytes another process resolves
  void attach(const std::string& code);
  heap::SharedBlock block_;
  detail::BarrierState* state_ = nullptr;
  Action action_ = nullptr;
};

}  // namespace mp
