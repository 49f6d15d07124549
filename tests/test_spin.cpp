// The spinning policy (lib/support/spin.hpp): budgets are time whatever a pause costs (the MP_PAUSE_REPEAT
// hook makes pause free or ~200x dearer), the budget adapts, looks stay paced, a peer on this CPU
// is not spun for, and hand-offs between processes complete with the hook on, under every start
// method.
#include <stdlib.h>

#include <algorithm>
#include <atomic>
#include <limits>
#include <string>

#include "support/spin.hpp"
#include "mp_test.hpp"
#include "platform/system.hpp"
#include "platform/wait.hpp"

using namespace mp_test;
using mp::detail::kSpinMax;
using mp::detail::kSpinMin;
using mp::detail::Spinner;
using Clock = std::chrono::steady_clock;
using Nanos = std::chrono::nanoseconds;
using mp::platform::several_cpus;

namespace {

// Sets the pause-cost hook for this process and for children started meanwhile (spawned
// children read MP_PAUSE_REPEAT at start-up; forked ones inherit the setting).
class PauseRepeat {
 public:
  explicit PauseRepeat(unsigned n) {
    mp::detail::set_pause_repeat(n);
#ifdef _WIN32  // the platform layer reads the environment but does not set it
    ::_putenv_s("MP_PAUSE_REPEAT", std::to_string(n).c_str());
#else
    ::setenv("MP_PAUSE_REPEAT", std::to_string(n).c_str(), 1);
#endif
  }
  ~PauseRepeat() {
    mp::detail::set_pause_repeat(1);
    mp::platform::unset_env("MP_PAUSE_REPEAT");
  }
  PauseRepeat(const PauseRepeat&) = delete;
  PauseRepeat& operator=(const PauseRepeat&) = delete;
};

struct FailedSpin {
  Nanos took;
  Nanos budget;  // what the spin had to spend
  long looks;
};

// A spin whose condition never holds, with a fresh spinner (its first spin has the full budget).
FailedSpin fail_once() {
  Spinner s;
  const Nanos budget = s.budget();
  long looks = 0;
  const auto t0 = Clock::now();
  const bool got = s.spin([&] {
    ++looks;
    return false;
  });
  const Nanos took = Clock::now() - t0;
  EXPECT_FALSE(got);
  return {took, budget, looks};
}

// The fastest of a few spins: preemption only ever lengthens one, so the minimum is what the
// policy chose.
FailedSpin fastest_failed_spin() {
  FailedSpin best = fail_once();
  for (int i = 0; i < 6; ++i) {
    const FailedSpin f = fail_once();
    if (f.took < best.took) best = f;
  }
  return best;
}

}  // namespace

// With pause costing nothing, a spin still lasts its budget in time (a budget counted in pauses
// would end 50x early); with a pause ~200x dearer (~5 µs here) it still ends within about its
// budget (a count of pauses would spin milliseconds).
TEST(SpinPolicy, BudgetIsTimeWhateverPauseCosts) {
  if (!several_cpus()) GTEST_SKIP() << "nothing is spun on one CPU";
  for (const unsigned repeat : {0u, 1u, 10u, 200u}) {
    SCOPED_TRACE("MP_PAUSE_REPEAT=" + std::to_string(repeat));
    const PauseRepeat hook(repeat);
    const FailedSpin f = fastest_failed_spin();
    EXPECT_EQ(f.budget, kSpinMax);
    EXPECT_GE(f.took, f.budget);
    // One gap between looks past the budget (at most ~1 µs, or one slow pause), plus noise.
    EXPECT_LT(f.took, f.budget + std::chrono::milliseconds(1));
  }
}

