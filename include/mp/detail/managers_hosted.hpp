// mp/detail/managers_hosted.hpp — internals of mp/managers.hpp: the objects SyncManager's server
// hosts (they live in the server process and use its threads' primitives). Not API: proxies
// (mp/managers.hpp) name their member functions to type their calls.
#pragma once

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <limits>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <typeinfo>
#include <utility>
#include <vector>

#include "mp/detail/managers_registry.hpp"
#include "mp/detail/timeout.hpp"
#include "mp/errors.hpp"
#include "mp/export.hpp"

namespace mp::managers::detail {

using Timeout = std::int64_t;  // nanoseconds; negative: none (wait forever)
template <class Rep, class Period>
Timeout to_timeout(std::chrono::duration<Rep, Period> d) {
  return mp::detail::to_nanos(d).count();
}

// threading.Lock / RLock (owner = the serving thread, i.e. the client's connection).
class MP_API LockImpl {
 public:
  explicit LockImpl(bool recursive) : recursive_(recursive) {}
  bool acquire(bool block, Timeout timeout);
  void release();
  bool locked();

 private:
  std::mutex m_;
  std::condition_variable cv_;
  bool recursive_;
  std::size_t count_ = 0;
  std::uint64_t owner_ = 0;
};

class MP_API SemaphoreImpl {
 public:
  SemaphoreImpl(int value, bool bounded);
  bool acquire(bool block, Timeout timeout);
  void release(int n);
  int get_value();

 private:
  std::mutex m_;
  std::condition_variable cv_;
  int value_, initial_;
  bool bounded_;
};

class MP_API ConditionImpl {
 public:
  bool acquire(bool block, Timeout timeout);
  void release();
  bool wait(Timeout timeout);
  void notify(int n);
  void notify_all();

 private:
  bool acquire_locked(std::unique_lock<std::mutex>& lk, bool block, Timeout timeout);
  std::mutex m_;
  std::condition_variable lock_cv_, cond_cv_;
  std::size_t count_ = 0;
  std::uint64_t owner_ = 0;
  std::deque<std::uint64_t> waiters_;  // tickets of waiters not notified yet, oldest first
  std::uint64_t next_ticket_ = 0;
};

class MP_API EventImpl {
 public:
  bool is_set();
  void set();
  void clear();
  bool wait(Timeout timeout);

 private:
  std::mutex m_;
  std::condition_variable cv_;
  bool flag_ = false;
};

class MP_API BarrierImpl {
 public:
  explicit BarrierImpl(int parties);
  int wait(Timeout timeout);
  void reset();
  void abort();
  int parties();
  int n_waiting();
  bool broken();

 private:
  std::mutex m_;
  std::condition_variable cv_;
  int parties_, count_ = 0;
  std::uint64_t generation_ = 0;
  std::uint64_t completed_ = ~std::uint64_t{0};  // the last generation released normally
  bool broken_ = false;
};

class MP_API NamespaceImpl {
 public:
  std::string getattr(std::string name);
  void setattr(std::string name, std::string value);
  void delattr(std::string name);
  bool hasattr(std::string name);
  std::vector<std::string> names();

 private:
  std::mutex m_;
  std::map<std::string, std::string> attrs_;
};

inline bool wait_until_cv(std::condition_variable& cv, std::unique_lock<std::mutex>& lk,
                          Timeout timeout, const std::function<bool()>& ready) {
  if (timeout < 0) {
    cv.wait(lk, ready);
    return true;
  }
  return cv.wait_for(lk, std::chrono::nanoseconds(timeout), ready);
}

// Normalizes a Python index (negative counts from the end). Throws IndexError.
inline std::size_t py_index(std::int64_t i, std::size_t size, const char* what) {
  const std::int64_t n = static_cast<std::int64_t>(size);
  if (i < 0) i += n;
  if (i < 0 || i >= n) throw IndexError(std::string(what) + " index out of range");
  return static_cast<std::size_t>(i);
}

template <class T>
class QueueImpl {
 public:
  explicit QueueImpl(int maxsize) : maxsize_(maxsize) {}
  void put(T item, bool block, Timeout timeout) {
    std::unique_lock lk(m_);
    auto room = [&] { return maxsize_ <= 0 || static_cast<int>(items_.size()) < maxsize_; };
    if (!room()) {
      if (!block || !wait_until_cv(not_full_, lk, timeout, room)) throw Full();
    }
    items_.push_back(std::move(item));
    ++unfinished_;
    not_empty_.notify_one();
  }
  T get(bool block, Timeout timeout) {
    std::unique_lock lk(m_);
    auto ready = [&] { return !items_.empty(); };
    if (!ready()) {
      if (!block || !wait_until_cv(not_empty_, lk, timeout, ready)) throw Empty();
    }
    T item = std::move(items_.front());
    items_.pop_front();
    not_full_.notify_one();
    return item;
  }
  int qsize() {
    std::lock_guard lk(m_);
    return static_cast<int>(items_.size());
  }
  bool empty() { return qsize() == 0; }
  bool full() {
    std::lock_guard lk(m_);
    return maxsize_ > 0 && static_cast<int>(items_.size()) >= maxsize_;
  }
  void task_done() {
    std::lock_guard lk(m_);
    if (unfinished_ == 0) throw std::invalid_argument("task_done() called too many times");
    if (--unfinished_ == 0) all_done_.notify_all();
  }
  bool join(Timeout timeout) {
    std::unique_lock lk(m_);
    return wait_until_cv(all_done_, lk, timeout, [&] { return unfinished_ == 0; });
  }

