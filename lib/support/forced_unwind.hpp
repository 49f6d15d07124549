// Internal: the exception by which pthread_exit() and pthread_cancel() unwind a thread's stack.
// A handler that catches everything must let it through (catch it first and rethrow, or end the
// process inside the handler): glibc aborts with "FATAL: exception not rethrown" if one is
// swallowed. Every catch (...) on a path that runs user code (a child's target, a manager's
// methods, a Barrier's action, decoding a Queue item) catches ForcedUnwind first.
#pragma once

// A function with a `catch (const ForcedUnwind&)` handler carries MP_CATCHES_FORCED_UNWIND: the
// forced unwind has no exception object, so UBSan's null check would flag the handler's reference.
#if defined(__GNUC__)
#  define MP_CATCHES_FORCED_UNWIND __attribute__((no_sanitize("null")))
#else
#  define MP_CATCHES_FORCED_UNWIND
#endif

#if defined(__GLIBCXX__)  // libstdc++ always ships <cxxabi.h>
#  include <cxxabi.h>
namespace mp::detail {
using ForcedUnwind = abi::__forced_unwind;
}  // namespace mp::detail
#else
namespace mp::detail {
struct ForcedUnwind {};  // this C++ library unwinds threads without a catchable exception
}  // namespace mp::detail
#endif
