// lib/support/spin.hpp — the library's one spinning policy: how a wait polls before it sleeps. Locks
// (futex_lock), Semaphore, Event, Condition, Barrier, queues, Pipe() and socket receives use it.
//
// A wait for a peer on another CPU that ends within microseconds is far cheaper polled than slept:
// a sleep costs a system call on each side and a wake-up of the sleeper's CPU (20–45 µs across
// vCPUs, a few µs on bare metal). Spinner::spin(ready) polls ready() — a "look" at the shared
// word — until it returns true or the time budget of the calling thread is spent.
//
// Guarantees
// - Budgets are time (the steady clock is read after every pause), never counts of
//   pause instructions: a pause costs from a few cycles to ~140 depending on the CPU model, so a
//   count tuned on one CPU spins 10x too long or too short on another. A spin ends within its
//   budget plus one gap between looks (at most its cap, or one pause if a pause is longer).
// - Looks back off in time: the gap between two looks is a fraction of the time waited so far
//   (at least one pause, at most a cap), measured on the clock whatever a pause costs. Hand-offs
//   (kHandoffPace: a quarter, up to 1 µs) see an answer that took t within ~t/4 more, and a long
//   wait does not keep pulling the watched cache line away from the peer that writes it. Locks
//   (kLockPace: all of it, i.e. gaps doubling, up to 4 µs) look sparsely: each look that finds
//   the lock free an instant takes it from a holder that would have taken it again, moving the
//   lock and its data between CPUs (a spinner that looked every pause halved a contended lock's
//   throughput, commit 3deab86; two processes incrementing under one Lock, loaded host: 93 M ops/s
//   with kLockPace, 66 M with gaps doubling up to 1 µs, 40 M with a quarter up to 1 µs).
// - Adaptive per thread and kind of wait: a spin that succeeds raises the budget to cover twice
//   what it took (at least double, up to kSpinMax); one that fails halves it (down to kSpinMin).
//   One spin in kExploreEvery uses all of kSpinMax, which is longer than a cross-CPU wake-up: a
//   peer that became fast is noticed again, and two waiters that both fell asleep (each then waits
//   for the other's wake-up) get back to spinning.
// - Whether the peer can answer: nothing is spun when the process may run on one CPU only, nor
//   when the peer last ran on the calling CPU (`peer_cpu`, a hint): it needs this CPU to answer,
//   a pause loop would hold it off and a yield may hand the CPU to any other runnable thread for
//   a whole time slice; the caller sleeps instead, which lets the peer run.
//   Looks that are system calls (spin_yielding) yield the thread between them; yield_to_peer
//   yields to a peer known to share this CPU (its caller must stop when yields are answered late:
//   the Pipe's receive, lib/support/pipe_channel.cpp).
//
// Test hook: MP_PAUSE_REPEAT=N in the environment at start-up makes every pause N pause
// instructions (0: none), as on a CPU whose pause costs N times this one's; tests call
// set_pause_repeat(). bench/run.py --pause-repeat sets it.
//
// Not shared between threads: keep one Spinner per thread (thread_local) and per kind of wait.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <thread>

#include "platform/handle.hpp"
#include "platform/wait.hpp"

namespace mp::detail {

inline constexpr std::chrono::nanoseconds kSpinMin = std::chrono::microseconds(1);
inline constexpr std::chrono::nanoseconds kSpinMax = std::chrono::microseconds(50);
// The gap between looks: the time waited so far divided by `divisor`, at most `max_gap`.
struct LookPace {
  unsigned divisor;
  std::chrono::nanoseconds max_gap;
};
inline constexpr LookPace kHandoffPace{4, std::chrono::microseconds(1)};
inline constexpr LookPace kLockPace{1, std::chrono::microseconds(4)};
inline constexpr unsigned kExploreEvery = 16;

// Pause instructions per pause (the test hook above; 1 normally).
extern std::atomic<unsigned> g_pause_repeat;
inline void set_pause_repeat(unsigned n) noexcept {
  g_pause_repeat.store(n, std::memory_order_relaxed);
}

// One pause between looks (the hook's count of pause instructions).
inline void pause() noexcept {
  for (unsigned i = g_pause_repeat.load(std::memory_order_relaxed); i > 0; --i)
    platform::yield_cpu();
}

// Paces the looks of one wait (see "Looks back off" above).
class LookPacer {
 public:
  LookPacer(platform::Clock::time_point start, LookPace pace) noexcept
      : start_(start), due_(start), pace_(pace) {}
  // Waits for the next look, pausing (or yielding the thread: `yield`) at least once and until
  // the gap has passed; returns the time after it.
  platform::Clock::time_point wait(bool yield = false) {
    platform::Clock::time_point now;
    do {
      if (yield) {
        std::this_thread::yield();
      } else {
        pause();
      }
      now = platform::Clock::now();
    } while (now < due_);
    const auto gap = (now - start_) / pace_.divisor;
    due_ = now + (gap < pace_.max_gap ? gap : pace_.max_gap);
    return now;
  }