// Looks stay paced in time: with a dear pause the gap does not grow with the pause's cost, and
// with a free one the look rate is bounded by the gap's growth (no look every few ns for the
// whole spin).
TEST(SpinPolicy, LooksArePacedInTime) {
  if (!several_cpus()) GTEST_SKIP() << "nothing is spun on one CPU";
  long most = 0, fewest_free = std::numeric_limits<long>::max();
  {
    const PauseRepeat hook(10);  // ~0.26 µs a pause here: the gap is about 1 µs = ~4 pauses
    for (int i = 0; i < 7; ++i) most = std::max(most, fail_once().looks);
  }
  {
    const PauseRepeat hook(0);
    for (int i = 0; i < 7; ++i) fewest_free = std::min(fewest_free, fail_once().looks);
  }
  // A 50 µs budget with gaps up to 1 µs: some 50-100 looks (at least 20 on a slow, busy host).
  EXPECT_GE(most, 20);
  // Without pauses a look costs a clock read (~25 ns): unpaced, 50 µs would be ~2000 looks.
  EXPECT_LT(fewest_free, 1000);
}

// Success raises the budget to twice what the wait took (capped); failure halves it down to the
// floor; one spin in kExploreEvery uses the whole kSpinMax.
TEST(SpinPolicy, BudgetAdapts) {
  if (!several_cpus()) GTEST_SKIP() << "nothing is spun on one CPU";
  Spinner s;
  EXPECT_EQ(s.budget(), kSpinMax);
  EXPECT_FALSE(s.spin([] { return false; }));
  EXPECT_EQ(s.budget(), kSpinMax / 2);
  for (int i = 0; i < 20; ++i) s.spin([] { return false; });
  EXPECT_EQ(s.budget(), kSpinMin);
  EXPECT_TRUE(s.spin([] { return true; }));
  EXPECT_EQ(s.budget(), 2 * kSpinMin);
  // A condition that holds after ~10 µs: a spin with a 2 µs budget fails, the exploring one (every
  // kExploreEvery-th spin, with the whole kSpinMax) waits it out and leaves a budget that covers it.
  int spins = 22;  // the spins above
  for (int round = 0; round < 4 * static_cast<int>(mp::detail::kExploreEvery); ++round) {
    const bool exploring = ++spins % mp::detail::kExploreEvery == 0;
    const auto ready_at = Clock::now() + std::chrono::microseconds(10);
    Clock::time_point first_look{}, last_look{};
    Clock::duration longest_gap{};  // between two looks: paced at most ~1 µs apart unless preempted
    const bool ready = s.spin([&] {
      const auto now = Clock::now();
      if (first_look == Clock::time_point{}) first_look = now;
      if (last_look != Clock::time_point{}) longest_gap = std::max(longest_gap, now - last_look);
      last_look = now;
      return now >= ready_at;
    });
    const auto end = Clock::now();
    // A short budget's spin fails, or (when it began late, or its last look fell after ready_at)
    // succeeds without a wait that says anything. An exploring spin says nothing either when the
    // thread lost its CPU in the middle of it (a loaded host: the spin's clock and its looks then
    // disagree): the next one is tried.
    if (!exploring || !ready || end - first_look >= kSpinMax ||
        longest_gap > std::chrono::microseconds(4) ||
        ready_at - first_look < std::chrono::microseconds(8))
      continue;
    // Twice the wait, measured from the spin's first look.
    EXPECT_GE(s.budget(), std::chrono::microseconds(16))
        << "spin " << spins << ", took " << (end - first_look).count() << " ns, ready after "
        << (ready_at - first_look).count() << " ns";
    return;
  }
  ADD_FAILURE() << "no exploring spin caught the condition in " << 4 * mp::detail::kExploreEvery
                << " spins";
}

