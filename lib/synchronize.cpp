// lib/synchronize.cpp — Lock, RLock, Semaphore, Event, Condition, Barrier over futex words in
// shared memory (CPython: multiprocessing/synchronize.py, threading.Barrier).
#include "mp/synchronize.hpp"

#include <algorithm>
#include <atomic>
#include <climits>
#include <new>
#include <stdexcept>
#include <tuple>

#include "futex_lock.hpp"
#include "platform/os.hpp"
#include "platform/sync.hpp"

namespace mp {
namespace detail {

using Nanos = std::chrono::nanoseconds;
using platform::Clock;

struct LockState {
  FutexLock lock;
  std::atomic<std::int32_t> owner_tid{0};     // the thread that acquired it (for Condition)
  std::atomic<std::uint32_t> owner_died{0};  // the last acquisition was a take-over
};

struct RLockState {
  FutexLock lock;
  std::atomic<std::int32_t> owner_tid{0};
  std::atomic<std::uint32_t> count{0};
  std::atomic<std::uint32_t> owner_died{0};
};

struct SemaphoreState {
  std::atomic<std::uint32_t> count{0};    // units available; the futex word
  std::atomic<std::uint32_t> waiters{0};  // processes/threads that may sleep on `count`
  std::int32_t max_value = -1;            // BoundedSemaphore's bound; < 0: unbounded
  std::atomic<std::int32_t> signal_cpu{-1};  // where the last release() ran (a spin hint)
};

struct EventState {
  static constexpr std::uint32_t kClear = 0, kSet = 1, kClearWithSleepers = 2;
  std::atomic<std::uint32_t> word{kClear};
  std::atomic<std::int32_t> signal_cpu{-1};  // where the last set() ran (a spin hint)
};

// Condition bookkeeping. `sleepers` waiters not yet notified; `tokens` notifications not yet
// taken. notify(n) moves up to n from sleepers to tokens; a waiter leaves by taking a token, or
// (timed out, under the lock) by taking a token if one is left, else by leaving `sleepers`.
struct ConditionState {
  std::atomic<std::uint32_t> sleepers{0};
  std::atomic<std::uint32_t> tokens{0};  // the futex word waiters sleep on
  std::atomic<std::int32_t> signal_cpu{-1};  // where the last notify() ran (a spin hint)
};

// threading.Barrier's state, guarded by `lock`; `seq` changes on every notify_all.
struct BarrierState {
  static constexpr std::int32_t kFilling = 0, kDraining = 1, kResetting = -1, kBroken = -2;
  FutexLock lock;
  std::atomic<std::uint32_t> seq{0};
  std::int32_t state = kFilling;
  std::int32_t count = 0;
  std::int32_t parties = 0;
  std::int64_t timeout_ns = -1;  // the default timeout; < 0: none
  std::atomic<std::uint32_t> sleepers{0};  // parties that may sleep on `seq`
  // Followed by `parties` slots: the pid of each party inside wait(), 0 for a free slot.
  std::atomic<std::int32_t>* slots() noexcept { return reinterpret_cast<std::atomic<std::int32_t>*>(this + 1); }
};
static_assert(alignof(BarrierState) >= alignof(std::atomic<std::int32_t>));

namespace {

// How often sleepers that depend on other processes check whether those died.
constexpr Nanos kLivenessInterval = std::chrono::milliseconds(10);

// A deadline from an optional timeout (null: none). Very long timeouts count as none.
class Deadline {
 public:
  explicit Deadline(const Nanos* timeout) {
    if (timeout && *timeout < std::chrono::hours(24 * 365 * 100)) {
      forever_ = false;
      at_ = Clock::now() + std::max(*timeout, Nanos::zero());
    }
  }
  bool forever() const noexcept { return forever_; }
  bool passed() const { return !forever_ && Clock::now() >= at_; }
  // What is left, at most `cap`.
  Nanos left(Nanos cap = Nanos::max()) const {
    if (forever_) return cap;
    return std::clamp<Nanos>(at_ - Clock::now(), Nanos::zero(), cap);
  }

