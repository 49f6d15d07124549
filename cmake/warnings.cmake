# MP_WARNING_FLAGS: the warnings for the library and everything built with it (tests, samples,
# benchmarks, fuzz targets), on Linux and in the Windows cross-build; MP_WERROR makes them errors.
set(MP_WARNING_FLAGS)
if(CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
  set(MP_WARNING_FLAGS -Wall -Wextra -Wpedantic)
  if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU" AND CMAKE_CXX_COMPILER_VERSION VERSION_LESS 13)
    # g++ 12 reports "memcpy may overlap" for `"x" + std::string` (GCC bug 105651, fixed in 13).
    list(APPEND MP_WARNING_FLAGS -Wno-restrict)
  endif()
  if(MP_WERROR)
    list(APPEND MP_WARNING_FLAGS -Werror)
  endif()
endif()
