// mp/sharedctypes.hpp — Value, Array, RawValue, RawArray (CPython: multiprocessing/sharedctypes.py).
//
// A value or an array of a trivially copyable T (the C++ form of ctypes' type codes 'i', 'd',
// 'c', ... and of ctypes structures) in shared memory. Each is a copyable handle: copies, and the
// copies a child gets when it is a Process argument (fork or spawn) or inside another serialized
// object, see the same memory. The memory comes from the shared heap (mp/heap.hpp: no descriptor
// per object) and is reused once no process holds it; nothing outlives the program, even after
// SIGKILL. Serialized: the block (heap::SharedBlock::Wire), then for Value/Array the lock.
//
// Indivisible access: value()/set_value() and element reads/writes through operator[] are each a
// single indivisible load or store — std::atomic_ref (relaxed) when T is lock-free, else a copy
// under a small private robust lock (a process killed during the copy cannot block the others).
// So `v.set_value(v.value() + 1)` races between processes exactly as Python's `v.value += 1`,
// without undefined behaviour; hold get_lock() to make it atomic.
// Python: Value's `.value` takes the lock on each access in CPython; here value()/set_value() are
// indivisible without it, and get_lock() is for compound updates (the documented Python idiom).
//
// Sizes (CPython's exceptions for RawArray('i', n)): a negative size throws std::invalid_argument
// "Array length must be >= 0, not -1" (ValueError); a size whose bytes overflow or exceed the
// address space (more than PTRDIFF_MAX bytes) throws std::overflow_error "array too large"
// (OverflowError); a block larger than the machine's RAM plus swap, which could never be backed,
// throws std::bad_alloc (MemoryError) at once. Smaller blocks are reserved, not committed: pages are
// zero-filled on first touch (CPython zero-fills at creation, so an array that fits address space
// but not memory fails there, or is killed by the OOM killer; here that happens when it is used).
// A mapping the OS refuses throws OSError (ENOMEM).
#pragma once

#include <algorithm>
#include <concepts>
#include <climits>
#include <new>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <iterator>
#include <optional>
#include <ostream>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <variant>
#include <vector>

#include "mp/export.hpp"
#include "mp/heap.hpp"
#include "mp/synchronize.hpp"

#if __has_include(<format>)
#  include <format>
#endif

namespace mp {

// A Lock or an RLock: the lock of a synchronized Value/Array (CPython accepts either).
// Lockable (lock/unlock/try_lock/try_lock_for/try_lock_until) and acquire/release as both.
class AnyLock : public detail::Lockable<AnyLock> {
 public:
  AnyLock() = default;  // a new RLock, CPython's default
  AnyLock(RLock lock) : lock_(std::move(lock)) {}
  AnyLock(Lock lock) : lock_(std::move(lock)) {}

  bool acquire(bool block = true) {
    return std::visit([&](auto& l) { return l.acquire(block); }, lock_);
  }
  template <class Rep, class Period>
  bool acquire(bool block, std::chrono::duration<Rep, Period> timeout) {
    return std::visit([&](auto& l) { return l.acquire(block, timeout); }, lock_);
  }
  void release() {
    std::visit([](auto& l) { l.release(); }, lock_);
  }
  bool previous_owner_died() const noexcept {
    return std::visit([](const auto& l) { return l.previous_owner_died(); }, lock_);
  }
  // The lock itself, or nullptr if it is of the other kind.
  RLock* rlock() noexcept { return std::get_if<RLock>(&lock_); }
  Lock* plain_lock() noexcept { return std::get_if<Lock>(&lock_); }

  template <class Archive>
  void serialize(Archive& ar) {
    ar(lock_);
  }

