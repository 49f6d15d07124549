// Must NOT compile with -Wformat -Werror (ctest compile_fail.array_element_printf): an Array
// element is a proxy; passed to printf it would print garbage. clang rejects it outright (the
// proxy is not trivially copyable); g++ reports it under -Wformat, which mp::mp turns on.
// With -DMP_COMPILE_OK the printf-safe forms compile.
#include <cstdio>
#include <type_traits>

#include "mp/sharedctypes.hpp"

int main() {
  mp::Array<int> arr{1, 2};
#ifdef MP_COMPILE_OK
  // What makes clang reject the proxy in `...` (g++ relies on -Wformat, added by mp::mp).
  static_assert(!std::is_trivially_copyable_v<mp::Array<int>::reference>);
  std::printf("%d %d\n", arr.get(0), static_cast<int>(arr[1]));
#else
  std::printf("%d\n", arr[0]);
#endif
}
