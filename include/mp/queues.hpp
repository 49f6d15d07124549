// mp/queues.hpp — Queue<T>, JoinableQueue<T>, SimpleQueue<T> (CPython: multiprocessing/queues.py).
//
//   mp::Queue<std::string> q;                 // unbounded; Queue<T>(maxsize) is bounded
//   mp::Process p(producer, q); p.start();    // passed to children like any shared object
//   std::string s = q.get(true, 1s);          // mp::Empty after 1 s without an item
//
// How the queue works inside (rings, crash-consistent stores, out-of-band items): docs/queues.md.
//
// Guarantees (beyond CPython)
// - put() returns once the item is in shared memory (or in the kernel, out of band): it is
//   delivered even if the producer exits or is killed right after. There is no feeder thread, so
//   nothing is flushed at exit and joining a producer before draining never deadlocks.
// - A producer or consumer killed in the middle of put()/get() leaves the queue usable: its lock is
//   taken over by the next user (dead-holder recovery) and, because an item only becomes visible
//   or leaves in one store, readers never see a torn item and no completed put is lost. An item
//   being got by a consumer that is killed before its get() committed stays in the queue.
// - get(block, timeout)/put(block, timeout) return within the timeout (plus scheduling delay).
//
// Differences from Python
// - Unbounded queues (maxsize 0) hold up to kRingCapacity (64 MiB) of serialized items in the
//   rings, and about 250 out-of-band items (more than 16 MiB each: what the socket buffer holds);
//   put() waits for room beyond that, as for a bounded queue. qsize() counts at most 2^24 items,
//   and a JoinableQueue at most 2^24 unfinished tasks.
// - close() and join_thread() exist for porting: put() is synchronous, so there is nothing to
//   flush; after close() this handle refuses put()/get() (std::invalid_argument, as CPython's
//   ValueError "Queue ... is closed"). cancel_join_thread() does nothing on POSIX. On Windows a
//   producer waits at exit until consumers took its items larger than half a ring (their memory is
//   taken out of the producer), as CPython's feeder is joined at exit; cancel_join_thread() gives
//   that up (such items are then lost if the producer ends first, as CPython's buffered items).
// - qsize() is exact at the moment it reads the rings (CPython's is approximate).
// - A put() past the hot part of a ring may wait (at most 2 ms, and only while consumers are
//   removing items) for the other ring to empty: a producer far ahead of its consumers is held
//   to their pace for that long, where CPython's feeder thread would buffer without limit.
#pragma once

#include <chrono>
#include <cstddef>
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "mp/detail/timeout.hpp"
#include "mp/errors.hpp"
#include "mp/export.hpp"
#include "mp/heap.hpp"
#include "mp/reduction.hpp"

namespace mp {
namespace detail {

// The calling thread's buffer for serializing an item (lib/queues.cpp).
MP_API std::string& thread_buffer();

// The untyped queue shared by Queue, JoinableQueue and SimpleQueue (lib/queues.cpp).
class MP_API QueueCore {
 public:
  static constexpr std::size_t kRingCapacity = std::size_t{64} << 20;
  using Consumer = void (*)(void* context, const char* data, std::size_t size);

  QueueCore() = default;
  QueueCore(std::uint64_t maxsize, std::uint64_t type_tag);
  // Recycling (the pool's queues): producers move to the other ring whenever it is empty once
  // past its first 64 KiB, so a stream of large items whose consumer keeps up cycles through
  // the starts of the two rings (pages already mapped and cached) instead of through fresh
  // memory up to the hot part's end (4 MiB).
  QueueCore(std::uint64_t maxsize, std::uint64_t type_tag, bool recycle);

  // Commits the concatenation of `parts` as one item. timeout null: wait as long as needed;
  // zero: do not wait. Returns false when full for the whole timeout.
  struct Part {
    const void* data;
    std::size_t size;
  };
  bool put(const Part* parts, std::size_t count, const std::chrono::nanoseconds* timeout);
  bool put(const void* data, std::size_t size, const std::chrono::nanoseconds* timeout) {
    const Part part{data, size};
    return put(&part, 1, timeout);
  }
  // Takes the oldest item, passing its bytes to `consume` (which may throw: the item is then
  // dropped and the exception propagates). Returns false when empty for the whole timeout.
  bool get(Consumer consume, void* context, const std::chrono::nanoseconds* timeout);

  std::size_t qsize() const;
  std::uint64_t maxsize() const;
  // JoinableQueue accounting: task_done() throws std::invalid_argument when called too often;
  // join() waits until every item put has been marked done.
  void task_done();
  void join();
  void close() noexcept;
  bool closed() const noexcept;
  void check_open(const char* what) const;
  // Windows: this process no longer waits at exit for consumers to take its out-of-band items
  // (lib/queues.cpp; nothing to do on POSIX, where a sent item outlives its producer).
  void cancel_join_thread() noexcept;
  explicit operator bool() const noexcept { return static_cast<bool>(state_); }
  // For reuse by this process (the pool's spare queues): when no other process can use this
  // queue any more — this process made it, no child holds a lease on its memory, no other copy
  // of it exists here — empties it, gives its rings' pages back to the OS but for their first
  // ones, and returns true. Else, and on Windows, changes nothing and returns false.
  bool reset_if_held_alone() noexcept;

