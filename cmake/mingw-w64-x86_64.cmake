# Cross-compiling mp for 64-bit Windows with Debian's mingw-w64 (GCC 12, posix threads:
# package g++-mingw-w64-x86-64-posix). Tests run under Wine (scripts/wine_test.sh).
set(CMAKE_SYSTEM_NAME Windows)
set(CMAKE_SYSTEM_PROCESSOR x86_64)
set(CMAKE_C_COMPILER x86_64-w64-mingw32-gcc-posix)
set(CMAKE_CXX_COMPILER x86_64-w64-mingw32-g++-posix)
set(CMAKE_RC_COMPILER x86_64-w64-mingw32-windres)
set(CMAKE_FIND_ROOT_PATH /usr/x86_64-w64-mingw32)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)
set(CMAKE_CROSSCOMPILING_EMULATOR wine)
# Static runtime: a dynamically linked .exe under Wine needs WINEPATH set to the mingw runtime
# directories, or it silently prints nothing.
set(CMAKE_EXE_LINKER_FLAGS_INIT "-static")
