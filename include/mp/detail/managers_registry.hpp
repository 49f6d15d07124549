// mp/detail/managers_registry.hpp — internals of mp/managers.hpp: the registry of hostable types,
// the compile-time typing of proxy calls, and the macro machinery behind MP_EXPOSE. Not API.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "mp/errors.hpp"
#include "mp/export.hpp"
#include "mp/reduction.hpp"

namespace mp {
template <class T>
class Proxy;
}

namespace mp::managers {
struct Address;
namespace detail {

// What MP_PROXY records about a class a proxy may refer to: its type id and constructor
// parameters (a client needs only these and the method declarations).
template <class T>
struct ProxyTraits;
// What MP_EXPOSE adds for a server: the class's registration (which needs its definitions).
template <class T>
struct Hosted;

// The server hosts an object a method returned (CPython's method_to_typeid): a new id, with one
// reference held for the calling client.
struct ObjectHost {
  virtual std::uint64_t host(std::shared_ptr<void> object, const std::string& type_id) = 0;

 protected:
  ~ObjectHost() = default;
};

// ---- the registry of hostable types (filled at static-initialization time, so a spawned server
// finds the same types under the same names).
using Factory = std::shared_ptr<void> (*)(const char* args, std::size_t size);
using Invoker = std::string (*)(void* object, const char* args, std::size_t size, ObjectHost& host);
struct MethodEntry {
  const char* name;
  Invoker invoke;
};
MP_API bool register_type(const std::string& type_id, Factory factory,
                          std::vector<MethodEntry> methods);

template <class Fn>
struct MemberTraits;
#define MP_DETAIL_MEMBER_TRAITS(QUALS)                  \
  template <class R, class C, class... P>               \
  struct MemberTraits<R (C::*)(P...) QUALS> {           \
    using Class = C;                                    \
    using Result = std::remove_cvref_t<R>;              \
    using Args = std::tuple<std::remove_cvref_t<P>...>; \
  };
MP_DETAIL_MEMBER_TRAITS()
MP_DETAIL_MEMBER_TRAITS(const)
MP_DETAIL_MEMBER_TRAITS(noexcept)
MP_DETAIL_MEMBER_TRAITS(const noexcept)
#undef MP_DETAIL_MEMBER_TRAITS

template <class Fn>
struct CtorTraits;
template <class... P>
struct CtorTraits<void (*)(P...)> {
  using Args = std::tuple<std::remove_cvref_t<P>...>;
};

template <class Tuple>
Tuple load_args(const char* data, std::size_t size) {
  if constexpr (std::tuple_size_v<Tuple> == 0) {
    if (size != 0)
      throw UnpicklingError("corrupt data: arguments given to a method that takes none");
    return Tuple{};
  } else {
    return reduction::load_from<Tuple>(data, size);
  }
}

template <class R>
struct IsSharedPtr : std::false_type {};
template <class U>
struct IsSharedPtr<std::shared_ptr<U>> : std::true_type {};

// What a proxy method returns for a hosted method returning R: a std::shared_ptr<U> (U exposed)
// stays in the server and comes back as mp::Proxy<U> (CPython's method_to_typeid); anything else
// is copied.
template <class R>
struct CallResult {
  using type = R;
};
template <class U>
struct CallResult<std::shared_ptr<U>> {
  using type = Proxy<U>;
};

// Server side of one exposed method: decode the arguments, call, encode the result.
template <auto M>
std::string invoke(void* object, const char* data, std::size_t size, ObjectHost& host) {
  using T = MemberTraits<decltype(M)>;
  auto args = load_args<typename T::Args>(data, size);
  auto* self = static_cast<typename T::Class*>(object);
  std::string out;
  if constexpr (std::is_void_v<typename T::Result>) {
    std::apply([&](auto&... a) { (self->*M)(std::move(a)...); }, args);
  } else {
    typename T::Result r =
        std::apply([&](auto&... a) { return (self->*M)(std::move(a)...); }, args);
    if constexpr (IsSharedPtr<typename T::Result>::value) {
      using U = typename T::Result::element_type;
      if (!r) throw std::invalid_argument("a hosted method returned a null std::shared_ptr");
      const std::string type_id = ProxyTraits<U>::type_id();
      reduction::dump_into(out, std::make_tuple(host.host(std::move(r), type_id), type_id));
    } else {
      reduction::dump_into(out, r);
    }
  }
  return out;
}

template <class T, class Tuple>
std::shared_ptr<void> construct(const char* data, std::size_t size) {
  auto args = load_args<Tuple>(data, size);
  return std::apply(
      [](auto&... a) {
        return std::static_pointer_cast<void>(std::make_shared<T>(std::move(a)...));
      },
      args);
}

template <class Tuple, class... A>
std::string pack_args(A&&... a) {
  static_assert(sizeof...(A) == std::tuple_size_v<Tuple>,
                "mp: wrong number of arguments for this method");
  static_assert(std::is_constructible_v<Tuple, A&&...>,
                "mp: the arguments do not convert to the parameter types of this method");
  std::string out;
  if constexpr (std::tuple_size_v<Tuple> != 0)
    reduction::dump_into(out, Tuple(std::forward<A>(a)...));
  return out;
}

struct ProxyState;
MP_API const Address& state_address(const ProxyState& s) noexcept;
MP_API const std::string& state_authkey(const ProxyState& s) noexcept;
MP_API std::uint64_t state_id(const ProxyState& s) noexcept;
MP_API const std::string& state_type_id(const ProxyState& s) noexcept;
MP_API std::shared_ptr<ProxyState> load_proxy_state(Address address, std::string authkey,
                                                    std::uint64_t id, std::string type_id);
MP_API std::string state_call(const ProxyState& s, const char* method, const std::string& args);
// A proxy of object `id` returned by a method of the object of `parent` (reference already held).
MP_API std::shared_ptr<ProxyState> adopt_returned(const ProxyState& parent, std::uint64_t id,
                                                  std::string type_id);

// One entry of a manager's own registry: register_(type_id, callable) (CPython's
// register(typeid, callable)). `make` calls the callable; `function` and `thunk` are it as a
// function pointer (null for another callable), for a spawned server.
struct Callable {
  std::string type_id;
  std::string hosted_type_id;  // the exposed class of what it returns
  std::function<std::shared_ptr<void>()> make;
  void (*function)() = nullptr;
  std::shared_ptr<void> (*thunk)(void (*function)()) = nullptr;
};
template <class T, class Fn>
std::shared_ptr<void> call_factory(void (*function)()) {
  return std::static_pointer_cast<void>(reinterpret_cast<Fn>(function)());
}

template <class Impl>
struct AutoRegister;

// What the library needs of a BaseProxy beyond its public members (lib/managers*.cpp).
struct ProxyAccess;

}  // namespace detail
}  // namespace mp::managers