  // Passed to spawned children as the shared memory and the out-of-band socket's descriptor.
  template <class Archive>
  void save(Archive& ar) const {
    ar(block_, send_token());
  }
  template <class Archive>
  void load(Archive& ar) {
    std::uint64_t token = 0;
    ar(block_, token);
    attach(token);
  }
  // After load: checks the queue was made for items of `type_tag`.
  void check_type(std::uint64_t type_tag) const;

 private:
  struct State;
  struct ProducerSteps;  // lib/queues.cpp: put()'s steps, each with its crash-consistency argument
  struct ConsumerSteps;  // get()'s
  std::uint64_t send_token() const;
  void attach(std::uint64_t token);
  heap::SharedBlock block_;
  std::shared_ptr<State> state_;
};

// Types whose serialized form is [u64 element count][the elements' bytes] (std::string and
// vectors of arithmetic types, as mp/reduction.hpp writes them): the queue copies them straight
// between the object and the ring, without an intermediate buffer.
template <class T>
struct ContiguousBytes : std::false_type {};
template <class C, class Tr, class A>
struct ContiguousBytes<std::basic_string<C, Tr, A>> : std::is_arithmetic<C> {};
template <class U, class A>
struct ContiguousBytes<std::vector<U, A>>
    : std::bool_constant<std::is_arithmetic_v<U> && !std::is_same_v<U, bool>> {};

// Types whose serialized form is their bytes (mp/reduction.hpp writes arithmetic types so, and
// trivially copyable types without a serialize()): copied straight into and out of the ring. A
// bool is left to the archive, which checks that the byte is 0 or 1.
template <class T>
inline constexpr bool kRawBytes = reduction::detail::MemcpySerializable<T> ||
                                  (std::is_arithmetic_v<T> && !std::is_same_v<T, bool>);

template <class T>
class QueueBase {
  static_assert(reduction::is_picklable_v<T>,
                "mp::Queue<T>: T must be serializable (see mp/reduction.hpp). A trivially copyable "
                "struct is sent as raw bytes only if it holds no pointer (use std::string, not "
                "const char*) and mp can check its fields, else give it serialize() or opt in with "
                "mp::reduction::enable_raw_bytes<T>");

 public:
  explicit QueueBase(std::uint64_t maxsize) : core_(maxsize, reduction::detail::type_tag<T>()) {}

  // Queue.put(obj, block, timeout). Throws Full when there is no room (at once if !block),
  // std::invalid_argument "Queue is closed" after close().
  void put(const T& obj) { put_impl(obj, nullptr); }
  template <class Rep = long, class Period = std::ratio<1>>
  void put(const T& obj, bool block,
           std::optional<std::chrono::duration<Rep, Period>> timeout = std::nullopt) {
    std::chrono::nanoseconds t{0};
    if (block && timeout) t = detail::to_nanos(*timeout);
    put_impl(obj, block && !timeout ? nullptr : &t);
  }
  template <class Rep, class Period>
  void put(const T& obj, bool block, std::chrono::duration<Rep, Period> timeout) {
    put(obj, block, std::optional<std::chrono::duration<Rep, Period>>(timeout));
  }
  // put(obj, timeout): Python's q.put(obj, timeout=1) — blocks at most `timeout`. A duration
  // only: a number in second place would be Python's `block`.
  template <class Rep, class Period>
  void put(const T& obj, std::chrono::duration<Rep, Period> timeout) {
    put(obj, true, timeout);
  }
  // Non-blocking: Full when there is no room. Like every non-blocking call it waits at most 100 ms
  // for the queue's lock (held only while one item is copied) before giving up.
  void put_nowait(const T& obj) { put(obj, false); }

  // Queue.get(block, timeout). Throws Empty when no item comes (at once if !block).
  T get() { return get_impl(nullptr); }
  template <class Rep = long, class Period = std::ratio<1>>
  T get(bool block, std::optional<std::chrono::duration<Rep, Period>> timeout = std::nullopt) {
    std::chrono::nanoseconds t{0};
    if (block && timeout) t = detail::to_nanos(*timeout);
    return get_impl(block && !timeout ? nullptr : &t);
  }
  template <class Rep, class Period>
  T get(bool block, std::chrono::duration<Rep, Period> timeout) {
    return get(block, std::optional<std::chrono::duration<Rep, Period>>(timeout));
  }
  // get(timeout): Python's q.get(timeout=1), e.g. q.get(1s) (a number would be Python's `block`).
  template <class Rep, class Period>
  T get(std::chrono::duration<Rep, Period> timeout) {
    return get(true, timeout);
  }
  T get_nowait() { return get(false); }