 private:
  std::variant<RLock, Lock> lock_;
};

namespace detail {

// The bytes of a block of `count` elements of `elem` bytes after `offset` bytes; throws
// std::overflow_error "array too large" beyond the address space (see the file comment).
inline std::size_t block_bytes(std::size_t count, std::size_t elem, std::size_t offset) {
  constexpr auto kMax = static_cast<std::size_t>(PTRDIFF_MAX);
  const std::size_t room = offset > 64 ? offset : 64;  // at least the heap's headers (mp/heap.hpp)
  if (count > (kMax - room) / (elem ? elem : 1)) throw std::overflow_error("array too large");
  return offset + count * elem;
}

// An array length given as any integer; a negative one throws std::invalid_argument (ValueError).
template <std::integral I>
std::size_t array_length(I n) {
  if constexpr (std::is_signed_v<I>) {
    if (n < 0) throw std::invalid_argument("Array length must be >= 0, not " + std::to_string(n));
  }
  if constexpr (sizeof(I) > sizeof(std::size_t)) {
    if (static_cast<std::make_unsigned_t<I>>(n) > SIZE_MAX)
      throw std::overflow_error("array too large");
  }
  return static_cast<std::size_t>(n);
}

// Whether T can be loaded and stored indivisibly in place with std::atomic_ref.
template <class T>
inline constexpr bool kIndivisible = std::atomic_ref<T>::is_always_lock_free &&
                                     alignof(T) >= std::atomic_ref<T>::required_alignment;

// The shared block's layout: the data at the start for types loaded and stored indivisibly; for
// others a 4-byte guard word, then the data at kDataOffset (aligned for T).
template <class T>
inline constexpr std::size_t kDataOffset = kIndivisible<T> ? 0
                                                           : (alignof(T) > 64 ? alignof(T) : 64);
template <class T>
inline constexpr std::size_t kBlockAlign = alignof(T) > 16 ? alignof(T) : 16;

// memcpy under the block's guard word (a robust lock; lib/sharedctypes.cpp).
MP_API void guarded_copy(void* block_base, void* dst, const void* src, std::size_t size);

template <class T>
T load(void* base, const T* p) {
  if constexpr (kIndivisible<T>) {
    return std::atomic_ref<T>(*const_cast<T*>(p)).load(std::memory_order_relaxed);
  } else {
    alignas(T) unsigned char buf[sizeof(T)];
    guarded_copy(base, buf, p, sizeof(T));
    T out;
    std::memcpy(static_cast<void*>(&out), buf, sizeof(T));
    return out;
  }
}

template <class T>
void store(void* base, T* p, const T& v) {
  if constexpr (kIndivisible<T>) {
    std::atomic_ref<T>(*p).store(v, std::memory_order_relaxed);
  } else {
    guarded_copy(base, p, &v, sizeof(T));
  }
}

// What RawValue/RawArray (and Value/Array over them) accept as T: a ctypes-like type, one whose
// bytes mean the same in another process. Each failed rule is a compile error naming it.
template <class T>
struct SharedCTypeCheck {
  static_assert(
      std::is_trivially_copyable_v<T>,
      "mp::Value/Array/RawValue/RawArray<T>: T must be trivially copyable (a plain type or a "
      "struct of plain types, like ctypes types); use a manager for other types");
  static_assert(!std::is_pointer_v<T>,
                "mp::Value/Array<T>: a pointer means nothing in another process");
  static constexpr bool ok = true;
};
template <class T>
inline constexpr bool kSharedCType = SharedCTypeCheck<T>::ok;

}  // namespace detail

// ---------------------------------------------------------------------------------------------
// RawValue<T> (sharedctypes.RawValue): a T in shared memory, without a lock.
template <class T>
class RawValue {
  static_assert(detail::kSharedCType<T>);

 public:
  using value_type = T;

  // A new value in shared memory, value-initialised (T()) in place — no T is built on the stack, so
  // T may be larger than the stack — or a copy of `initial`. Throws OSError or std::bad_alloc.
  RawValue()
      : block_(detail::block_bytes(1, sizeof(T), detail::kDataOffset<T>), detail::kBlockAlign<T>) {
    attach();
    // The block is zero-filled, which is what T() is for a trivially default-constructible T: its
    // pages stay uncommitted until used.
    if constexpr (!std::is_trivially_default_constructible_v<T>)
      ::new (static_cast<void*>(ptr_)) T();
  }
  explicit RawValue(const T& initial)
      : block_(detail::block_bytes(1, sizeof(T), detail::kDataOffset<T>), detail::kBlockAlign<T>) {
    attach();
    std::memcpy(static_cast<void*>(ptr_), &initial, sizeof(T));
  }

  // One indivisible load / store (see the file comment).
  T value() const { return detail::load(block_base_, ptr_); }
  void set_value(const T& v) { detail::store(block_base_, ptr_, v); }
  // Direct access to the shared T (plain, not indivisible: hold a lock around concurrent use).
  T& get_obj() const noexcept { return *ptr_; }

