// lib/support/deadline.hpp — the time by which a blocking call must return, from Python's optional
// `timeout` (a null pointer: none, wait forever).
// - A timeout beyond a century counts as none, so no clock arithmetic can overflow.
// - A timeout of zero or less is "non-blocking": the call looks once and does not sleep
//   (CPython's `block=False`/`timeout<=0`); passed() is true at once.
#pragma once

#include <algorithm>
#include <chrono>

#include "platform/handle.hpp"

namespace mp::detail {

class Deadline {
 public:
  using Clock = platform::Clock;
  using Nanos = platform::Nanos;

  explicit Deadline(const Nanos* timeout) noexcept {
    if (!timeout || *timeout >= std::chrono::hours(24 * 365 * 100)) return;
    nonblocking_ = *timeout <= Nanos::zero();
    at_ = Clock::now() + std::max(*timeout, Nanos::zero());
  }
  static Deadline none() noexcept { return Deadline(nullptr); }
  static Deadline after(Nanos timeout) noexcept { return Deadline(&timeout); }

  bool forever() const noexcept { return at_ == Clock::time_point::max(); }
  bool nonblocking() const noexcept { return nonblocking_; }
  bool passed(Clock::time_point now) const noexcept { return now >= at_; }
  bool passed() const noexcept { return !forever() && passed(Clock::now()); }
  // The point in time; Clock::time_point::max() when forever.
  Clock::time_point at() const noexcept { return at_; }
  // What is left (never negative), at most `cap`; `cap` when forever.
  Nanos left(Nanos cap = Nanos::max()) const noexcept {
    if (forever()) return cap;
    return std::clamp<Nanos>(std::chrono::duration_cast<Nanos>(at_ - Clock::now()), Nanos::zero(),
                             cap);
  }
  // For the platform's `const Nanos* timeout` convention: null when forever, else `out = left()`.
  const Nanos* remaining(Nanos& out) const noexcept {
    if (forever()) return nullptr;
    out = left();
    return &out;
  }

 private:
  Clock::time_point at_ = Clock::time_point::max();
  bool nonblocking_ = false;
};

}  // namespace mp::detail