  std::size_t qsize() const { return core_.qsize(); }
  bool empty() const { return core_.qsize() == 0; }
  bool full() const { return core_.maxsize() != 0 && core_.qsize() >= core_.maxsize(); }
  void close() noexcept { core_.close(); }
  // Throws std::logic_error (CPython: AssertionError) unless close() was called.
  void join_thread() const {
    if (!core_.closed()) throw std::logic_error("Queue.join_thread(): the queue is not closed");
  }
  void cancel_join_thread() noexcept { core_.cancel_join_thread(); }

  template <class Archive>
  void save(Archive& ar) const {
    ar(core_);
  }
  template <class Archive>
  void load(Archive& ar) {
    ar(core_);
    core_.check_type(reduction::detail::type_tag<T>());
  }

 protected:
  QueueCore core_;

 private:
  void put_impl(const T& obj, const std::chrono::nanoseconds* timeout) {
    core_.check_open("put");
    bool ok;
    if constexpr (kRawBytes<T>) {
      ok = core_.put(&obj, sizeof(T), timeout);
    } else if constexpr (ContiguousBytes<T>::value) {
      const std::uint64_t n = obj.size();
      const QueueCore::Part parts[2] = {{&n, sizeof n},
                                        {obj.data(), obj.size() * sizeof(typename T::value_type)}};
      ok = core_.put(parts, 2, timeout);
    } else {
      std::string& buf = detail::thread_buffer();
      buf.clear();
      reduction::dump_into(buf, obj);
      ok = core_.put(buf.data(), buf.size(), timeout);
      if (buf.capacity() > (std::size_t{64} << 20)) std::string().swap(buf);
    }
    if (!ok) throw Full();
  }
  T get_impl(const std::chrono::nanoseconds* timeout) {
    core_.check_open("get");
    std::optional<T> out;
    auto consume = [](void* ctx, const char* data, std::size_t size) {
      if constexpr (kRawBytes<T>) {
        if (size != sizeof(T))
          throw UnpicklingError("corrupt data: wrong size for a trivially copyable value");
        std::memcpy(static_cast<void*>(&static_cast<std::optional<T>*>(ctx)->emplace()), data,
                    sizeof(T));
      } else if constexpr (ContiguousBytes<T>::value) {
        using E = typename T::value_type;
        std::uint64_t n = 0;
        if (size < sizeof n) throw UnpicklingError("truncated data: no length");
        std::memcpy(&n, data, sizeof n);
        if (n > (size - sizeof n) / sizeof(E) || size - sizeof n != n * sizeof(E))
          throw UnpicklingError("corrupt data: a length does not match the message");
        const char* bytes = data + sizeof n;
        if (alignof(E) <= 8 && reinterpret_cast<std::uintptr_t>(bytes) % alignof(E) == 0) {
          // The ring keeps payloads 8-aligned: build from the range in one pass (no zero-fill).
          const E* first = reinterpret_cast<const E*>(bytes);
          static_cast<std::optional<T>*>(ctx)->emplace(first, first + n);
        } else {
          T& value = static_cast<std::optional<T>*>(ctx)->emplace();
          value.resize(n);
          if (n != 0) std::memcpy(value.data(), bytes, n * sizeof(E));
        }
      } else {
        static_cast<std::optional<T>*>(ctx)->emplace(reduction::load_from<T>(data, size));
      }
    };
    if (!core_.get(consume, &out, timeout)) throw Empty();
    return std::move(*out);
  }
};

}  // namespace detail

// multiprocessing.Queue(maxsize): maxsize 0 (or less) is unbounded. A handle: copies (and the
// copies in children) are the same queue.
template <class T>
class Queue : public detail::QueueBase<T> {
 public:
  explicit Queue(long maxsize = 0)
      : detail::QueueBase<T>(maxsize > 0 ? static_cast<std::uint64_t>(maxsize) : 0) {}
};

// multiprocessing.JoinableQueue(maxsize): a Queue whose consumers call task_done() per item got,
// so that join() can wait until every item put has been processed.
template <class T>
class JoinableQueue : public detail::QueueBase<T> {
 public:
  explicit JoinableQueue(long maxsize = 0)
      : detail::QueueBase<T>(maxsize > 0 ? static_cast<std::uint64_t>(maxsize) : 0) {}
  // Throws std::invalid_argument "task_done() called too many times".
  void task_done() { this->core_.task_done(); }
  // Blocks until every item put so far has been marked done.
  void join() { this->core_.join(); }
};

// multiprocessing.SimpleQueue: put, get, empty, close (same ring, unbounded).
template <class T>
class SimpleQueue {
 public:
  SimpleQueue() : q_(0) {}
  void put(const T& obj) { q_.put(obj); }
  T get() { return q_.get(); }
  bool empty() const { return q_.empty(); }
  void close() noexcept { q_.close(); }
  template <class Archive>
  void serialize(Archive& ar) {
    ar(q_);
  }

 private:
  Queue<T> q_;
};

}  // namespace mp