 private:
  bool forever_ = true;
  Clock::time_point at_{};
};

// Takes one unit from `word` if it is positive.
bool take_unit(std::atomic<std::uint32_t>& word) noexcept {
  std::uint32_t c = word.load(std::memory_order_seq_cst);
  while (c > 0) {
    if (word.compare_exchange_weak(c, c - 1, std::memory_order_seq_cst, std::memory_order_relaxed)) return true;
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
  block = heap::SharedBlock(size);
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

bool Lock::acquire_impl(const Nanos* timeout) {
  const Acquire r = state_->lock.acquire(timeout);
  if (r == Acquire::timed_out) return false;
  state_->owner_tid.store(platform::cached_tid(), std::memory_order_relaxed);
  state_->owner_died.store(r == Acquire::owner_died ? 1 : 0, std::memory_order_relaxed);
  return true;
}

void Lock::release() {
  state_->owner_tid.store(0, std::memory_order_relaxed);
  if (!state_->lock.release()) detail::throw_released_too_many();
}

bool Lock::previous_owner_died() const noexcept { return state_->owner_died.load(std::memory_order_relaxed) != 0; }
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
bool RLock::previous_owner_died() const noexcept { return state_->owner_died.load(std::memory_order_relaxed) != 0; }

bool RLock::acquire_impl(const Nanos* timeout) {
  if (is_mine()) {
    state_->count.fetch_add(1, std::memory_order_relaxed);
    return true;
  }
  const Acquire r = state_->lock.acquire(timeout);
  if (r == Acquire::timed_out) return false;
  state_->owner_tid.store(platform::cached_tid(), std::memory_order_relaxed);
  state_->count.store(1, std::memory_order_relaxed);
  state_->owner_died.store(r == Acquire::owner_died ? 1 : 0, std::memory_order_relaxed);
  return true;
}

void RLock::release() {
  if (!is_mine()) throw std::logic_error("cannot release un-acquired lock");
  if (state_->count.fetch_sub(1, std::memory_order_relaxed) == 1) {
    state_->owner_tid.store(0, std::memory_order_relaxed);
    state_->lock.release();
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
  state_->owner_tid.store(platform::cached_tid(), std::memory_order_relaxed);
  state_->count.store(depth, std::memory_order_relaxed);
  state_->owner_died.store(r == Acquire::owner_died ? 1 : 0, std::memory_order_relaxed);
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
  if (detail::spin_until([&] { return detail::take_unit(count); },
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
    if (c >= static_cast<std::uint32_t>(INT_MAX)) throw std::overflow_error("semaphore value overflow");
  } while (!count.compare_exchange_weak(c, c + 1, std::memory_order_seq_cst, std::memory_order_relaxed));
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
  if (detail::spin_until([&] { return word.load(std::memory_order_relaxed) == S::kSet; },
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
  state_->sleepers.fetch_add(1);
  // Release the lock completely (all RLock levels), remembering how to restore it.
  unsigned depth = 0;
  if (auto* r = std::get_if<RLock>(&lock_)) {
    depth = r->release_save();
  } else {
    std::get<Lock>(lock_).release();
  }
  bool woken = false;
  try {
    if (!(timeout && *timeout <= Nanos::zero())) {
      woken = detail::spin_until([&] { return detail::take_unit(tokens); },
                                 state_->signal_cpu.load(std::memory_order_relaxed));
      if (!woken) {
              const Deadline d(timeout);
        while (!woken && !d.passed()) {
          detail::sleep_on(tokens, 0, d);
          woken = detail::take_unit(tokens);
        }
      }
    }
  } catch (...) {
    woken = false;  // fall through: restore the lock before rethrowing
    if (auto* r = std::get_if<RLock>(&lock_)) r->acquire_restore(depth); else std::get<Lock>(lock_).acquire();
    if (!detail::take_unit(tokens)) state_->sleepers.fetch_sub(1);
    throw;
  }
  if (auto* r = std::get_if<RLock>(&lock_)) {
    r->acquire_restore(depth);
  } else {
    std::get<Lock>(lock_).acquire();
  }
  if (!woken) {
    // Timed out. Under the lock no notify runs: either a notification meant for the waiters is
    // still unclaimed (take it: we count as notified) or we are still among the sleepers.
    if (detail::take_unit(tokens)) {
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
  platform::wake_address(&state_->tokens, static_cast<int>(std::min<std::uint32_t>(k, INT_MAX)));
}

void Condition::notify_all() { notify(INT_MAX); }

// ---- Barrier ----------------------------------------------------------------------------------

namespace {

using BS = detail::BarrierState;

// Holds the barrier's lock. A take-over from a dead holder breaks the barrier (its state may be
// half-updated) after clearing the slots of dead parties.
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
      reap_dead_parties();
      s_->state = BS::kBroken;
      notify_all();
    }
    held_ = true;
  }
  // Wakes every sleeper; the wake-up itself is issued when the lock is released, so that the
  // woken parties do not run only to find the lock still held.
  void notify_all() {
    s_->seq.fetch_add(1, std::memory_order_seq_cst);
    wake_pending_ = true;
  }
  void unlock() noexcept {
    s_->lock.release();
    held_ = false;
    if (wake_pending_) {
      wake_pending_ = false;
      if (s_->sleepers.load(std::memory_order_seq_cst) != 0) {
        try {
          platform::wake_address(&s_->seq, INT_MAX);
        } catch (...) {
        }
      }
    }
  }
  // Removes parties whose process ended while inside wait(); a barrier still filling breaks.
  void reap_dead_parties() {
    bool any = false;
    for (std::int32_t i = 0; i < s_->parties; ++i) {
      const int pid = s_->slots()[i].load(std::memory_order_relaxed);
      if (pid != 0 && platform::process_dead(pid)) {
        s_->slots()[i].store(0, std::memory_order_relaxed);
        if (s_->count > 0) --s_->count;
        any = true;
      }
    }
    if (!any) return;
    if (s_->state == BS::kFilling) s_->state = BS::kBroken;
    if (s_->count == 0 && (s_->state == BS::kResetting || s_->state == BS::kDraining)) s_->state = BS::kFilling;
    notify_all();
  }
  // Condition.wait() on the barrier: releases the lock until `seq` changes, the deadline passes or
  // a liveness interval ends; then re-acquires it and checks for dead parties.
  void wait_change(const Deadline& d) {
    const std::uint32_t seen = s_->seq.load(std::memory_order_seq_cst);
    unlock();
    // Every party notifies, so no CPU hint: the adaptive budget alone decides.
    bool changed = detail::spin_until([&] { return s_->seq.load(std::memory_order_relaxed) != seen; });
    if (!changed) {
      // Announce the sleeper before the last check (notify_all bumps seq, then reads sleepers).
      s_->sleepers.fetch_add(1, std::memory_order_seq_cst);
      if (s_->seq.load(std::memory_order_seq_cst) == seen)
        detail::sleep_on(s_->seq, seen, d, detail::kLivenessInterval);
      s_->sleepers.fetch_sub(1, std::memory_order_seq_cst);
      changed = s_->seq.load() != seen;
    }
    lock();
    if (!changed) reap_dead_parties();
  }

 private:
  BS* s_;
  bool held_ = false;
  bool wake_pending_ = false;
};

}  // namespace

Barrier::Barrier(int parties, Action action, std::optional<std::chrono::nanoseconds> timeout)
    : action_(action) {
  if (parties < 1) throw std::invalid_argument("parties must be >= 1");
  state_ = detail::create_state<detail::BarrierState>(
      block_, sizeof(detail::BarrierState) + sizeof(std::atomic<std::int32_t>) * static_cast<std::size_t>(parties));
  state_->parties = parties;
  state_->timeout_ns = timeout ? std::max<std::int64_t>(timeout->count(), 0) : -1;
}

void Barrier::attach(const std::string& code) {
  state_ = static_cast<detail::BarrierState*>(block_.data());
  action_ = nullptr;
  if (code.empty()) return;
  const auto [module, build_id, offset] =
      reduction::loads<std::tuple<std::string, std::string, std::uint64_t>>(code);
  action_ = reinterpret_cast<Action>(platform::resolve_code(platform::CodeLocation{module, build_id, offset}));
}

std::string Barrier::action_code() const {
  if (!action_) return {};
  const auto loc = platform::locate_code(reinterpret_cast<const void*>(action_));
  return reduction::dumps(std::make_tuple(loc.module, loc.build_id, loc.offset));
}

int Barrier::parties() const noexcept { return state_->parties; }
bool Barrier::broken() const noexcept {
  BarrierGuard g(state_);
  return state_->state == BS::kBroken;
}
int Barrier::n_waiting() const noexcept {
  BarrierGuard g(state_);
  return state_->state == BS::kFilling ? state_->count : 0;
}

void Barrier::reset() {
  BarrierGuard g(state_);
  if (state_->count > 0) {
    if (state_->state == BS::kFilling || state_->state == BS::kBroken) state_->state = BS::kResetting;
  } else {
    state_->state = BS::kFilling;
  }
  g.notify_all();
}

void Barrier::abort() {
  BarrierGuard g(state_);
  state_->state = BS::kBroken;
  g.notify_all();
}

int Barrier::wait_impl(const Nanos* timeout) {
  BS* s = state_;
  Nanos own_default{};
  if (!timeout && s->timeout_ns >= 0) {
    own_default = Nanos(s->timeout_ns);
    timeout = &own_default;
  }
  const Deadline d(timeout);
  const Deadline forever(nullptr);
  BarrierGuard g(s);
  // _enter: wait while the previous round drains or a reset completes.
  while (s->state == BS::kDraining || s->state == BS::kResetting) g.wait_change(forever);
  if (s->state < 0) throw BrokenBarrierError();
  const int index = s->count++;
  std::int32_t slot = 0;
  while (slot < s->parties && s->slots()[slot].load(std::memory_order_relaxed) != 0) ++slot;
  if (slot < s->parties) s->slots()[slot].store(platform::cached_pid(), std::memory_order_relaxed);

  // _exit, run on every way out while holding the lock.
  auto leave = [&] {
    if (slot < s->parties) s->slots()[slot].store(0, std::memory_order_relaxed);
    if (s->count > 0) --s->count;
    if (s->count == 0 && (s->state == BS::kResetting || s->state == BS::kDraining)) {
      s->state = BS::kFilling;
      g.notify_all();
    }
  };

  try {
    if (index + 1 == s->parties) {
      try {
        if (action_) action_();
      } catch (...) {
        s->state = BS::kBroken;
        g.notify_all();
        throw;
      }
      s->state = BS::kDraining;
      g.notify_all();
    } else {
      while (s->state == BS::kFilling) {
        if (d.passed()) {
          s->state = BS::kBroken;
          g.notify_all();
          throw BrokenBarrierError();
        }
        g.wait_change(d);
      }
      if (s->state < 0) throw BrokenBarrierError();
    }
  } catch (...) {
    leave();
    throw;
  }
  leave();
  return index;
}

}  // namespace mp
