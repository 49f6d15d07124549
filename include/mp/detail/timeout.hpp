// Internal to mp's headers: Python's timeouts as nanoseconds and deadlines, never overflowing.
// A timeout of zero or less means "do not wait"; a huge one (hours::max(), 1e300 s, NaN seconds)
// means "about 200 years", so no clock arithmetic can overflow into the past.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>

namespace mp::detail {

inline constexpr std::chrono::nanoseconds kLongestTimeout{6'300'000'000'000'000'000};  // ~200 y

// A duration as nanoseconds: negative → 0, beyond kLongestTimeout → kLongestTimeout.
template <class Rep, class Period>
std::chrono::nanoseconds to_nanos(std::chrono::duration<Rep, Period> d) noexcept {
  using Wide = std::chrono::duration<long double, std::nano>;
  const long double n = std::chrono::duration_cast<Wide>(d).count();
  if (!(n < static_cast<long double>(kLongestTimeout.count()))) return kLongestTimeout;  // NaN too
  if (n <= 0) return std::chrono::nanoseconds::zero();
  return std::chrono::nanoseconds(static_cast<std::int64_t>(n));
}

// Python's timeout in seconds as a number, by the same rules.
inline std::chrono::nanoseconds seconds_to_nanos(double seconds) noexcept {
  return to_nanos(std::chrono::duration<double>(seconds));
}

// The steady-clock point `d` from now, by the same rules.
template <class Rep, class Period>
std::chrono::steady_clock::time_point deadline_after(
    std::chrono::duration<Rep, Period> d) noexcept {
  return std::chrono::steady_clock::now() +
         std::chrono::duration_cast<std::chrono::steady_clock::duration>(to_nanos(d));
}

}  // namespace mp::detail