  template <class Archive>
  void save(Archive& ar) const {
    ar(block_);
  }
  template <class Archive>
  void load(Archive& ar) {
    ar(block_);
    if (block_.size() < detail::kDataOffset<T> + sizeof(T))
      throw UnpicklingError("RawValue: shared memory received is too small for the type");
    attach();
  }

 private:
  void attach() {
    block_base_ = block_.data();
    ptr_ = reinterpret_cast<T*>(static_cast<unsigned char*>(block_base_) + detail::kDataOffset<T>);
  }
  heap::SharedBlock block_;
  void* block_base_ = nullptr;
  T* ptr_ = nullptr;
};

// Value<T> (multiprocessing.Value): a RawValue with a lock — a new RLock by default, or the given
// Lock/RLock (so several values can share one lock).
template <class T>
class Value {
 public:
  using value_type = T;

  Value() {}  // T() in place (see RawValue())
  explicit Value(const T& initial) : raw_(initial) {}
  Value(const T& initial, Lock lock) : raw_(initial), lock_(std::move(lock)) {}
  Value(const T& initial, RLock lock) : raw_(initial), lock_(std::move(lock)) {}
  Value(const T& initial, AnyLock lock) : raw_(initial), lock_(std::move(lock)) {}

  T value() const { return raw_.value(); }
  void set_value(const T& v) { raw_.set_value(v); }
  // The lock (CPython: get_lock()); std::lock_guard guard(v.get_lock());
  AnyLock& get_lock() noexcept { return lock_; }
  // The shared T itself, for direct access under the lock (CPython: get_obj()). Plain memory:
  // concurrent use without the lock is a data race.
  T& get_obj() const noexcept { return raw_.get_obj(); }
  // The same memory without the lock, as a RawValue handle.
  const RawValue<T>& get_raw() const noexcept { return raw_; }
  // acquire()/release() of the lock, as CPython's synchronized wrappers.
  bool acquire(bool block = true) { return lock_.acquire(block); }
  void release() { lock_.release(); }

  template <class Archive>
  void serialize(Archive& ar) {
    ar(raw_, lock_);
  }

 private:
  RawValue<T> raw_;
  AnyLock lock_;
};

template <class T>
std::ostream& operator<<(std::ostream& os, const RawValue<T>& v) {
  return os << v.value();
}
template <class T>
std::ostream& operator<<(std::ostream& os, const Value<T>& v) {
  return os << v.value();
}

// ---------------------------------------------------------------------------------------------
// RawArray<T> (sharedctypes.RawArray): a fixed-size array of T in shared memory, without a lock.
// Indexes may be negative (from the end, as Python); out of range throws std::out_of_range.
template <class T>
class RawArray {
  static_assert(detail::kSharedCType<T>);

 public:
  using value_type = T;
  using size_type = std::size_t;

  // One element; reads and writes are indivisible (see the file comment). It converts to T
  // wherever a T is expected (arithmetic, std::cout, a T variable) but is not a T: passed to
  // printf's `...` it would print garbage. So it is not trivially copyable, which clang rejects
  // there (an error) and g++ reports with -Wformat (which linking mp::mp turns on). Read a
  // value for varargs with arr.get(i) or static_cast<T>(arr[i]).
  class reference {
   public:
    reference(const reference& other) noexcept : base_(other.base_), p_(other.p_) {}
    operator T() const { return detail::load(base_, p_); }
    T get() const { return detail::load(base_, p_); }
    reference& operator=(const T& v) {
      detail::store(base_, p_, v);
      return *this;
    }
    reference& operator=(const reference& other) { return *this = static_cast<T>(other); }

   private:
    friend class RawArray;
    reference(void* base, T* p) : base_(base), p_(p) {}
    void* base_;
    T* p_;
  };

  // A zero-filled array of `size` elements (Python: RawArray('i', 10)). Any integer type; bad
  // sizes throw as the file comment says.
  RawArray() : RawArray(size_type{0}) {}
  template <std::integral I>
  explicit RawArray(I size) : RawArray(detail::array_length(size), Length{}) {}
  // From values (Python: RawArray('i', [1, 2, 3])).
  RawArray(std::initializer_list<T> values) : RawArray(values.begin(), values.end()) {}
  explicit RawArray(const std::vector<T>& values) : RawArray(values.begin(), values.end()) {}
  template <std::input_iterator It>
  RawArray(It first, It last) : RawArray(std::vector<T>(first, last), 0) {}
  // Array<char> from a string (Python: Array('c', b'hello')); no terminating zero is added.
  explicit RawArray(std::string_view text) requires std::is_same_v<T, char>
      : RawArray(text.begin(), text.end()) {}

