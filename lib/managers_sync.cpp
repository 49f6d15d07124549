// SyncManager's hosted types (mp/detail/managers_hosted.hpp): the server-side threading
// primitives behind Lock, RLock, Semaphore, Condition, Event, Barrier and Namespace proxies, and
// their registration under CPython's type ids.
#include <algorithm>
#include <atomic>
#include <climits>
#include <limits>
#include <map>
#include <string>
#include <tuple>

#include "managers_server.hpp"
#include "mp/detail/managers_hosted.hpp"

namespace mp::managers::detail {
namespace {

// The serving thread stands for the client connection (as CPython's per-connection threads).
constinit std::atomic<std::uint64_t> g_next_token{1};
std::uint64_t this_thread_token() {
  thread_local const std::uint64_t token = g_next_token++;
  return token;
}

}  // namespace

bool LockImpl::acquire(bool block, Timeout timeout) {
  const std::uint64_t me = this_thread_token();
  std::unique_lock lk(m_);
  if (recursive_ && count_ > 0 && owner_ == me) {
    ++count_;
    return true;
  }
  auto free = [&] { return count_ == 0; };
  if (!free() && (!block || !wait_until_cv(cv_, lk, timeout, free))) return false;
  count_ = 1;
  owner_ = me;
  return true;
}

void LockImpl::release() {
  std::lock_guard lk(m_);
  if (recursive_) {
    if (count_ == 0 || owner_ != this_thread_token())
      throw std::runtime_error("cannot release un-acquired lock");
  } else if (count_ == 0) {
    throw std::runtime_error("release unlocked lock");
  }
  if (--count_ == 0) {
    owner_ = 0;
    cv_.notify_one();
  }
}

bool LockImpl::locked() {
  std::lock_guard lk(m_);
  return count_ > 0;
}

SemaphoreImpl::SemaphoreImpl(int value, bool bounded)
    : value_(value), initial_(value), bounded_(bounded) {
  if (value < 0) throw std::invalid_argument("semaphore initial value must be >= 0");
}

bool SemaphoreImpl::acquire(bool block, Timeout timeout) {
  std::unique_lock lk(m_);
  auto ready = [&] { return value_ > 0; };
  if (!ready() && (!block || !wait_until_cv(cv_, lk, timeout, ready))) return false;
  --value_;
  return true;
}

void SemaphoreImpl::release(int n) {
  if (n < 1) throw std::invalid_argument("n must be one or more");
  std::lock_guard lk(m_);
  // Compared without forming value_ + n: n comes from a client and may be as large as INT_MAX.
  if (bounded_ && n > initial_ - value_)
    throw std::invalid_argument("Semaphore released too many times");
  if (n > INT_MAX - value_) throw std::overflow_error("semaphore value overflow");
  value_ += n;
  if (n == 1)
    cv_.notify_one();
  else
    cv_.notify_all();
}

int SemaphoreImpl::get_value() {
  std::lock_guard lk(m_);
  return value_;
}

bool ConditionImpl::acquire_locked(std::unique_lock<std::mutex>& lk, bool block, Timeout timeout) {
  const std::uint64_t me = this_thread_token();
  if (count_ > 0 && owner_ == me) {
    ++count_;
    return true;
  }
  auto free = [&] { return count_ == 0; };
  if (!free() && (!block || !wait_until_cv(lock_cv_, lk, timeout, free))) return false;
  count_ = 1;
  owner_ = me;
  return true;
}

bool ConditionImpl::acquire(bool block, Timeout timeout) {
  std::unique_lock lk(m_);
  return acquire_locked(lk, block, timeout);
}

void ConditionImpl::release() {
  std::lock_guard lk(m_);
  if (count_ == 0 || owner_ != this_thread_token())
    throw std::runtime_error("cannot release un-acquired lock");
  if (--count_ == 0) {
    owner_ = 0;
    lock_cv_.notify_one();
  }
}

bool ConditionImpl::wait(Timeout timeout) {
  std::unique_lock lk(m_);
  const std::uint64_t me = this_thread_token();
  if (count_ == 0 || owner_ != me) throw std::runtime_error("cannot wait on un-acquired lock");
  const std::uint64_t ticket = next_ticket_++;
  waiters_.push_back(ticket);
  const std::size_t saved = count_;
  count_ = 0;
  owner_ = 0;
  lock_cv_.notify_one();
  auto notified = [&] {
    return std::find(waiters_.begin(), waiters_.end(), ticket) == waiters_.end();
  };
  const bool ok = wait_until_cv(cond_cv_, lk, timeout, notified);
  if (!ok) waiters_.erase(std::find(waiters_.begin(), waiters_.end(), ticket));
  lock_cv_.wait(lk, [&] { return count_ == 0; });
  count_ = saved;
  owner_ = me;
  return ok;
}

void ConditionImpl::notify(int n) {
  std::lock_guard lk(m_);
  if (count_ == 0 || owner_ != this_thread_token())
    throw std::runtime_error("cannot notify on un-acquired lock");
  for (int i = 0; i < n && !waiters_.empty(); ++i) waiters_.pop_front();
  cond_cv_.notify_all();
}

void ConditionImpl::notify_all() { notify(std::numeric_limits<int>::max()); }

bool EventImpl::is_set() {
  std::lock_guard lk(m_);
  return flag_;
}
void EventImpl::set() {
  std::lock_guard lk(m_);
  flag_ = true;
  cv_.notify_all();
}
void EventImpl::clear() {
  std::lock_guard lk(m_);
  flag_ = false;
}
bool EventImpl::wait(Timeout timeout) {
  std::unique_lock lk(m_);
  return wait_until_cv(cv_, lk, timeout, [&] { return flag_; });
}

BarrierImpl::BarrierImpl(int parties) : parties_(parties) {
  if (parties < 1) throw std::invalid_argument("parties must be >= 1");
}

int BarrierImpl::wait(Timeout timeout) {
  std::unique_lock lk(m_);
  if (broken_) throw BrokenBarrierError();
  const std::uint64_t gen = generation_;
  const int index = count_++;
  if (count_ == parties_) {
    count_ = 0;
    completed_ = gen;
    ++generation_;
    cv_.notify_all();
    return index;
  }
  const bool ok = wait_until_cv(cv_, lk, timeout, [&] { return generation_ != gen || broken_; });
  if (generation_ != gen) {
    if (completed_ == gen) return index;
    throw BrokenBarrierError();  // reset() while waiting
  }
  --count_;
  if (!ok) {
    broken_ = true;  // a timeout breaks the barrier for everyone (as threading.Barrier)
    cv_.notify_all();
  }
  throw BrokenBarrierError();
}

void BarrierImpl::reset() {
  std::lock_guard lk(m_);
  ++generation_;
  count_ = 0;
  broken_ = false;
  cv_.notify_all();
}
void BarrierImpl::abort() {
  std::lock_guard lk(m_);
  broken_ = true;
  cv_.notify_all();
}
int BarrierImpl::parties() { return parties_; }
int BarrierImpl::n_waiting() {
  std::lock_guard lk(m_);
  return count_;
}
bool BarrierImpl::broken() {
  std::lock_guard lk(m_);
  return broken_;
}

std::string NamespaceImpl::getattr(std::string name) {
  std::lock_guard lk(m_);
  auto it = attrs_.find(name);
  if (it == attrs_.end())
    throw std::out_of_range("AttributeError: 'Namespace' object has no attribute '" + name + "'");
  return it->second;
}
void NamespaceImpl::setattr(std::string name, std::string value) {
  std::lock_guard lk(m_);
  attrs_[std::move(name)] = std::move(value);
}
void NamespaceImpl::delattr(std::string name) {
  std::lock_guard lk(m_);
  if (attrs_.erase(name) == 0)
    throw std::out_of_range("AttributeError: 'Namespace' object has no attribute '" + name + "'");
}
bool NamespaceImpl::hasattr(std::string name) {
  std::lock_guard lk(m_);
  return attrs_.count(name) != 0;
}
std::vector<std::string> NamespaceImpl::names() {
  std::lock_guard lk(m_);
  std::vector<std::string> out;
  for (auto& [k, v] : attrs_) out.push_back(k);
  return out;
}

namespace {

template <class T, class... A>
std::shared_ptr<void> make_with(const char* data, std::size_t size, A... fixed) {
  if constexpr (std::is_same_v<T, SemaphoreImpl> || std::is_same_v<T, BarrierImpl>) {
    auto [n] = load_args<std::tuple<int>>(data, size);
    return std::make_shared<T>(n, fixed...);
  } else {
    load_args<std::tuple<>>(data, size);
    return std::make_shared<T>(fixed...);
  }
}

}  // namespace

void register_builtins(std::map<std::string, TypeInfo>& r) {
  auto add = [&r](const char* name, Factory f, std::vector<MethodEntry> methods) {
    TypeInfo& t = r[name];
    t.factory = f;
    for (const MethodEntry& m : methods) t.methods.emplace(m.name, m.invoke);
  };
  const std::vector<MethodEntry> lock{MP_DETAIL_METHOD(LockImpl, acquire),
                                      MP_DETAIL_METHOD(LockImpl, release),
                                      MP_DETAIL_METHOD(LockImpl, locked)};
  add(
      "Lock", [](const char* d, std::size_t n) { return make_with<LockImpl>(d, n, false); }, lock);
  add(
      "RLock", [](const char* d, std::size_t n) { return make_with<LockImpl>(d, n, true); }, lock);
  const std::vector<MethodEntry> sem{MP_DETAIL_METHOD(SemaphoreImpl, acquire),
                                     MP_DETAIL_METHOD(SemaphoreImpl, release),
                                     MP_DETAIL_METHOD(SemaphoreImpl, get_value)};
  add(
      "Semaphore",
      [](const char* d, std::size_t n) { return make_with<SemaphoreImpl>(d, n, false); }, sem);
  add(
      "BoundedSemaphore",
      [](const char* d, std::size_t n) { return make_with<SemaphoreImpl>(d, n, true); }, sem);
  add("Condition", [](const char* d, std::size_t n) { return make_with<ConditionImpl>(d, n); },
      {MP_DETAIL_METHOD(ConditionImpl, acquire), MP_DETAIL_METHOD(ConditionImpl, release),
       MP_DETAIL_METHOD(ConditionImpl, wait), MP_DETAIL_METHOD(ConditionImpl, notify),
       MP_DETAIL_METHOD(ConditionImpl, notify_all)});
  add("Event", [](const char* d, std::size_t n) { return make_with<EventImpl>(d, n); },
      {MP_DETAIL_METHOD(EventImpl, is_set), MP_DETAIL_METHOD(EventImpl, set),
       MP_DETAIL_METHOD(EventImpl, clear), MP_DETAIL_METHOD(EventImpl, wait)});
  add("Barrier", [](const char* d, std::size_t n) { return make_with<BarrierImpl>(d, n); },
      {MP_DETAIL_METHOD(BarrierImpl, wait), MP_DETAIL_METHOD(BarrierImpl, reset),
       MP_DETAIL_METHOD(BarrierImpl, abort), MP_DETAIL_METHOD(BarrierImpl, parties),
       MP_DETAIL_METHOD(BarrierImpl, n_waiting), MP_DETAIL_METHOD(BarrierImpl, broken)});
  add("Namespace", [](const char* d, std::size_t n) { return make_with<NamespaceImpl>(d, n); },
      {MP_DETAIL_METHOD(NamespaceImpl, getattr), MP_DETAIL_METHOD(NamespaceImpl, setattr),
       MP_DETAIL_METHOD(NamespaceImpl, delattr), MP_DETAIL_METHOD(NamespaceImpl, hasattr),
       MP_DETAIL_METHOD(NamespaceImpl, names)});
}

}  // namespace mp::managers::detail