 private:
  std::mutex m_;
  std::condition_variable not_empty_, not_full_, all_done_;
  std::deque<T> items_;
  int maxsize_;
  std::size_t unfinished_ = 0;
};

template <class T>
class ValueImpl {
 public:
  explicit ValueImpl(T v) : value_(std::move(v)) {}
  T get() {
    std::lock_guard lk(m_);
    return value_;
  }
  void set(T v) {
    std::lock_guard lk(m_);
    value_ = std::move(v);
  }

 private:
  std::mutex m_;
  T value_;
};

// Python list (and the manager's Array, a fixed-size list).
template <class T>
class ListImpl {
 public:
  explicit ListImpl(std::vector<T> v) : v_(std::move(v)) {}
  std::int64_t len() {
    std::lock_guard lk(m_);
    return static_cast<std::int64_t>(v_.size());
  }
  T getitem(std::int64_t i) {
    std::lock_guard lk(m_);
    return v_[py_index(i, v_.size(), "list")];
  }
  void setitem(std::int64_t i, T x) {
    std::lock_guard lk(m_);
    v_[py_index(i, v_.size(), "list assignment")] = std::move(x);
  }
  void append(T x) {
    std::lock_guard lk(m_);
    v_.push_back(std::move(x));
  }
  void extend(std::vector<T> xs) {
    std::lock_guard lk(m_);
    v_.insert(v_.end(), std::make_move_iterator(xs.begin()), std::make_move_iterator(xs.end()));
  }
  void insert(std::int64_t i, T x) {
    std::lock_guard lk(m_);
    const std::int64_t n = static_cast<std::int64_t>(v_.size());
    if (i < 0) i = std::max<std::int64_t>(0, i + n);
    if (i > n) i = n;
    v_.insert(v_.begin() + i, std::move(x));
  }
  T pop(std::int64_t i) {
    std::lock_guard lk(m_);
    if (v_.empty()) throw IndexError("pop from empty list");
    const std::size_t k = py_index(i, v_.size(), "pop");
    T x = std::move(v_[k]);
    v_.erase(v_.begin() + static_cast<std::ptrdiff_t>(k));
    return x;
  }
  std::int64_t index(T x) {
    std::lock_guard lk(m_);
    for (std::size_t k = 0; k < v_.size(); ++k)
      if (v_[k] == x) return static_cast<std::int64_t>(k);
    throw std::invalid_argument("list.index(x): x not in list");
  }
  std::int64_t count(T x) {
    std::lock_guard lk(m_);
    return static_cast<std::int64_t>(std::count(v_.begin(), v_.end(), x));
  }
  bool contains(T x) {
    std::lock_guard lk(m_);
    return std::find(v_.begin(), v_.end(), x) != v_.end();
  }
  void remove(T x) {
    std::lock_guard lk(m_);
    auto it = std::find(v_.begin(), v_.end(), x);
    if (it == v_.end()) throw std::invalid_argument("list.remove(x): x not in list");
    v_.erase(it);
  }
  void reverse() {
    std::lock_guard lk(m_);
    std::reverse(v_.begin(), v_.end());
  }
  void clear() {
    std::lock_guard lk(m_);
    v_.clear();
  }
  std::vector<T> copy() {
    std::lock_guard lk(m_);
    return v_;
  }

 private:
  std::mutex m_;
  std::vector<T> v_;
};

template <class K, class V>
class DictImpl {
 public:
  std::int64_t len() {
    std::lock_guard lk(m_);
    return static_cast<std::int64_t>(items_.size());
  }
  V getitem(K k) {
    std::lock_guard lk(m_);
    auto it = index_.find(k);
    if (it == index_.end()) throw KeyError("key not in dict");
    return items_[it->second].second;
  }
  void setitem(K k, V v) {
    std::lock_guard lk(m_);
    set_locked(std::move(k), std::move(v));
  }
  void delitem(K k) {
    std::lock_guard lk(m_);
    if (!erase_locked(k)) throw KeyError("key not in dict");
  }
  std::optional<V> get(K k) {
    std::lock_guard lk(m_);
    auto it = index_.find(k);
    if (it == index_.end()) return std::nullopt;
    return items_[it->second].second;
  }
  std::optional<V> pop(K k) {
    std::lock_guard lk(m_);
    auto it = index_.find(k);
    if (it == index_.end()) return std::nullopt;
    V v = std::move(items_[it->second].second);
    erase_locked(k);
    return v;
  }
  V setdefault(K k, V v) {
    std::lock_guard lk(m_);
    auto it = index_.find(k);
    if (it != index_.end()) return items_[it->second].second;
    set_locked(std::move(k), v);
    return v;
  }
  bool contains(K k) {
    std::lock_guard lk(m_);
    return index_.count(k) != 0;
  }
  // Python's dict.update(other) with other's pairs in order.
  void update(std::vector<std::pair<K, V>> other) {
    std::lock_guard lk(m_);
    for (auto& [k, v] : other) set_locked(std::move(k), std::move(v));
  }
  void clear() {
    std::lock_guard lk(m_);
    items_.clear();
    index_.clear();
  }
  // The pairs in insertion order (Python's dict order).
  std::vector<std::pair<K, V>> items() {
    std::lock_guard lk(m_);
    return items_;
  }