#define MP_DETAIL_METHOD(Impl, m) \
  ::mp::managers::detail::MethodEntry { #m, &::mp::managers::detail::invoke < &Impl::m> }

#define MP_DETAIL_CAT2(a, b) a##b
#define MP_DETAIL_CAT(a, b) MP_DETAIL_CAT2(a, b)
#define MP_DETAIL_NARGS(...)                                                                      \
  MP_DETAIL_NARGS_(__VA_ARGS__, 24, 23, 22, 21, 20, 19, 18, 17, 16, 15, 14, 13, 12, 11, 10, 9, 8, \
                   7, 6, 5, 4, 3, 2, 1, 0)
#define MP_DETAIL_NARGS_(_1, _2, _3, _4, _5, _6, _7, _8, _9, _10, _11, _12, _13, _14, _15, _16, \
                         _17, _18, _19, _20, _21, _22, _23, _24, N, ...)                        \
  N
#define MP_DETAIL_EACH_1(M, C, x) M(C, x)
#define MP_DETAIL_EACH_2(M, C, x, ...) M(C, x) MP_DETAIL_EACH_1(M, C, __VA_ARGS__)
#define MP_DETAIL_EACH_3(M, C, x, ...) M(C, x) MP_DETAIL_EACH_2(M, C, __VA_ARGS__)
#define MP_DETAIL_EACH_4(M, C, x, ...) M(C, x) MP_DETAIL_EACH_3(M, C, __VA_ARGS__)
#define MP_DETAIL_EACH_5(M, C, x, ...) M(C, x) MP_DETAIL_EACH_4(M, C, __VA_ARGS__)
#define MP_DETAIL_EACH_6(M, C, x, ...) M(C, x) MP_DETAIL_EACH_5(M, C, __VA_ARGS__)
#define MP_DETAIL_EACH_7(M, C, x, ...) M(C, x) MP_DETAIL_EACH_6(M, C, __VA_ARGS__)
#define MP_DETAIL_EACH_8(M, C, x, ...) M(C, x) MP_DETAIL_EACH_7(M, C, __VA_ARGS__)
#define MP_DETAIL_EACH_9(M, C, x, ...) M(C, x) MP_DETAIL_EACH_8(M, C, __VA_ARGS__)
#define MP_DETAIL_EACH_10(M, C, x, ...) M(C, x) MP_DETAIL_EACH_9(M, C, __VA_ARGS__)
#define MP_DETAIL_EACH_11(M, C, x, ...) M(C, x) MP_DETAIL_EACH_10(M, C, __VA_ARGS__)
#define MP_DETAIL_EACH_12(M, C, x, ...) M(C, x) MP_DETAIL_EACH_11(M, C, __VA_ARGS__)
#define MP_DETAIL_EACH_13(M, C, x, ...) M(C, x) MP_DETAIL_EACH_12(M, C, __VA_ARGS__)
#define MP_DETAIL_EACH_14(M, C, x, ...) M(C, x) MP_DETAIL_EACH_13(M, C, __VA_ARGS__)
#define MP_DETAIL_EACH_15(M, C, x, ...) M(C, x) MP_DETAIL_EACH_14(M, C, __VA_ARGS__)
#define MP_DETAIL_EACH_16(M, C, x, ...) M(C, x) MP_DETAIL_EACH_15(M, C, __VA_ARGS__)
#define MP_DETAIL_EACH_17(M, C, x, ...) M(C, x) MP_DETAIL_EACH_16(M, C, __VA_ARGS__)
#define MP_DETAIL_EACH_18(M, C, x, ...) M(C, x) MP_DETAIL_EACH_17(M, C, __VA_ARGS__)
#define MP_DETAIL_EACH_19(M, C, x, ...) M(C, x) MP_DETAIL_EACH_18(M, C, __VA_ARGS__)
#define MP_DETAIL_EACH_20(M, C, x, ...) M(C, x) MP_DETAIL_EACH_19(M, C, __VA_ARGS__)
#define MP_DETAIL_EACH_21(M, C, x, ...) M(C, x) MP_DETAIL_EACH_20(M, C, __VA_ARGS__)
#define MP_DETAIL_EACH_22(M, C, x, ...) M(C, x) MP_DETAIL_EACH_21(M, C, __VA_ARGS__)
#define MP_DETAIL_EACH_23(M, C, x, ...) M(C, x) MP_DETAIL_EACH_22(M, C, __VA_ARGS__)
#define MP_DETAIL_EACH_24(M, C, x, ...) M(C, x) MP_DETAIL_EACH_23(M, C, __VA_ARGS__)
#define MP_DETAIL_FOR_EACH(M, C, ...) \
  MP_DETAIL_CAT(MP_DETAIL_EACH_, MP_DETAIL_NARGS(__VA_ARGS__))(M, C, __VA_ARGS__)

#define MP_DETAIL_PROXY_METHOD(C, m)                                         \
  template <class... MpArgs>                                                 \
  auto m(MpArgs&&... mp_args) const {                                        \
    return this->template call<&C::m>(#m, std::forward<MpArgs>(mp_args)...); \
  }
#define MP_DETAIL_ENTRY(C, m) MP_DETAIL_METHOD(C, m),
