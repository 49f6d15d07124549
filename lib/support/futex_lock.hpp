// lib/support/futex_lock.hpp — the library's internal robust lock: one 32-bit word in shared memory.
//
// FutexLock is the building block of Lock, RLock, Condition, Barrier and the queues. It lives in
// shared memory (a SharedBlock) and is used in place by every process that maps it; a zero word is
// an unlocked lock, so zero-filled memory needs no initialisation.
//
// Guarantees
// - Semantics of CPython's multiprocessing.Lock: not recursive, and any thread of any process may
//   release it (release() does not check the caller).
// - Uncontended acquire/release is one compare-exchange / one exchange, no system call. Contended
//   acquirers spin (lib/support/spin.hpp), then sleep on the word (futex); release wakes one sleeper.
// - Robust: the word holds the pid of the process that acquired it. A waiter re-checks the holder
//   every kOwnerCheckInterval while it sleeps; when the holder has ended (a zombie counts) it takes
//   the lock over atomically (one waiter wins) and acquire() reports Acquire::owner_died. A poll
//   (zero or negative timeout) also takes over a dead holder's lock.
//
// Limits
// - A lock acquired by process A and meant to be released by process B is taken over by the next
//   acquirer if A ends before B releases it (the lock looks abandoned).
// - Recovery is by pid: if the dead holder's pid is reused by a new process before anyone notices,
//   the lock is not recovered until that process ends. Processes must share one pid namespace.
// - Data guarded by the lock may be half-updated when the holder died: callers that care inspect
//   Acquire::owner_died and repair or reset their state.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

#include "platform/wait.hpp"

namespace mp::detail {

// The outcome of FutexLock::acquire.
enum class Acquire : std::uint8_t {
  timed_out = 0,  // not acquired: the lock was held until the timeout passed
  acquired,       // acquired normally
  owner_died,     // acquired by taking over from a holder that ended while holding it
};

class FutexLock {
 public:
  static constexpr std::uint32_t kWaitersBit = 0x8000'0000u;  // someone may sleep on the word
  static constexpr std::chrono::milliseconds kOwnerCheckInterval{10};

  FutexLock() noexcept = default;
  FutexLock(const FutexLock&) = delete;
  FutexLock& operator=(const FutexLock&) = delete;

  // Acquires the lock. `timeout` null: waits as long as needed (but see the robustness note: a
  // dead holder never blocks it); zero or negative: polls once; else waits at most that long.
  // Throws: OSError only if the OS futex call fails unexpectedly.
  Acquire acquire(const std::chrono::nanoseconds* timeout) {
    std::uint32_t expected = 0;
    if (word_.compare_exchange_strong(expected, self(), std::memory_order_acquire,
                                      std::memory_order_relaxed)) [[likely]]
      return Acquire::acquired;
    return acquire_slow(timeout);
  }
  // acquire() in two parts, for callers that record the acquisition on the uncontended path:
  // try_acquire_uncontended() is one compare-exchange, false if the lock is held (or was, an
  // instant ago); then acquire_contended() waits as acquire() does, without a second
  // compare-exchange on a word another CPU is writing.
  // (False as well before the process's pid is cached: acquire_contended() reads it, so the
  // fast path calls nothing.)
  bool try_acquire_uncontended() noexcept {
    const std::uint32_t me =
        static_cast<std::uint32_t>(platform::g_pid_cache.load(std::memory_order_relaxed));
    std::uint32_t expected = 0;
    return me != 0 && word_.compare_exchange_strong(expected, me, std::memory_order_acquire,
                                                    std::memory_order_relaxed);
  }
  Acquire acquire_contended(const std::chrono::nanoseconds* timeout) {
    return acquire_slow(timeout);
  }
  Acquire acquire() { return acquire(nullptr); }
  Acquire try_acquire() {
    const std::chrono::nanoseconds zero{0};
    return acquire(&zero);
  }

  // Releases the lock, whoever holds it. Returns false (and changes nothing) if it was not locked.
  bool release() noexcept {
    const std::uint32_t old = word_.exchange(0, std::memory_order_release);
    if (old & kWaitersBit) [[unlikely]]
      wake_one();
    return old != 0;
  }

  bool locked() const noexcept { return word_.load(std::memory_order_relaxed) != 0; }
  // The pid of the process that acquired the lock, 0 if unlocked.
  int owner_pid() const noexcept {
    return static_cast<int>(word_.load(std::memory_order_relaxed) & ~kWaitersBit);
  }
  // Whether the calling process acquired the lock (its pid is in the word).
  bool held_by_this_process() const noexcept { return owner_pid() == platform::cached_pid(); }

 private:
  static std::uint32_t self() noexcept {
    return static_cast<std::uint32_t>(platform::cached_pid());
  }
  Acquire acquire_slow(const std::chrono::nanoseconds* timeout);
  void wake_one() noexcept;

  std::atomic<std::uint32_t> word_{0};
};

// Holds a FutexLock while it is acquired through it: acquire(timeout) (false on timeout), then
// release() or the destructor. FutexLockGuard(lock, acquire_now) acquires at once, waiting as
// long as needed.
class FutexLockGuard {
 public:
  explicit FutexLockGuard(FutexLock& lock) noexcept : lock_(lock) {}
  struct AcquireNow {};
  static constexpr AcquireNow acquire_now{};
  FutexLockGuard(FutexLock& lock, AcquireNow) : lock_(lock) { acquire(nullptr); }
  FutexLockGuard(const FutexLockGuard&) = delete;
  FutexLockGuard& operator=(const FutexLockGuard&) = delete;
  ~FutexLockGuard() { release(); }
  bool acquire(const std::chrono::nanoseconds* timeout) {
    held_ = lock_.acquire(timeout) != Acquire::timed_out;
    return held_;
  }
  // One compare-exchange (FutexLock::try_acquire_uncontended).
  bool try_acquire_uncontended() noexcept {
    held_ = lock_.try_acquire_uncontended();
    return held_;
  }
  void release() noexcept {
    if (held_) lock_.release();
    held_ = false;
  }

 private:
  FutexLock& lock_;
  bool held_ = false;
};

static_assert(sizeof(FutexLock) == 4 && std::atomic<std::uint32_t>::is_always_lock_free);

}  // namespace mp::detail
