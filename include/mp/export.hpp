// Symbol visibility for the mp library (hidden by default; MP_API marks the public ABI).
#pragma once

#if defined(_WIN32) && defined(MP_SHARED)
#  ifdef MP_BUILDING_LIBRARY
#    define MP_API __declspec(dllexport)
#  else
#    define MP_API __declspec(dllimport)
#  endif
#elif defined(__GNUC__)
#  define MP_API __attribute__((visibility("default")))
#else
#  define MP_API
#endif
