// lib/support/futex_lock.cpp — the contended paths of the internal robust lock (see futex_lock.hpp).
#include "support/futex_lock.hpp"

#include <algorithm>

#include "support/deadline.hpp"
#include "support/spin.hpp"
#include "platform/handle.hpp"
#include "platform/wait.hpp"

namespace mp::detail {

namespace {
constinit thread_local Spinner t_lock_spin{kLockPace};
}  // namespace

void FutexLock::wake_one() noexcept {
  try {
    platform::wake_address(&word_, 1);
  } catch (...) {
  }
}

Acquire FutexLock::acquire_slow(const std::chrono::nanoseconds* timeout) {
  using platform::Clock;
  const std::uint32_t me = self();
  const bool poll = timeout && *timeout <= std::chrono::nanoseconds::zero();

  // Takes the lock from a holder that ended, if `seen` still is its word. One taker wins.
  auto take_over_if_dead = [&](std::uint32_t seen) {
    const int holder = static_cast<int>(seen & ~kWaitersBit);
    if (holder == 0 || !platform::process_dead(holder)) return false;
    return word_.compare_exchange_strong(seen, me | kWaitersBit, std::memory_order_acquire,
                                         std::memory_order_relaxed);
  };

  if (poll) {
    for (;;) {
      std::uint32_t v = word_.load(std::memory_order_relaxed);
      if (v == 0) {
        if (word_.compare_exchange_weak(v, me, std::memory_order_acquire,
                                        std::memory_order_relaxed))
          return Acquire::acquired;
        continue;
      }
      if (take_over_if_dead(v)) return Acquire::owner_died;
      if (word_.load(std::memory_order_relaxed) == v) return Acquire::timed_out;
    }
  }

  if (t_lock_spin.spin([&] {
        std::uint32_t v = word_.load(std::memory_order_relaxed);
        return v == 0 && word_.compare_exchange_weak(v, me, std::memory_order_acquire,
                                                     std::memory_order_relaxed);
      }))
    return Acquire::acquired;

  const Deadline deadline(timeout);
  auto next_check = Clock::now() + kOwnerCheckInterval;
  for (;;) {
    std::uint32_t v = word_.load(std::memory_order_relaxed);
    if (v == 0) {
      // Others may sleep too: keep the waiters bit so our release wakes the next one.
      if (word_.compare_exchange_weak(v, me | kWaitersBit, std::memory_order_acquire,
                                      std::memory_order_relaxed))
        return Acquire::acquired;
      continue;
    }
    if (!(v & kWaitersBit)) {
      if (!word_.compare_exchange_weak(v, v | kWaitersBit, std::memory_order_relaxed)) continue;
      v |= kWaitersBit;
    }
    const auto now = Clock::now();
    if (now >= next_check || deadline.passed(now)) {
      if (take_over_if_dead(v)) return Acquire::owner_died;
      if (deadline.passed(now)) return Acquire::timed_out;
      next_check = now + kOwnerCheckInterval;
    }
    const std::chrono::nanoseconds slice = std::min(next_check, deadline.at()) - now;
    platform::wait_on_address(&word_, v, &slice);
  }
}

}  // namespace mp::detail
