// lib/spin.hpp — time-bounded adaptive spinning before a blocking wait (queues, connections).
//
// A wait for a peer on another CPU that ends within a few microseconds is far cheaper spun than
// slept: a sleep costs a system call on each side and, across vCPUs, a wake-up of the other,
// halted CPU (20–45 µs here). AdaptiveSpin::spin() polls ready() for at most the caller's current
// budget. A spin that succeeds doubles the budget (up to `max`); one that fails halves it (down
// to `min`), so a peer that is slow, idle, or needs this very CPU costs little spinning. One spin
// in kExploreEvery uses the full `max`, so that a peer that became fast is noticed again. Nothing
// is spun when the process may run on one CPU only.
//
// Not shared between threads: keep one per thread (thread_local) and per kind of wait.
#pragma once

#include <chrono>
#include <cstdint>
#include <thread>

#include "platform/os.hpp"

namespace mp::detail {

class AdaptiveSpin {
 public:
  static constexpr unsigned kExploreEvery = 16;

  constexpr AdaptiveSpin(std::chrono::nanoseconds min, std::chrono::nanoseconds max) noexcept
      : min_(min.count()), max_(max.count()), budget_(max.count()) {}

  // Polls ready() until it returns true (then returns true) or the budget is spent (returns
  // ready()). `poll_interval`: ready() calls between two reads of the clock.
  template <class Ready>
  bool spin(Ready ready, unsigned poll_interval = 8) {
    if (!platform::several_cpus()) return ready();
    const bool explore = ++attempts_ % kExploreEvery == 0;
    const std::int64_t budget = explore ? max_ : budget_;
    const auto start = platform::Clock::now();
    for (unsigned i = 1;; ++i) {
      if (ready()) {
        budget_ = budget * 2 > max_ ? max_ : budget * 2;
        return true;
      }
      if (i % poll_interval == 0 &&
          std::chrono::duration_cast<std::chrono::nanoseconds>(platform::Clock::now() - start).count() >= budget)
        break;
      platform::yield_cpu();
    }
    budget_ = budget_ / 2 < min_ ? min_ : budget_ / 2;
    return ready();
  }
  // The same, yielding the thread after each look that finds nothing: when the peer is runnable
  // on this very CPU (a ping-ponging pair is often put on one) it runs at once, and when it is
  // not, the yield returns at once. A pause loop alone would hold the peer off until preempted.
  template <class Ready>
  bool spin_yielding(Ready ready) {
    return spin(
        [&] {
          if (ready()) return true;
          std::this_thread::yield();
          return false;
        },
        1);
  }

 private:
  std::int64_t min_, max_, budget_;
  unsigned attempts_ = 0;
};

}  // namespace mp::detail