 private:
  void set_locked(K k, V v) {
    auto it = index_.find(k);
    if (it != index_.end()) {
      items_[it->second].second = std::move(v);  // an existing key keeps its place
      return;
    }
    index_.emplace(k, items_.size());
    items_.emplace_back(std::move(k), std::move(v));
  }
  bool erase_locked(const K& k) {
    auto it = index_.find(k);
    if (it == index_.end()) return false;
    const std::size_t i = it->second;
    index_.erase(it);
    items_.erase(items_.begin() + static_cast<std::ptrdiff_t>(i));
    for (auto& [key, at] : index_)
      if (at > i) --at;
    return true;
  }

  std::mutex m_;
  std::vector<std::pair<K, V>> items_;  // insertion order
  std::map<K, std::size_t> index_;      // key -> position in items_
};

// Template hosted types register themselves, in every process of the program, when the program
// uses their proxy (a static member initialized before main).
template <class T>
struct AutoRegister<QueueImpl<T>> {
  using Impl = QueueImpl<T>;
  static std::string type_id() { return std::string("Queue:") + typeid(T).name(); }
  static inline const bool done = register_type(
      type_id(), &construct<Impl, std::tuple<int>>,
      {MP_DETAIL_METHOD(Impl, put), MP_DETAIL_METHOD(Impl, get), MP_DETAIL_METHOD(Impl, qsize),
       MP_DETAIL_METHOD(Impl, empty), MP_DETAIL_METHOD(Impl, full),
       MP_DETAIL_METHOD(Impl, task_done), MP_DETAIL_METHOD(Impl, join)});
};
template <class T>
struct AutoRegister<ValueImpl<T>> {
  using Impl = ValueImpl<T>;
  static std::string type_id() { return std::string("Value:") + typeid(T).name(); }
  static inline const bool done =
      register_type(type_id(), &construct<Impl, std::tuple<T>>,
                    {MP_DETAIL_METHOD(Impl, get), MP_DETAIL_METHOD(Impl, set)});
};
template <class T>
struct AutoRegister<ListImpl<T>> {
  using Impl = ListImpl<T>;
  static std::string type_id() { return std::string("list:") + typeid(T).name(); }
  static inline const bool done =
      register_type(type_id(), &construct<Impl, std::tuple<std::vector<T>>>,
                    {MP_DETAIL_METHOD(Impl, len), MP_DETAIL_METHOD(Impl, getitem),
                     MP_DETAIL_METHOD(Impl, setitem), MP_DETAIL_METHOD(Impl, append),
                     MP_DETAIL_METHOD(Impl, extend), MP_DETAIL_METHOD(Impl, insert),
                     MP_DETAIL_METHOD(Impl, pop), MP_DETAIL_METHOD(Impl, index),
                     MP_DETAIL_METHOD(Impl, count), MP_DETAIL_METHOD(Impl, contains),
                     MP_DETAIL_METHOD(Impl, remove), MP_DETAIL_METHOD(Impl, reverse),
                     MP_DETAIL_METHOD(Impl, clear), MP_DETAIL_METHOD(Impl, copy)});
};
template <class K, class V>
struct AutoRegister<DictImpl<K, V>> {
  using Impl = DictImpl<K, V>;
  static std::string type_id() {
    return std::string("dict:") + typeid(K).name() + "," + typeid(V).name();
  }
  static inline const bool done = register_type(
      type_id(), &construct<Impl, std::tuple<>>,
      {MP_DETAIL_METHOD(Impl, len), MP_DETAIL_METHOD(Impl, getitem),
       MP_DETAIL_METHOD(Impl, setitem), MP_DETAIL_METHOD(Impl, delitem),
       MP_DETAIL_METHOD(Impl, get), MP_DETAIL_METHOD(Impl, pop), MP_DETAIL_METHOD(Impl, setdefault),
       MP_DETAIL_METHOD(Impl, contains), MP_DETAIL_METHOD(Impl, update),
       MP_DETAIL_METHOD(Impl, clear), MP_DETAIL_METHOD(Impl, items)});
};

}  // namespace mp::managers::detail