  size_type size() const noexcept { return size_; }
  bool empty() const noexcept { return size_ == 0; }

  reference operator[](std::ptrdiff_t index) { return reference(base_, data_ + checked(index)); }
  T operator[](std::ptrdiff_t index) const { return detail::load(base_, data_ + checked(index)); }
  // The value of one element (safe for printf: `printf("%d", arr.get(0))`).
  T get(std::ptrdiff_t index) const { return detail::load(base_, data_ + checked(index)); }

  // Direct access to the elements (plain memory: hold a lock around concurrent use).
  T* data() const noexcept { return data_; }
  T* begin() const noexcept { return data_; }
  T* end() const noexcept { return data_ + size_; }

  // Python's arr[start:stop] (indices clamped, negative from the end) and arr[:], as a copy.
  std::vector<T> slice(std::ptrdiff_t start, std::ptrdiff_t stop) const {
    const auto [b, e] = clamp(start, stop);
    return std::vector<T>(data_ + b, data_ + e);
  }
  std::vector<T> slice() const { return std::vector<T>(data_, data_ + size_); }
  std::vector<T> to_vector() const { return slice(); }
  // Python's arr[start:stop] = values / arr[:] = values. Throws std::invalid_argument
  // "Can only assign sequence of same size" if the lengths differ.
  void set_slice(std::ptrdiff_t start, std::ptrdiff_t stop, std::span<const T> values) {
    const auto [b, e] = clamp(start, stop);
    if (values.size() != e - b)
      throw std::invalid_argument("Can only assign sequence of same size");
    if (!values.empty())
      std::memmove(static_cast<void*>(data_ + b), values.data(), values.size() * sizeof(T));
  }
  void set_slice(std::span<const T> values) {
    set_slice(0, static_cast<std::ptrdiff_t>(size_), values);
  }
  void set_slice(std::initializer_list<T> values) {
    set_slice(std::span<const T>(values.begin(), values.size()));
  }

  // c_char arrays: value() is the text up to the first zero byte, raw() all the bytes.
  std::string_view value() const requires std::is_same_v<T, char> {
    return std::string_view(data_, std::find(data_, data_ + size_, '\0') - data_);
  }
  std::string_view raw() const requires std::is_same_v<T, char> {
    return std::string_view(data_, size_);
  }
  // Stores `text` and a terminating zero if there is room. Throws std::invalid_argument
  // "byte string too long" if it does not fit.
  void set_value(std::string_view text) requires std::is_same_v<T, char> {
    if (text.size() > size_) throw std::invalid_argument("byte string too long");
    std::memcpy(data_, text.data(), text.size());
    if (text.size() < size_) data_[text.size()] = '\0';
  }
  void set_raw(std::string_view bytes) requires std::is_same_v<T, char> {
    if (bytes.size() > size_) throw std::invalid_argument("byte string too long");
    std::memcpy(data_, bytes.data(), bytes.size());
  }

  template <class Archive>
  void save(Archive& ar) const {
    ar(block_, static_cast<std::uint64_t>(size_));
  }
  template <class Archive>
  void load(Archive& ar) {
    std::uint64_t n = 0;
    ar(block_, n);
    if (n > (block_.size() - std::min(block_.size(), detail::kDataOffset<T>)) /
                (sizeof(T) ? sizeof(T) : 1))
      throw UnpicklingError("RawArray: shared memory received is too small for the array");
    size_ = static_cast<size_type>(n);
    attach();
  }

