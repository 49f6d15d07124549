// lib/support/event_count.hpp — event counts: a 32-bit futex word (in shared memory or not) whose low 31
// bits count events and whose top bit says that someone may sleep on it.
//
// A sleeper marks the word (prepare_sleep), rechecks its condition, then sleeps on the word as it
// left it; counting an event clears the mark in the same atomic step, and the counter wakes the
// sleepers if the mark was set. A separate "waiters" flag that the waker clears loses wake-ups:
// when a waiter sees the condition change before the event is counted, the count's wake-up finds
// no sleeper yet and clears the flag of one that is about to sleep.
#pragma once

#include <atomic>
#include <climits>
#include <cstdint>

#include "platform/handle.hpp"
#include "platform/wait.hpp"

namespace mp::detail {

inline constexpr std::uint32_t kSleepers = 0x8000'0000u;
inline std::uint32_t events(std::uint32_t word) { return word & ~kSleepers; }

// Counts an event after the change it stands for is stored. Callers that count are serialized
// (they hold a lock); only sleepers race with them, setting the mark. True if someone may sleep:
// the caller then calls wake_sleepers (best after releasing its lock).
inline bool count_event(std::atomic<std::uint32_t>& word) {
  const std::uint32_t next = events(word.load(std::memory_order_relaxed) + 1);
  return (word.exchange(next, std::memory_order_seq_cst) & kSleepers) != 0;
}
// The same, counting only when someone may sleep (when the count itself means nothing to anyone).
inline bool count_event_if_sleepers(std::atomic<std::uint32_t>& word) {
  return (word.load(std::memory_order_seq_cst) & kSleepers) != 0 && count_event(word);
}
inline void wake_sleepers(std::atomic<std::uint32_t>& word) {
  platform::wake_address(&word, INT_MAX);
}

// Marks the word; returns the value to sleep on (after the caller rechecked its condition).
inline std::uint32_t prepare_sleep(std::atomic<std::uint32_t>& word) {
  return word.fetch_or(kSleepers, std::memory_order_seq_cst) | kSleepers;
}
// Sleeps while the word is `seen`, up to `timeout` (null: no limit); may return spuriously.
inline void sleep_on(std::atomic<std::uint32_t>& word, std::uint32_t seen,
                     const platform::Nanos* timeout) {
  platform::wait_on_address(&word, seen, timeout);
}

}  // namespace mp::detail
