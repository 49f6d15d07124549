// A stress test shared by test_reliability (500 processes, Linux) and test_process (its Windows
// form, with fewer): `count` live processes meet at one Barrier
// (count + 1 parties with the parent); each puts its index before and its barrier slot after into
// one Queue, and the exact totals come back.
#pragma once

#include <gtest/gtest.h>

#include <vector>

#include "mp/queues.hpp"
#include "mp/synchronize.hpp"
#include "mp_test.hpp"

namespace mp_test {

// A generous bound for one party: all must have started before anyone passes the barrier.
inline constexpr auto kStressBarrierTimeout = std::chrono::seconds(150);

// The party: `count` is the number of children (slots are reported as count + slot).
inline void barrier_queue_party(mp::Barrier barrier, mp::Queue<int> queue, int index, int count) {
  queue.put(index);
  const int slot = barrier.wait(kStressBarrierTimeout);
  queue.put(count + slot);
}

inline void processes_through_barrier_and_queue(const mp::Context& ctx, int count) {
  mp::Barrier barrier(count + 1);
  mp::Queue<int> queue;
  std::vector<mp::Process> ps;
  ps.reserve(static_cast<std::size_t>(count));
  for (int i = 0; i < count; ++i) {
    ps.emplace_back(ctx, barrier_queue_party, barrier, queue, i, count);
    ps.back().start();
  }
  int my_slot = -1;
  try {
    my_slot = barrier.wait(kStressBarrierTimeout);
  } catch (const mp::BrokenBarrierError& e) {
    ADD_FAILURE() << "the barrier broke: " << e.what();
  }
  std::vector<int> index_seen(static_cast<std::size_t>(count), 0),
      slot_seen(static_cast<std::size_t>(count) + 1, 0);
  int received = 0;
  for (; received < 2 * count; ++received) {
    int v = -1;
    try {
      v = queue.get(true, kTimeout);
    } catch (const mp::Empty&) {
      break;
    }
    ASSERT_GE(v, 0);
    ASSERT_LE(v, 2 * count);
    if (v < count)
      ++index_seen[static_cast<std::size_t>(v)];
    else
      ++slot_seen[static_cast<std::size_t>(v - count)];
  }
  for (auto& p : ps) join_or_fail(p, std::chrono::seconds(60));
  EXPECT_EQ(received, 2 * count);
  for (int i = 0; i < count; ++i)
    EXPECT_EQ(index_seen[static_cast<std::size_t>(i)], 1) << "index " << i;
  ASSERT_GE(my_slot, 0);
  // The count + 1 slots of the round are distinct: the parent's plus one per child.
  ++slot_seen[static_cast<std::size_t>(my_slot)];
  for (int i = 0; i <= count; ++i)
    EXPECT_EQ(slot_seen[static_cast<std::size_t>(i)], 1) << "slot " << i;
  int exit_sum = 0;
  for (auto& p : ps) exit_sum += p.exitcode().value_or(100);
  EXPECT_EQ(exit_sum, 0);
  EXPECT_TRUE(queue.empty());
}

}  // namespace mp_test