 private:
  struct Length {};
  RawArray(size_type size, Length)
      : block_(detail::block_bytes(size, sizeof(T), detail::kDataOffset<T>),
               detail::kBlockAlign<T>) {
    size_ = size;
    attach();
  }
  RawArray(std::vector<T> values, int) : RawArray(values.size()) {
    if (!values.empty())
      std::memcpy(static_cast<void*>(data_), values.data(), values.size() * sizeof(T));
  }
  void attach() {
    base_ = block_.data();
    data_ = reinterpret_cast<T*>(static_cast<unsigned char*>(base_) + detail::kDataOffset<T>);
  }
  size_type checked(std::ptrdiff_t index) const {
    const auto n = static_cast<std::ptrdiff_t>(size_);
    const std::ptrdiff_t i = index < 0 ? index + n : index;
    if (i < 0 || i >= n) throw std::out_of_range("invalid index");
    return static_cast<size_type>(i);
  }
  std::pair<size_type, size_type> clamp(std::ptrdiff_t start, std::ptrdiff_t stop) const {
    const auto n = static_cast<std::ptrdiff_t>(size_);
    auto fix = [n](std::ptrdiff_t i) {
      return std::clamp<std::ptrdiff_t>(i < 0 ? i + n : i, 0, n);
    };
    const std::ptrdiff_t b = fix(start), e = std::max(fix(stop), fix(start));
    return {static_cast<size_type>(b), static_cast<size_type>(e)};
  }

  heap::SharedBlock block_;
  size_type size_ = 0;
  void* base_ = nullptr;
  T* data_ = nullptr;
};

// Array<T> (multiprocessing.Array): a RawArray with a lock — a new RLock by default, or the
// given Lock/RLock.
template <class T>
class Array : public RawArray<T> {
 public:
  using RawArray<T>::RawArray;
  template <std::integral I, class L>
  requires std::is_constructible_v<AnyLock, L> Array(I size, L lock)
      : RawArray<T>(size), lock_(std::move(lock)) {}
  template <class L>
  requires std::is_constructible_v<AnyLock, L> Array(std::initializer_list<T> values, L lock)
      : RawArray<T>(values), lock_(std::move(lock)) {}
  template <class L>
  requires std::is_constructible_v<AnyLock, L> Array(const std::vector<T>& values, L lock)
      : RawArray<T>(values), lock_(std::move(lock)) {}

  AnyLock& get_lock() noexcept { return lock_; }
  RawArray<T>& get_obj() noexcept { return *this; }
  bool acquire(bool block = true) { return lock_.acquire(block); }
  void release() { lock_.release(); }

  // Slices are copied under the lock, as CPython's SynchronizedArray does: a reader never sees
  // half of a writer's slice assignment. (With a plain Lock, calling these while holding it
  // deadlocks, as in CPython; the default RLock is re-entrant.) Elements are indivisible anyway.
  std::vector<T> slice(std::ptrdiff_t start, std::ptrdiff_t stop) const {
    std::lock_guard g(lock_);
    return RawArray<T>::slice(start, stop);
  }
  std::vector<T> slice() const {
    std::lock_guard g(lock_);
    return RawArray<T>::slice();
  }
  std::vector<T> to_vector() const { return slice(); }
  void set_slice(std::ptrdiff_t start, std::ptrdiff_t stop, std::span<const T> values) {
    std::lock_guard g(lock_);
    RawArray<T>::set_slice(start, stop, values);
  }
  void set_slice(std::span<const T> values) {
    std::lock_guard g(lock_);
    RawArray<T>::set_slice(values);
  }
  void set_slice(std::initializer_list<T> values) {
    set_slice(std::span<const T>(values.begin(), values.size()));
  }

  template <class Archive>
  void save(Archive& ar) const {
    RawArray<T>::save(ar);
    ar(lock_);
  }
  template <class Archive>
  void load(Archive& ar) {
    RawArray<T>::load(ar);
    ar(lock_);
  }

 private:
  mutable AnyLock lock_;
};

}  // namespace mp

// std::format support, where the standard library has <format> (libstdc++ 13+, libc++ 17+; not the
// g++ 12 library of Debian 12, where operator<< serves).
#if defined(__cpp_lib_format)
template <class T, class CharT>
struct std::formatter<mp::Value<T>, CharT> : std::formatter<T, CharT> {
  template <class Ctx>
  auto format(const mp::Value<T>& v, Ctx& ctx) const {
    return std::formatter<T, CharT>::format(v.value(), ctx);
  }
};
template <class T, class CharT>
struct std::formatter<mp::RawValue<T>, CharT> : std::formatter<T, CharT> {
  template <class Ctx>
  auto format(const mp::RawValue<T>& v, Ctx& ctx) const {
    return std::formatter<T, CharT>::format(v.value(), ctx);
  }
};
#endif