// A peer that last ran on the calling CPU needs it to answer: the spin returns at once (the
// caller sleeps), whatever the budget.
TEST(SpinPolicy, NoSpinForAPeerOnThisCpu) {
#ifdef MP_PLATFORM_POSIX_FALLBACKS
  GTEST_SKIP() << "the portable fallbacks do not know the CPU (current_cpu() is -1)";
#endif
  if (!several_cpus()) GTEST_SKIP() << "nothing is spun on one CPU";
  Nanos fastest = Nanos::max();
  for (int i = 0; i < 7; ++i) {
    Spinner s;
    const auto t0 = Clock::now();
    EXPECT_FALSE(s.spin([] { return false; }, mp::platform::current_cpu()));
    fastest = std::min<Nanos>(fastest, Clock::now() - t0);
  }
  // A spin would take the whole budget (50 µs); the CPU may change under us, rarely each time.
  EXPECT_LT(fastest, kSpinMax / 5);
  Spinner s;
  EXPECT_TRUE(s.spin([] { return true; }, mp::platform::current_cpu()));
}

class SpinHandoffTest : public StartMethodTest {};

namespace {
void event_pong(mp::Event ping, mp::Event pong, int n) {
  for (int i = 0; i < n; ++i) {
    if (!ping.wait(kTimeout)) std::exit(2);
    ping.clear();
    pong.set();
  }
}
void barrier_party(mp::Barrier barrier, int n) {
  for (int i = 0; i < n; ++i) barrier.wait(kTimeout);
}
void pipe_echo(mp::Connection c, int n) {
  for (int i = 0; i < n; ++i) {
    if (!c.poll(kTimeout)) std::exit(2);
    c.send(c.recv<int>() + 1);
  }
}
void put_many(mp::Queue<int> q, int n) {
  for (int i = 0; i < n; ++i) q.put(i);
}
void add_under_lock(mp::Value<long> v, int n) {
  for (int i = 0; i < n; ++i) {
    std::lock_guard g(v.get_lock());
    v.set_value(v.value() + 1);
  }
}
}  // namespace

// Every kind of wait completes between processes with a pause 10x dearer (and free): the hook
// changes only how long a pause takes, never whether a wake-up arrives.
TEST_P(SpinHandoffTest, HandOffsCompleteWithThePauseHook) {
  for (const unsigned repeat : {10u, 0u}) {
    SCOPED_TRACE("MP_PAUSE_REPEAT=" + std::to_string(repeat));
    const PauseRepeat hook(repeat);
    constexpr int n = 2000;
    {
      mp::Event ping, pong;
      mp::Process p(ctx(), event_pong, ping, pong, n);
      p.start();
      for (int i = 0; i < n; ++i) {
        ping.set();
        ASSERT_TRUE(pong.wait(kTimeout));
        pong.clear();
      }
      join_or_fail(p);
      EXPECT_EQ(p.exitcode(), 0);
    }
    {
      mp::Barrier barrier(2);
      mp::Process p(ctx(), barrier_party, barrier, n);
      p.start();
      for (int i = 0; i < n; ++i) barrier.wait(kTimeout);
      join_or_fail(p);
      EXPECT_EQ(p.exitcode(), 0);
    }
    {
      auto [a, b] = mp::Pipe();
      mp::Process p(ctx(), pipe_echo, b, n);
      p.start();
      for (int i = 0; i < n; ++i) {
        a.send(i);
        ASSERT_TRUE(a.poll(kTimeout));
        ASSERT_EQ(a.recv<int>(), i + 1);
      }
      join_or_fail(p);
      EXPECT_EQ(p.exitcode(), 0);
    }
    {
      mp::Queue<int> q;
      mp::Process p(ctx(), put_many, q, 20 * n);
      p.start();
      for (int i = 0; i < 20 * n; ++i) ASSERT_EQ(q.get(true, kTimeout), i);
      join_or_fail(p);
      EXPECT_EQ(p.exitcode(), 0);
    }
    {
      mp::Value<long> v(0);
      mp::Process p(ctx(), add_under_lock, v, 10 * n);
      p.start();
      add_under_lock(v, 10 * n);
      join_or_fail(p);
      EXPECT_EQ(p.exitcode(), 0);
      EXPECT_EQ(v.value(), 20L * n);
    }
  }
}

MP_INSTANTIATE_START_METHODS(SpinHandoffTest);