 private:
  platform::Clock::time_point start_, due_;
  LookPace pace_;
};

class Spinner {
 public:
  static constexpr int kUnknownCpu = -1;

  // `pace`: how the looks back off (kLockPace for locks).
  constexpr explicit Spinner(LookPace pace = kHandoffPace) noexcept : pace_(pace) {}

  // Polls ready() until it returns true (then returns true) or the budget is spent (then returns
  // ready()). `peer_cpu`: the CPU where the peer that will make ready() true last ran, if known.
  template <class Ready>
  bool spin(Ready&& ready, int peer_cpu = kUnknownCpu) {
    if (!platform::several_cpus() || (peer_cpu >= 0 && peer_cpu == platform::current_cpu()))
      return ready();
    return run(ready, false);
  }
  // The same for looks that are system calls on a descriptor (whose peer's CPU is unknown): the
  // thread yields between looks, so a peer runnable on this CPU answers at once.
  template <class Ready>
  bool spin_yielding(Ready&& ready) {
    if (!platform::several_cpus()) return ready();
    return run(ready, true);
  }

  // The same for a peer that shares this CPU and may be runnable (it last ran here): the thread
  // yields between looks, so that the peer runs and answers before this one sleeps; also when the
  // process may run on one CPU only. Bounded by the same adaptive budget.
  template <class Ready>
  bool yield_to_peer(Ready&& ready) {
    return run(ready, true);
  }

  // The same for a peer in another process with CPUs of its own (an MPI rank: bound to another
  // core, or on another host): polls even when this process may run on one CPU only. (If the
  // peer has no CPU of its own after all, the spins fail and the budget drops to kSpinMin.)
  template <class Ready>
  bool spin_remote(Ready&& ready) {
    return run(ready, false);
  }

  std::chrono::nanoseconds budget() const noexcept { return std::chrono::nanoseconds(budget_); }
  // Drops the budget to kSpinMin: for a thread whose next wait has no answer in sight (a fresh
  // pool worker waiting for its first task). It adapts back as above once answers come fast.
  void rest() noexcept { budget_ = kSpinMin.count(); }
  // When the last spin read the clock last, just before its last look; the epoch if its first
  // look succeeded (it read no clock). Lets a caller time what follows without a clock read.
  platform::Clock::time_point last_read() const noexcept { return last_read_; }

 private:
  template <class Ready>
  bool run(Ready& ready, bool yield) {
    const bool explore = ++attempts_ % kExploreEvery == 0;
    const std::int64_t budget = explore ? kSpinMax.count() : budget_;
    last_read_ = {};
    if (ready()) return succeeded(0);
    const auto start = platform::Clock::now();
    LookPacer pacer(start, pace_);
    for (;;) {
      // The time of the last look (no clock read after a successful one: that is the hand-off's
      // latency).
      last_read_ = pacer.wait(yield);
      const std::int64_t waited =
          std::chrono::duration_cast<std::chrono::nanoseconds>(last_read_ - start).count();
      if (ready()) return succeeded(waited);
      if (waited >= budget) break;
    }
    budget_ = budget_ / 2 < kSpinMin.count() ? kSpinMin.count() : budget_ / 2;
    return ready();
  }
  bool succeeded(std::int64_t waited) noexcept {
    const std::int64_t want = 2 * (waited > budget_ ? waited : budget_);
    budget_ = want > kSpinMax.count() ? kSpinMax.count() : want;
    return true;
  }

  LookPace pace_;
  std::int64_t budget_ = kSpinMax.count();  // ns
  unsigned attempts_ = 0;
  platform::Clock::time_point last_read_{};
};

}  // namespace mp::detail
