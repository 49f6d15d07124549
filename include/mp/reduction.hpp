// mp/reduction.hpp — serialization, the C++ counterpart of pickle and multiprocessing.reduction.
//
// dumps<T>(value) gives bytes; loads<T>(bytes) gives the value back. Supported: arithmetic types,
// std::string, vector, array, map, unordered_map, set, unordered_set, pair, tuple, optional,
// variant, chrono durations, user types with a cereal-style `serialize(Archive&)` (or save/load),
// and — as a memcpy fast path — any trivially copyable type at the top level.
//
// Guarantees: the bytes carry a tag of the type, so loads<U> of bytes made by dumps<T> (U ≠ T)
// throws UnpicklingError instead of reading garbage; every length is checked against the bytes
// that remain before anything is allocated; truncated or trailing bytes throw UnpicklingError.
//
// Shareable objects (Lock, Value, Queue, ...) serialize as OS handles, and only while a Process is
// being started with the spawn method (CPython: "... objects should only be shared between
// processes through inheritance"); see send_handle()/receive_handle().
#pragma once

#include <atomic>

#include <cereal/cereal.hpp>
#include <cereal/types/array.hpp>
#include <cereal/types/chrono.hpp>
#include <cereal/types/map.hpp>
#include <cereal/types/optional.hpp>
#include <cereal/types/set.hpp>
#include <cereal/types/string.hpp>
#include <cereal/types/tuple.hpp>
#include <cereal/types/unordered_map.hpp>
#include <cereal/types/unordered_set.hpp>
#include <cereal/types/utility.hpp>
#include <cereal/types/variant.hpp>
#include <cereal/types/vector.hpp>
#include <array>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <optional>
#include <tuple>
#include <utility>
#include <variant>
#include <string>
#include <string_view>
#include <type_traits>
#include <typeinfo>

#include "mp/errors.hpp"
#include "mp/export.hpp"

namespace mp::reduction {

// Writes to a std::string; no iostreams on the path.
class OutputArchive : public cereal::OutputArchive<OutputArchive, cereal::AllowEmptyClassElision> {
 public:
  explicit OutputArchive(std::string& out)
      : cereal::OutputArchive<OutputArchive, cereal::AllowEmptyClassElision>(this), out_(out) {}
  void saveBinary(const void* data, std::size_t size) {
    out_.append(static_cast<const char*>(data), size);
  }

 private:
  std::string& out_;
};

// Reads from a byte range; every read and every length is bounds-checked.
class InputArchive : public cereal::InputArchive<InputArchive, cereal::AllowEmptyClassElision> {
 public:
  InputArchive(const char* data, std::size_t size)
      : cereal::InputArchive<InputArchive, cereal::AllowEmptyClassElision>(this),
        pos_(data),
        end_(data + size) {}
  void loadBinary(void* data, std::size_t size) {
    if (size > remaining()) throw UnpicklingError("truncated data: message ends inside a value");
    if (size != 0) std::memcpy(data, pos_, size);
    pos_ += size;
  }
  std::size_t remaining() const noexcept { return static_cast<std::size_t>(end_ - pos_); }

