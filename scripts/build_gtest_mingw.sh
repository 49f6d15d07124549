#!/usr/bin/env bash
# Cross-builds GoogleTest from Debian's source package (/usr/src/googletest) with the mingw-w64
# toolchain into a build-local prefix (default build/windows-deps). Idempotent: a finished prefix
# is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
prefix="${1:-$PWD/build/windows-deps}"
[ -f "$prefix/lib/cmake/GTest/GTestConfig.cmake" ] && exit 0
work="$prefix/googletest-build"
cmake -S /usr/src/googletest -B "$work" -DCMAKE_TOOLCHAIN_FILE="$PWD/cmake/mingw-w64-x86_64.cmake" \
      -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX="$prefix" -DBUILD_GMOCK=OFF -Dgtest_disable_pthreads=OFF >/dev/null
cmake --build "$work" -j "${MP_JOBS:-$(nproc)}"
cmake --install "$work" >/dev/null
rm -rf "$work"
