// lib/synchronize.cpp — Lock, RLock, Semaphore, Event, Condition, Barrier over futex words in
// shared memory (CPython: multiprocessing/synchronize.py, threading.Barrier).
#include "mp/synchronize.hpp"

#include <algorithm>
#include <atomic>
#include <climits>
#include <new>
#include <stdexcept>
#include <tuple>

#include "support/code_ref.hpp"
#include "support/deadline.hpp"
#include "support/forced_unwind.hpp"
#include "support/futex_lock.hpp"
#include "support/spin.hpp"
#include "platform/handle.hpp"
#include "platform/system.hpp"
#include "platform/wait.hpp"

namespace mp {
namespace detail {

using Nanos = std::chrono::nanoseconds;
using platform::Clock;

struct LockState {
  FutexLock lock;
  std::atomic<std::int32_t> owner_tid{0};    // the thread that acquired it (for Condition)
  std::atomic<std::uint32_t> owner_died{0};  // the last acquisition was a take-over
};

struct RLockState {
  FutexLock lock;
  std::atomic<std::int32_t> owner_tid{0};
  std::atomic<std::uint32_t> count{0};
  std::atomic<std::uint32_t> owner_died{0};
};

struct SemaphoreState {
  std::atomic<std::uint32_t> count{0};       // units available; the futex word
  std::atomic<std::uint32_t> waiters{0};     // processes/threads that may sleep on `count`
  std::int32_t max_value = -1;               // BoundedSemaphore's bound; < 0: unbounded
  std::atomic<std::int32_t> signal_cpu{-1};  // where the last release() ran (a spin hint)
};

struct EventState {
  static constexpr std::uint32_t kClear = 0, kSet = 1, kClearWithSleepers = 2;
  std::atomic<std::uint32_t> word{kClear};
  std::atomic<std::int32_t> signal_cpu{-1};  // where the last set() ran (a spin hint)
};

// Condition bookkeeping (changed only under the condition's lock, except `tokens` which waiters
// take without it). `sleepers`: waiters not yet notified; `tokens`: notifications not yet taken;
// notify(n) moves up to n from sleepers to tokens and bumps `nseq`. A waiter may take a token only
// once nseq differs from its value when the waiter entered, i.e. only a notify that found it
// waiting can wake it: a later waiter never steals a notification. A waiter that times out leaves,
// under the lock, by taking a token if it may and one is left, else by leaving `sleepers`.
struct ConditionState {
  std::atomic<std::uint32_t> sleepers{0};
  std::atomic<std::uint32_t> tokens{0};
  std::atomic<std::uint32_t> nseq{0};        // the futex word waiters sleep on
  std::atomic<std::int32_t> signal_cpu{-1};  // where the last notify() ran (a spin hint)
  // Waiters in (or about to enter) a futex sleep on nseq: notify() makes the wake system call
  // only when there is one (it bumps nseq, then reads this; a waiter adds itself, then the kernel
  // compares nseq: one of the two sees the other).
  std::atomic<std::uint32_t> futex_sleepers{0};
};

// Barrier state, guarded by `lock` (fields marked atomic are also read or slept on without it).
// Rounds are generations: the party that completes a round (or breaks it) bumps `gen`, which wakes
// the round's waiters; each waiter then reads `last_broken` and counts itself out of `uncollected`.
// The next transition waits until uncollected is 0, so `last_broken` is never overwritten before
// every waiter of the previous round has read it, and a new round can fill in the meantime (no
// draining phase).
struct BarrierSlot {
  std::atomic<std::int32_t> pid{0};  // a party inside wait(); 0: free
  std::uint32_t gen = 0;             // the round it joined
};
struct BarrierState {
  FutexLock lock;
  std::atomic<std::uint32_t> gen{0};          // the current round; waiters sleep on it
  std::atomic<std::uint32_t> uncollected{0};  // waiters of the last round yet to read its outcome
  std::atomic<std::uint32_t> gen_sleepers{0};
  std::atomic<std::uint32_t> collect_sleepers{0};
  std::int32_t count = 0;  // parties in the current round
  std::int32_t parties = 0;
  bool broken = false;           // until reset()
  bool last_broken = false;      // the outcome of the last round: broken (true) or passed (false)
  std::int64_t timeout_ns = -1;  // the default timeout; < 0: none
  std::int32_t last_arrival_pid = 0;  // the last party to arrive, and its CPU (a spin hint)
  std::int32_t last_arrival_cpu = -1;
  std::atomic<std::int64_t> last_reap_ns{
      0};  // steady clock: when a waiter last checked for dead parties
  // Followed by 2 * parties slots: this round's parties plus last round's uncollected waiters.
  BarrierSlot* slots() noexcept { return reinterpret_cast<BarrierSlot*>(this + 1); }
  std::int32_t slot_count() const noexcept { return 2 * parties; }
};
static_assert(alignof(BarrierState) >= alignof(BarrierSlot));

namespace {

// How often sleepers that depend on other processes check whether those died: a dead party is
// noticed within about kLivenessInterval (a scan reads /proc once per party, so with hundreds of
// parties the scans are spaced out to at most kMaxScanInterval).
constexpr Nanos kLivenessInterval = std::chrono::milliseconds(10);
constexpr Nanos kMaxScanInterval = std::chrono::milliseconds(50);
constexpr Nanos kScanCostPerParty = std::chrono::microseconds(50);
// Each sleeper wakes at least this often to see whether a scan is due; with n sleepers the period
// grows to n * kWakePerSleeper (capped), so the barrier as a whole wakes ~1000 times a second at
// most instead of 100 times per sleeper (500 sleepers waking every 10 ms starved everything else).
constexpr Nanos kWakePerSleeper = std::chrono::milliseconds(1);
constexpr Nanos kMaxWakePeriod = std::chrono::milliseconds(200);

// Spinning before sleeping (lib/support/spin.hpp), adapted per thread and kind of wait.
constinit thread_local Spinner t_semaphore_spin, t_event_spin, t_condition_spin, t_barrier_spin;
// The Condition whose notify() this thread made last: its signal_cpu then names this thread's
// own CPU, which says nothing about where the peer that will notify us runs.
constinit thread_local const void* t_last_notified = nullptr;

// Takes one unit from `word` if it is positive.
bool take_unit(std::atomic<std::uint32_t>& word) noexcept {
  std::uint32_t c = word.load(std::memory_order_seq_cst);
  while (c > 0) {
    if (word.compare_exchange_weak(c, c - 1, std::memory_order_seq_cst, std::memory_order_relaxed))
      return true;
  }
  return false;
}

// Sleeps on `word` while it equals `expected`, at most until `d` and `cap`.
void sleep_on(std::atomic<std::uint32_t>& word, std::uint32_t expected, const Deadline& d,
              Nanos cap = Nanos::max()) {
  if (d.forever() && cap == Nanos::max()) {
    platform::wait_on_address(&word, expected, nullptr);
  } else {
    const Nanos slice = d.left(cap);
    if (slice > Nanos::zero()) platform::wait_on_address(&word, expected, &slice);
  }
}

template <class State>
State* create_state(heap::SharedBlock& block, std::size_t size = sizeof(State)) {
  block = heap::SharedBlock(size, alignof(State));
  return new (block.data()) State();
}

[[noreturn]] void throw_released_too_many() {
  throw std::invalid_argument("semaphore or lock released too many times");
}

}  // namespace
}  // namespace detail

using detail::Acquire;
using detail::Deadline;
using detail::Nanos;

// ---- Lock -------------------------------------------------------------------------------------

Lock::Lock() { state_ = detail::create_state<detail::LockState>(block_); }
void Lock::attach() { state_ = static_cast<detail::LockState*>(block_.data()); }

namespace detail {
namespace {
// Records an acquisition in the state next to the lock word (by the thread `tid`).
template <class State>
void note_acquired(State& s, Acquire r, int tid) noexcept {
  s.owner_tid.store(tid, std::memory_order_relaxed);
  s.owner_died.store(r == Acquire::owner_died ? 1 : 0, std::memory_order_relaxed);
}
// The uncontended path calls nothing: one compare-exchange once the pid and tid are cached;
// everything else (reading them, waiting) is here, out of line.
template <class State>
[[gnu::noinline]] bool acquire_contended(State& s, const Nanos* timeout) {
  const int tid = platform::cached_tid();
  const Acquire r = s.lock.acquire_contended(timeout);
  if (r == Acquire::timed_out) return false;
  note_acquired(s, r, tid);
  return true;
}
}  // namespace
}  // namespace detail

bool Lock::acquire_impl(const Nanos* timeout) {
  detail::LockState& s = *state_;
  const int tid = platform::t_tid_cache;
  if (tid != 0 && s.lock.try_acquire_uncontended()) [[likely]] {
    detail::note_acquired(s, Acquire::acquired, tid);
    return true;
  }
  return detail::acquire_contended(s, timeout);
}

void Lock::release() {
  state_->owner_tid.store(0, std::memory_order_relaxed);
  if (!state_->lock.release()) detail::throw_released_too_many();
}

bool Lock::previous_owner_died() const noexcept {
  return state_->owner_died.load(std::memory_order_relaxed) != 0;
}
bool Lock::locked() const noexcept { return state_->lock.locked(); }
bool Lock::is_mine() const noexcept {
  return state_->lock.held_by_this_process() &&
         state_->owner_tid.load(std::memory_order_relaxed) == platform::cached_tid();
}

// ---- RLock ------------------------------------------------------------------------------------

RLock::RLock() { state_ = detail::create_state<detail::RLockState>(block_); }
void RLock::attach() { state_ = static_cast<detail::RLockState*>(block_.data()); }

bool RLock::is_mine() const noexcept {
  // Only the owning thread stores its tid (and clears it before releasing), so seeing our pid in
  // the word and our tid here means we hold it.
  return state_->lock.held_by_this_process() &&
         state_->owner_tid.load(std::memory_order_relaxed) == platform::cached_tid();
}

unsigned RLock::count() const noexcept { return state_->count.load(std::memory_order_relaxed); }
bool RLock::previous_owner_died() const noexcept {
  return state_->owner_died.load(std::memory_order_relaxed) != 0;
}

// `count` is written only by the owning thread while it holds the lock: plain loads and stores,
// no read-modify-write.
bool RLock::acquire_impl(const Nanos* timeout) {
  detail::RLockState& s = *state_;
  if (is_mine()) {
    s.count.store(s.count.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    return true;
  }
  const int tid = platform::t_tid_cache;
  if (tid == 0 || !s.lock.try_acquire_uncontended()) [[unlikely]] {
    if (!detail::acquire_contended(s, timeout)) return false;
  } else {
    detail::note_acquired(s, Acquire::acquired, tid);
  }
  s.count.store(1, std::memory_order_relaxed);
  return true;
}

void RLock::release() {
  if (!is_mine()) throw std::logic_error("cannot release un-acquired lock");
  detail::RLockState& s = *state_;
  const std::uint32_t depth = s.count.load(std::memory_order_relaxed);
  s.count.store(depth - 1, std::memory_order_relaxed);
  if (depth == 1) {
    s.owner_tid.store(0, std::memory_order_relaxed);
    s.lock.release();
  }
}

unsigned RLock::release_save() {
  const unsigned depth = state_->count.exchange(0, std::memory_order_relaxed);
  state_->owner_tid.store(0, std::memory_order_relaxed);
  state_->lock.release();
  return depth;
}

void RLock::acquire_restore(unsigned depth) {
  const Acquire r = state_->lock.acquire(nullptr);
  detail::note_acquired(*state_, r, platform::cached_tid());
  state_->count.store(depth, std::memory_order_relaxed);
}

// ---- Semaphore --------------------------------------------------------------------------------

Semaphore::Semaphore(int value, int max_value) {
  if (value < 0) throw std::invalid_argument("semaphore initial value must be >= 0");
  state_ = detail::create_state<detail::SemaphoreState>(block_);
  state_->count.store(static_cast<std::uint32_t>(value));
  state_->max_value = max_value;
}
void Semaphore::attach() { state_ = static_cast<detail::SemaphoreState*>(block_.data()); }

int Semaphore::get_value() const noexcept { return static_cast<int>(state_->count.load()); }

bool Semaphore::acquire_impl(const Nanos* timeout) {
  auto& count = state_->count;
  if (detail::take_unit(count)) return true;
  if (timeout && *timeout <= Nanos::zero()) return false;
  if (detail::t_semaphore_spin.spin([&] { return detail::take_unit(count); },
                                    state_->signal_cpu.load(std::memory_order_relaxed)))
    return true;
  const Deadline d(timeout);
  state_->waiters.fetch_add(1, std::memory_order_seq_cst);
  bool got = false;
  try {
    for (;;) {
      if (detail::take_unit(count)) {
        got = true;
        break;
      }
      if (d.passed()) break;
      detail::sleep_on(count, 0, d);
    }
  } catch (...) {
    state_->waiters.fetch_sub(1);
    throw;
  }
  state_->waiters.fetch_sub(1, std::memory_order_seq_cst);
  return got;
}

void Semaphore::release() {
  auto& count = state_->count;
  std::uint32_t c = count.load(std::memory_order_relaxed);
  do {
    if (state_->max_value >= 0 && c >= static_cast<std::uint32_t>(state_->max_value))
      detail::throw_released_too_many();
    if (c >= static_cast<std::uint32_t>(INT_MAX))
      throw std::overflow_error("semaphore value overflow");
  } while (
      !count.compare_exchange_weak(c, c + 1, std::memory_order_seq_cst, std::memory_order_relaxed));
  state_->signal_cpu.store(platform::current_cpu(), std::memory_order_relaxed);
  if (state_->waiters.load(std::memory_order_seq_cst) != 0) platform::wake_address(&count, 1);
}

// ---- Event ------------------------------------------------------------------------------------

Event::Event() { state_ = detail::create_state<detail::EventState>(block_); }
void Event::attach() { state_ = static_cast<detail::EventState*>(block_.data()); }

bool Event::is_set() const noexcept { return state_->word.load() == detail::EventState::kSet; }

void Event::set() {
  state_->signal_cpu.store(platform::current_cpu(), std::memory_order_relaxed);
  if (state_->word.exchange(detail::EventState::kSet) == detail::EventState::kClearWithSleepers)
    platform::wake_address(&state_->word, INT_MAX);
}

void Event::clear() {
  std::uint32_t expected = detail::EventState::kSet;
  state_->word.compare_exchange_strong(expected, detail::EventState::kClear);
}

bool Event::wait_impl(const Nanos* timeout) {
  using S = detail::EventState;
  auto& word = state_->word;
  if (word.load() == S::kSet) return true;
  if (timeout && *timeout <= Nanos::zero()) return false;
  if (detail::t_event_spin.spin([&] { return word.load(std::memory_order_relaxed) == S::kSet; },
                                state_->signal_cpu.load(std::memory_order_relaxed)))
    return true;
  const Deadline d(timeout);
  for (;;) {
    std::uint32_t v = word.load();
    if (v == S::kSet) return true;
    if (v == S::kClear && !word.compare_exchange_weak(v, S::kClearWithSleepers)) continue;
    if (d.passed()) return false;
    detail::sleep_on(word, S::kClearWithSleepers, d);
  }
}

// ---- Condition --------------------------------------------------------------------------------

Condition::Condition(Lock lock) : lock_(std::move(lock)) {
  state_ = detail::create_state<detail::ConditionState>(block_);
}
Condition::Condition(RLock lock) : lock_(std::move(lock)) {
  state_ = detail::create_state<detail::ConditionState>(block_);
}
void Condition::attach() { state_ = static_cast<detail::ConditionState*>(block_.data()); }

bool Condition::acquire(bool block) {
  return std::visit([&](auto& l) { return l.acquire(block); }, lock_);
}
void Condition::release() {
  std::visit([](auto& l) { l.release(); }, lock_);
}
bool Condition::is_owned() const noexcept {
  return std::visit([](const auto& l) { return l.is_mine(); }, lock_);
}

bool Condition::wait_impl(const Nanos* timeout) {
  if (!is_owned()) throw std::logic_error("must acquire() condition before using wait()");
  auto& tokens = state_->tokens;
  auto& nseq = state_->nseq;
  state_->sleepers.fetch_add(1);
  const std::uint32_t entered = nseq.load();
  // Takes a notification, if one is meant for us.
  auto take = [&] {
    return nseq.load(std::memory_order_seq_cst) != entered && detail::take_unit(tokens);
  };
  // Release the lock completely (all RLock levels), remembering how to restore it.
  unsigned depth = 0;
  if (auto* r = std::get_if<RLock>(&lock_)) {
    depth = r->release_save();
  } else {
    std::get<Lock>(lock_).release();
  }
  auto restore_lock = [&] {
    if (auto* r = std::get_if<RLock>(&lock_)) {
      r->acquire_restore(depth);
    } else {
      std::get<Lock>(lock_).acquire();
    }
  };
  bool woken = false;
  try {
    if (!(timeout && *timeout <= Nanos::zero())) {
      const int hint = detail::t_last_notified == state_
                           ? detail::Spinner::kUnknownCpu
                           : state_->signal_cpu.load(std::memory_order_relaxed);
      woken = detail::t_condition_spin.spin(take, hint);
      const Deadline d(timeout);
      while (!woken && !d.passed()) {
        state_->futex_sleepers.fetch_add(1, std::memory_order_seq_cst);
        const std::uint32_t seen = nseq.load(std::memory_order_seq_cst);
        if (seen != entered && detail::take_unit(tokens)) {
          state_->futex_sleepers.fetch_sub(1, std::memory_order_relaxed);
          woken = true;
          break;
        }
        try {
          detail::sleep_on(nseq, seen, d);
        } catch (...) {
          state_->futex_sleepers.fetch_sub(1, std::memory_order_relaxed);
          throw;
        }
        state_->futex_sleepers.fetch_sub(1, std::memory_order_relaxed);
        woken = take();
      }
    }
  } catch (...) {
    restore_lock();
    if (!take()) state_->sleepers.fetch_sub(1);
    throw;
  }
  restore_lock();
  if (!woken) {
    // Timed out. Under the lock no notify runs: either a notification we may take is left (take
    // it: we count as notified) or we are still among the sleepers.
    if (take()) {
      woken = true;
    } else {
      state_->sleepers.fetch_sub(1);
    }
  }
  return woken;
}

void Condition::notify(int n) {
  if (!is_owned()) throw std::logic_error("lock is not owned");
  if (n <= 0) return;
  const std::uint32_t sleeping = state_->sleepers.load();
  const std::uint32_t k = std::min<std::uint32_t>(sleeping, static_cast<std::uint32_t>(n));
  if (k == 0) return;
  state_->sleepers.fetch_sub(k);
  state_->signal_cpu.store(platform::current_cpu(), std::memory_order_relaxed);
  state_->tokens.fetch_add(k, std::memory_order_seq_cst);
  state_->nseq.fetch_add(1, std::memory_order_seq_cst);
  detail::t_last_notified = state_;
  // Waiters still spinning take their token without a system call.
  if (state_->futex_sleepers.load(std::memory_order_seq_cst) != 0)
    platform::wake_address(&state_->nseq, static_cast<int>(std::min<std::uint32_t>(k, INT_MAX)));
}

void Condition::notify_all() { notify(INT_MAX); }

// ---- Barrier ----------------------------------------------------------------------------------

namespace {

using BS = detail::BarrierState;

// Holds the barrier's lock and performs the state changes. A take-over of the lock from a dead
// holder breaks the barrier (its state may be half-updated).
class BarrierGuard {
 public:
  explicit BarrierGuard(BS* s) : s_(s) { lock(); }
  ~BarrierGuard() {
    if (held_) unlock();
  }
  BarrierGuard(const BarrierGuard&) = delete;
  BarrierGuard& operator=(const BarrierGuard&) = delete;

  void lock() {
    if (s_->lock.acquire(nullptr) == Acquire::owner_died) {
      s_->broken = true;
      break_pending_ = true;
    }
    held_ = true;
  }
  // Wake-ups are issued after the lock is released, so the woken do not run into a held lock.
  void unlock() noexcept {
    s_->lock.release();
    held_ = false;
    try {
      if (wake_gen_) {
        wake_gen_ = false;
        if (s_->gen_sleepers.load(std::memory_order_seq_cst) != 0)
          platform::wake_address(&s_->gen, INT_MAX);
      }
      if (wake_collect_) {
        wake_collect_ = false;
        if (s_->collect_sleepers.load(std::memory_order_seq_cst) != 0)
          platform::wake_address(&s_->uncollected, INT_MAX);
      }
    } catch (...) {
    }
  }

  bool break_pending() const noexcept { return break_pending_; }

  // Records our arrival; the previous arrival, if another process, is the peer we spin for.
  void note_arrival() noexcept {
    const int me = platform::cached_pid();
    const int cpu = platform::current_cpu();
    peer_cpu_ = s_->last_arrival_pid != me ? s_->last_arrival_cpu : -1;
    s_->last_arrival_pid = me;
    s_->last_arrival_cpu = cpu;
  }

  std::int32_t join(std::uint32_t gen) {
    for (std::int32_t i = 0; i < s_->slot_count(); ++i) {
      auto& slot = s_->slots()[i];
      if (slot.pid.load(std::memory_order_relaxed) == 0) {
        slot.pid.store(platform::cached_pid(), std::memory_order_relaxed);
        slot.gen = gen;
        return i;
      }
    }
    return -1;  // cannot happen: at most 2 * parties are inside (see BarrierState)
  }
  void leave(std::int32_t slot) noexcept {
    if (slot >= 0) s_->slots()[slot].pid.store(0, std::memory_order_relaxed);
  }
  // A waiter of the last round has read its outcome.
  void collected() noexcept {
    if (s_->uncollected.fetch_sub(1, std::memory_order_seq_cst) == 1) wake_collect_ = true;
  }

  // Ends the current round: passed (broken = false) or broken. The caller checked uncollected == 0.
  // `self_slot`: the caller's slot if it is a party of this round (it does not collect).
  void transition(bool broken_round, std::int32_t self_slot) {
    const std::uint32_t g = s_->gen.load(std::memory_order_relaxed);
    std::uint32_t waiting = 0;
    for (std::int32_t i = 0; i < s_->slot_count(); ++i) {
      auto& slot = s_->slots()[i];
      if (i != self_slot && slot.pid.load(std::memory_order_relaxed) != 0 && slot.gen == g)
        ++waiting;
    }
    s_->last_broken = broken_round;
    s_->count = 0;
    s_->uncollected.store(waiting, std::memory_order_seq_cst);
    s_->gen.store(g + 1, std::memory_order_seq_cst);
    wake_gen_ = true;
    break_pending_ = false;
  }

  // Removes parties whose process ended inside wait(): a dead waiter of the last round counts as
  // collected; a dead party of the current round breaks it.
  // Called under the lock by every waiter whose liveness interval ended; only one scan per
  // interval runs (with hundreds of parties, a scan each would cost O(parties^2) /proc reads).
  void reap_dead_parties() {
    const std::int64_t now = now_ns();
    if (now - s_->last_reap_ns.load(std::memory_order_relaxed) < scan_interval_.count()) return;
    s_->last_reap_ns.store(now, std::memory_order_relaxed);
    const std::uint32_t g = s_->gen.load(std::memory_order_relaxed);
    for (std::int32_t i = 0; i < s_->slot_count(); ++i) {
      auto& slot = s_->slots()[i];
      const int pid = slot.pid.load(std::memory_order_relaxed);
      if (pid == 0 || !platform::process_dead(pid)) continue;
      slot.pid.store(0, std::memory_order_relaxed);
      if (slot.gen == g) {
        if (s_->count > 0) --s_->count;
        s_->broken = true;
        break_pending_ = true;
      } else {
        collected();
      }
    }
  }

  // Releases the lock until `word` leaves `seen`, the deadline passes or a liveness interval ends,
  // then re-acquires it and checks for dead parties if nothing happened.
  // Between scans a sleeper wakes only to look at the shared scan time, without the lock.
  void wait_change(std::atomic<std::uint32_t>& word, std::atomic<std::uint32_t>& sleepers,
                   std::uint32_t seen, const Deadline& d) {
    const auto inside =
        static_cast<std::int64_t>(s_->count) + s_->uncollected.load(std::memory_order_relaxed);
    scan_interval_ = std::clamp<Nanos>(detail::kScanCostPerParty * inside,
                                       detail::kLivenessInterval, detail::kMaxScanInterval);
    const Nanos wake_period = std::clamp<Nanos>(detail::kWakePerSleeper * inside,
                                                detail::kLivenessInterval, detail::kMaxWakePeriod);
    unlock();
    bool changed = detail::t_barrier_spin.spin(
        [&] { return word.load(std::memory_order_relaxed) != seen; }, peer_cpu_);
    if (!changed) {
      sleepers.fetch_add(1, std::memory_order_seq_cst);
      for (;;) {
        if (word.load(std::memory_order_seq_cst) != seen) {
          changed = true;
          break;
        }
        if (d.passed()) break;
        detail::sleep_on(word, seen, d, wake_period);
        if (word.load(std::memory_order_seq_cst) != seen) {
          changed = true;
          break;
        }
        if (now_ns() - s_->last_reap_ns.load(std::memory_order_relaxed) >= scan_interval_.count())
          break;
      }
      sleepers.fetch_sub(1, std::memory_order_seq_cst);
    }
    lock();
    if (!changed) reap_dead_parties();
  }
  // The waiters of the current round (if any) get BrokenBarrierError (reset, abort).
  void break_current_round() {
    const Deadline forever(nullptr);
    const std::uint32_t round = s_->gen.load(std::memory_order_relaxed);
    while (s_->count > 0 && s_->gen.load(std::memory_order_relaxed) == round) {
      if (s_->uncollected.load() == 0) {
        transition(true, -1);
        break;
      }
      wait_collection(forever);
    }
  }
  void wait_round_change(std::uint32_t seen, const Deadline& d) {
    wait_change(s_->gen, s_->gen_sleepers, seen, d);
  }
  void wait_collection(const Deadline& d) {
    const std::uint32_t u = s_->uncollected.load(std::memory_order_seq_cst);
    if (u != 0) wait_change(s_->uncollected, s_->collect_sleepers, u, d);
  }

 private:
  BS* s_;
  bool held_ = false;
  bool wake_gen_ = false;
  bool wake_collect_ = false;
  bool break_pending_ = false;  // the current round must be broken (dead party, dead lock holder)
  int peer_cpu_ = -1;
  Nanos scan_interval_ = detail::kLivenessInterval;

  static std::int64_t now_ns() noexcept {
    return std::chrono::duration_cast<Nanos>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
  }
};

}  // namespace

Barrier::Barrier(int parties, Action action, std::optional<std::chrono::nanoseconds> timeout)
    : action_(action) {
  if (parties < 1) throw std::invalid_argument("parties must be >= 1");
  state_ = detail::create_state<detail::BarrierState>(
      block_, sizeof(detail::BarrierState) +
                  sizeof(detail::BarrierSlot) * 2 * static_cast<std::size_t>(parties));
  state_->parties = parties;
  state_->timeout_ns = timeout ? std::max<std::int64_t>(timeout->count(), 0) : -1;
}

void Barrier::attach(const std::string& code) {
  state_ = static_cast<detail::BarrierState*>(block_.data());
  action_ = nullptr;
  if (code.empty()) return;
  action_ = reduction::loads<detail::CodeRef>(code).resolve<Action>();
}

std::string Barrier::action_code() const {
  if (!action_) return {};
  return reduction::dumps(detail::CodeRef::of(action_));
}

int Barrier::parties() const noexcept { return state_->parties; }
bool Barrier::broken() const noexcept {
  BarrierGuard g(state_);
  return state_->broken;
}
int Barrier::n_waiting() const noexcept {
  BarrierGuard g(state_);
  return state_->broken ? 0 : state_->count;
}

void Barrier::reset() {
  BarrierGuard g(state_);
  g.break_current_round();
  state_->broken = false;
}

void Barrier::abort() {
  BarrierGuard g(state_);
  state_->broken = true;
  g.break_current_round();
}

MP_CATCHES_FORCED_UNWIND int Barrier::wait_impl(const Nanos* timeout) {
  BS* s = state_;
  Nanos own_default{};
  if (!timeout && s->timeout_ns >= 0) {
    own_default = Nanos(s->timeout_ns);
    timeout = &own_default;
  }
  const Deadline d(timeout);
  BarrierGuard g(s);
  // A full round is being completed (waiting for last round's waiters to read their outcome).
  const Deadline forever(nullptr);
  while (!s->broken && s->count >= s->parties)
    g.wait_round_change(s->gen.load(std::memory_order_relaxed), forever);
  if (s->broken) throw BrokenBarrierError();
  const std::uint32_t round = s->gen.load(std::memory_order_relaxed);
  const int index = s->count++;
  const std::int32_t slot = g.join(round);
  g.note_arrival();
  for (;;) {
    if (s->gen.load(std::memory_order_relaxed) != round) {
      // Our round ended in another party's transition: read its outcome.
      const bool round_broken = s->last_broken;
      g.leave(slot);
      g.collected();
      if (round_broken) throw BrokenBarrierError();
      return index;
    }
    const bool must_break = g.break_pending() || s->broken || d.passed();
    if (must_break || s->count == s->parties) {
      if (s->uncollected.load() != 0) {
        g.wait_collection(d.passed() ? Deadline(nullptr) : d);
        continue;
      }
      bool round_broken = must_break;
      std::exception_ptr action_error;
      if (!round_broken && action_) {
        try {
          action_();
        } catch (const mp::detail::ForcedUnwind&) {
          throw;  // the thread ends (pthread_exit); the guard's destructor releases the barrier
        } catch (...) {
          action_error = std::current_exception();
          round_broken = true;
        }
      }
      if (round_broken) s->broken = true;
      g.transition(round_broken, slot);
      g.leave(slot);
      if (action_error) std::rethrow_exception(action_error);
      if (round_broken) throw BrokenBarrierError();
      return index;
    }
    g.wait_round_change(round, d);
  }
}

}  // namespace mp