 private:
  const char* pos_;
  const char* end_;
};

template <class T>
void prologue(OutputArchive&, const T&) {}
template <class T>
void epilogue(OutputArchive&, const T&) {}
template <class T>
void prologue(InputArchive&, const T&) {}
template <class T>
void epilogue(InputArchive&, const T&) {}

template <class T>
requires std::is_arithmetic_v<T>
void CEREAL_SAVE_FUNCTION_NAME(OutputArchive& ar, const T& t) { ar.saveBinary(&t, sizeof t); }
template <class T>
requires std::is_arithmetic_v<T>
void CEREAL_LOAD_FUNCTION_NAME(InputArchive& ar, T& t) {
  if constexpr (std::is_same_v<T, bool>) {
    // Only 0 and 1 are bools: any other byte would make reading the value undefined behaviour.
    unsigned char byte = 0;
    ar.loadBinary(&byte, 1);
    if (byte > 1) throw UnpicklingError("corrupt data: a bool is neither 0 nor 1");
    t = byte != 0;
  } else {
    ar.loadBinary(&t, sizeof t);
  }
}
template <class Archive, class T>
void CEREAL_SERIALIZE_FUNCTION_NAME(Archive& ar, cereal::NameValuePair<T>& nvp) {
  ar(nvp.value);
}
template <class T>
void CEREAL_SAVE_FUNCTION_NAME(OutputArchive& ar, const cereal::SizeTag<T>& tag) {
  const std::uint64_t n = static_cast<std::uint64_t>(tag.size);
  ar.saveBinary(&n, sizeof n);
}
// A length can never exceed the bytes left (each element takes at least one byte), so a hostile
// or corrupt length fails here instead of allocating.
template <class T>
void CEREAL_LOAD_FUNCTION_NAME(InputArchive& ar, cereal::SizeTag<T>& tag) {
  std::uint64_t n = 0;
  ar.loadBinary(&n, sizeof n);
  if (n > ar.remaining()) throw UnpicklingError("corrupt data: a length exceeds the message");
  tag.size = static_cast<std::remove_reference_t<T>>(n);
}
template <class T>
void CEREAL_SAVE_FUNCTION_NAME(OutputArchive& ar, const cereal::BinaryData<T>& bd) {
  ar.saveBinary(bd.data, static_cast<std::size_t>(bd.size));
}
template <class T>
void CEREAL_LOAD_FUNCTION_NAME(InputArchive& ar, cereal::BinaryData<T>& bd) {
  ar.loadBinary(bd.data, static_cast<std::size_t>(bd.size));
}

namespace detail {

// Standard types cereal serializes itself (even when trivially copyable).
template <class T>
struct IsStdSerializable : std::false_type {};
template <class T, std::size_t N>
struct IsStdSerializable<std::array<T, N>> : std::true_type {};
template <class T>
struct IsStdSerializable<std::optional<T>> : std::true_type {};
template <class... T>
struct IsStdSerializable<std::variant<T...>> : std::true_type {};
template <class A, class B>
struct IsStdSerializable<std::pair<A, B>> : std::true_type {};
template <class... T>
struct IsStdSerializable<std::tuple<T...>> : std::true_type {};
template <class R, class P>
struct IsStdSerializable<std::chrono::duration<R, P>> : std::true_type {};
template <class C, class D>
struct IsStdSerializable<std::chrono::time_point<C, D>> : std::true_type {};

// Field checks for aggregates (no Boost.PFR: docs/DESIGN.md). A probe converts to any type U:
// `Any` unconditionally, `Plain` only to a U whose bytes are its value (PlainField<U>; the other
// conversions are declared deleted, so a bad field makes the initialization ill-formed instead of
// letting brace elision skip into it). T{Any x N} is valid exactly for N up to T's number of
// initializers (array elements counted one by one); T{Plain x N} then checks every one.
struct AnyProbe {
  template <class U>
  operator U() const;
};

template <class T, class... Args>
concept BraceInitializable = requires {
  T{std::declval<Args>()...};
};

template <class T, class Probe, std::size_t... I>
constexpr bool init_with(std::index_sequence<I...>) {
  return BraceInitializable<T, decltype((void)I, Probe{})...>;
}
// One more element than N, value-initialized: valid iff the count stopped before T's end (e.g. at
// a field whose constructor also accepts the probe): such a T cannot be checked.
template <class T, std::size_t... I>
constexpr bool init_with_one_more(std::index_sequence<I...>) {
  return requires { T{(void(I), AnyProbe{})..., {}}; };
}
// The largest N with T{Any x N} valid, searched in [lo, hi].
template <class T, std::size_t lo, std::size_t hi>
constexpr std::size_t initializer_count() {
  if constexpr (lo == hi) {
    return lo;
  } else {
    constexpr std::size_t mid = (lo + hi + 1) / 2;
    if constexpr (init_with<T, AnyProbe>(std::make_index_sequence<mid>{})) {
      return initializer_count<T, mid, hi>();
    } else {
      return initializer_count<T, lo, mid - 1>();
    }
  }
}
inline constexpr std::size_t kMaxCheckedInitializers =
    4096;  // bytes: larger aggregates need the opt-in

template <class T>
struct IsStdPlain : std::false_type {};

template <class T>
constexpr bool plain_field();

struct PlainProbe {
  template <class U>
  requires(plain_field<U>()) operator U() const;
  template <class U>
  requires(!plain_field<U>()) operator U() const = delete;
};

// An aggregate whose every field (recursively) is plain; false when that cannot be checked.
template <class T>
constexpr bool plain_aggregate() {
  if constexpr (!std::is_aggregate_v<T> || std::is_array_v<T> || !std::is_trivially_copyable_v<T> ||
                sizeof(T) > kMaxCheckedInitializers) {
    return false;
  } else {
    constexpr std::size_t n = initializer_count<T, 0, sizeof(T)>();
    if constexpr (init_with_one_more<T>(std::make_index_sequence<n>{})) {
      return false;
    } else {
      return init_with<T, PlainProbe>(std::make_index_sequence<n>{});
    }
  }
}

}  // namespace detail

// Opt-in to the raw-bytes path for a trivially copyable class mp cannot check (private fields, or
// an aggregate too large or unusual to inspect) whose bytes are its value in any process:
//   template <> inline constexpr bool mp::reduction::enable_raw_bytes<Point> = true;
// Never for a type holding pointers, references to memory or OS handles.
template <class T>
inline constexpr bool enable_raw_bytes = false;

namespace detail {

// A value whose bytes mean the same in another process: arithmetic, enum, an opted-in class, a
// plain aggregate, std::array/pair/optional/duration of such.
template <class T>
constexpr bool plain_field() {
  using U = std::remove_cv_t<T>;
  if constexpr (std::is_arithmetic_v<U> || std::is_enum_v<U>) {
    return true;
  } else if constexpr (std::is_array_v<U>) {
    return plain_field<std::remove_all_extents_t<U>>();
  } else if constexpr (IsStdPlain<U>::value) {
    return true;
  } else if constexpr (std::is_class_v<U>) {
    return enable_raw_bytes<U> || plain_aggregate<U>();
  } else {
    return false;  // pointers, member pointers, references
  }
}
template <class T, std::size_t N>
struct IsStdPlain<std::array<T, N>> : std::bool_constant<plain_field<T>()> {};
template <class A, class B>
struct IsStdPlain<std::pair<A, B>>
    : std::bool_constant<plain_field<A>() && plain_field<B>() &&
                         std::is_trivially_copyable_v<std::pair<A, B>>> {};
template <class T>
struct IsStdPlain<std::optional<T>>
    : std::bool_constant<plain_field<T>() && std::is_trivially_copyable_v<std::optional<T>>> {};
template <class R, class P>
struct IsStdPlain<std::chrono::duration<R, P>> : std::is_arithmetic<R> {};

// A trivially copyable class with no serialization of its own, whose bytes are its value (a plain
// aggregate, or opted in with enable_raw_bytes): copied as raw bytes. Other trivially copyable
// classes (e.g. `struct Msg { const char* text; int n; }`, whose pointer means nothing in another
// process) are not serializable: a compile error instead of garbage or a crash in the receiver.
template <class T>
concept UnserializedTrivialClass =
    std::is_class_v<T> && std::is_trivially_copyable_v<T> && !IsStdSerializable<T>::value &&
    !cereal::traits::has_member_serialize<T, OutputArchive>::value &&
    !cereal::traits::has_member_versioned_serialize<T, OutputArchive>::value &&
    !cereal::traits::has_member_save<T, OutputArchive>::value &&
    !cereal::traits::has_member_load<T, InputArchive>::value &&
    !cereal::traits::has_non_member_serialize<T, OutputArchive>::value;
template <class T>
concept RawClass = UnserializedTrivialClass<T> &&(enable_raw_bytes<T> || plain_aggregate<T>());

}  // namespace detail

template <detail::RawClass T>
void CEREAL_SAVE_FUNCTION_NAME(OutputArchive& ar, const T& t) {
  ar.saveBinary(&t, sizeof t);
}
template <detail::RawClass T>
void CEREAL_LOAD_FUNCTION_NAME(InputArchive& ar, T& t) {
  ar.loadBinary(&t, sizeof t);
}

namespace detail {

MP_API std::uint64_t hash_type_name(const char* name) noexcept;
[[noreturn]] MP_API void throw_type_mismatch(const char* expected);

template <class T>
std::uint64_t type_tag() {
  // Cached without an initialization guard (a fork could copy one half-taken); 0 = not yet.
  static constinit std::atomic<std::uint64_t> cache{0};
  std::uint64_t tag = cache.load(std::memory_order_relaxed);
  if (tag == 0) {
    tag = hash_type_name(typeid(T).name());
    cache.store(tag, std::memory_order_relaxed);
  }
  return tag;
}

template <class T>
concept CerealSerializable = cereal::traits::is_output_serializable<T, OutputArchive>::value &&
    cereal::traits::is_input_serializable<T, InputArchive>::value;

template <class T>
concept MemcpySerializable =
    std::is_trivially_copyable_v<T> && !CerealSerializable<T> && !std::is_pointer_v<T> &&
    !std::is_member_pointer_v<T> && !UnserializedTrivialClass<T>;

}  // namespace detail

// True when T can be sent to another process.
template <class T>
inline constexpr bool is_picklable_v =
    !std::is_pointer_v<T> && (detail::CerealSerializable<T> || detail::MemcpySerializable<T>);

// Appends the serialized value (without type tag) to `out`.
// Numbers take the raw-bytes path too: the bytes are those the archive would write, without the
// cost of building an archive (its type maps) for one value.
template <class T>
void dump_into(std::string& out, const T& value) {
  if constexpr (detail::MemcpySerializable<T> || std::is_arithmetic_v<T>) {
    out.append(reinterpret_cast<const char*>(&value), sizeof(T));
  } else {
    static_assert(
        !detail::UnserializedTrivialClass<T> || detail::RawClass<T>,
        "mp: this trivially copyable type is not sent as raw bytes: it holds a pointer (e.g. "
        "const char*, whose address means nothing in another process: use std::string) or mp "
        "cannot check its fields. Give it a `template <class Archive> void serialize(Archive&)` "
        "member, or if its bytes are its value, opt in: template <> inline constexpr bool "
        "mp::reduction::enable_raw_bytes<T> = true;");
    static_assert(detail::CerealSerializable<T>,
                  "mp: this type cannot be sent to another process; give it a "
                  "`template <class Archive> void serialize(Archive&)` member (cereal style)");
    OutputArchive ar(out);
    ar(value);
  }
}

// Reads a value (without type tag) from `data`; all of `data` must be consumed.
template <class T>
T load_from(const char* data, std::size_t size) {
  if constexpr (std::is_same_v<T, bool>) {
    if (size != 1) throw UnpicklingError("corrupt data: wrong size for a trivially copyable value");
    // Only 0 and 1 are bools: any other byte would make reading the value undefined behaviour.
    const auto byte = static_cast<unsigned char>(data[0]);
    if (byte > 1) throw UnpicklingError("corrupt data: a bool is neither 0 nor 1");
    return byte != 0;
  } else if constexpr (detail::MemcpySerializable<T> || std::is_arithmetic_v<T>) {
    if (size != sizeof(T))
      throw UnpicklingError("corrupt data: wrong size for a trivially copyable value");
    T value;
    std::memcpy(static_cast<void*>(&value), data, sizeof(T));
    return value;
  } else {
    static_assert(std::is_default_constructible_v<T>,
                  "mp: a type received from another process must be default constructible");
    T value{};
    InputArchive ar(data, size);
    try {
      ar(value);
    } catch (const cereal::Exception& e) {  // e.g. a std::variant index out of range
      throw UnpicklingError(std::string("corrupt data: ") + e.what());
    }
    if (ar.remaining() != 0) throw UnpicklingError("corrupt data: trailing bytes after the value");
    return value;
  }
}

// pickle.dumps: a type tag followed by the value.
template <class T>
std::string dumps(const T& value) {
  std::string out;
  const std::uint64_t tag = detail::type_tag<T>();
  out.append(reinterpret_cast<const char*>(&tag), sizeof tag);
  dump_into(out, value);
  return out;
}

// pickle.loads. Throws: UnpicklingError on a type mismatch, truncation or corrupt lengths.
template <class T>
T loads(std::string_view bytes) {
  std::uint64_t tag = 0;
  if (bytes.size() < sizeof tag) throw UnpicklingError("truncated data: no type tag");
  std::memcpy(&tag, bytes.data(), sizeof tag);
  if (tag != detail::type_tag<T>()) detail::throw_type_mismatch(typeid(T).name());
  return load_from<T>(bytes.data() + sizeof tag, bytes.size() - sizeof tag);
}

// An OS handle: a file descriptor on POSIX, a HANDLE on Windows.
using native_handle = std::intptr_t;

// Customization point for shareable objects. While a Process is being started with the spawn
// method, send_handle() records `handle` to be inherited by the child and returns the token to
// serialize; in the child, receive_handle(token) gives the inherited handle (owned by the caller).
// Throws: std::runtime_error "<what> objects should only be shared between processes through
// inheritance" when no spawn is in progress (as CPython).
MP_API std::uint64_t send_handle(native_handle handle, const char* what);
MP_API native_handle receive_handle(std::uint64_t token);

// True while arguments for a spawned child are being serialized.
MP_API bool spawning() noexcept;

}  // namespace mp::reduction

CEREAL_REGISTER_ARCHIVE(mp::reduction::OutputArchive)
CEREAL_REGISTER_ARCHIVE(mp::reduction::InputArchive)
CEREAL_SETUP_ARCHIVE_TRAITS(mp::reduction::InputArchive, mp::reduction::OutputArchive)
