#!/usr/bin/env bash
# The README's two commands. On a fresh Debian 12 machine: install what is missing, build, then
#   samples  run every tutorial sample (prints each one's name and output)
#   test     run the whole test suite: a format check, release build and tests (samples included), the unit
#            tests built with clang, then the ASan+UBSan and TSan runs and 30 s of every fuzz
#            target — exactly what CI runs. The release and clang builds treat warnings as errors.
#   unit     only the release build and tests (the quick loop)
#   windows  the Windows cross-build (mingw-w64) and its tests under Wine (also part of `test`)
set -euo pipefail
cd "$(dirname "$0")/.."
what="${1:-samples}"

need=(cmake make g++ pkg-config libcereal-dev libgtest-dev libgmock-dev
      libbenchmark-dev python3
      clang-14 libclang-rt-14-dev   # clang + libFuzzer/sanitizer runtimes: scripts/fuzz.sh (CI)
      clang-format-14               # scripts/format.sh (CI checks the tree is formatted)
      openmpi-bin libopenmpi-dev iproute2  # mp::mpi (mp/mpi.hpp) and its tests (mpiexec, ip netns)
      python3-mpi4py)               # bench/mpi: mpi4py.futures beside mp::mpi
# The Windows cross-build and Wine (`windows`, and CI's `test`): about 1.1 GB installed.
case "$what" in windows|test) need+=(g++-mingw-w64-x86-64-posix wine64 wine googletest) ;; esac
missing=()
for p in "${need[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "== installing: ${missing[*]}"
  sudo_cmd=(); [ "$(id -u)" -ne 0 ] && sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

jobs=$(nproc)
windows() {
  echo "== Windows cross-build and tests under Wine"
  MP_JOBS="$jobs" bash scripts/build_gtest_mingw.sh  # GoogleTest for mingw, into build/windows-deps
  cmake --preset windows
  cmake --build --preset windows -j "$jobs"
  bash scripts/wine_test.sh -j "$jobs"
}
case "$what" in
  windows) windows ;;
  samples) cmake --workflow --preset samples ;;
  unit|test)
    start=$SECONDS
    log=$(mktemp)
    trap 'rm -f "$log"' EXIT
    if [ "$what" = test ]; then
      echo "== format check (scripts/format.sh --check)"
      bash scripts/format.sh --check
    fi
    echo "== release build and tests"
    cmake --preset release
    cmake --build --preset release -j "$jobs"
    ctest --preset release -j "$jobs" 2>&1 | tee -a "$log"
    if [ "$what" = test ]; then
      echo "== clang build and unit tests ($((SECONDS - start)) s so far)"
      cmake --preset clang
      cmake --build --preset clang -j "$jobs"
      ctest --preset clang -j "$jobs" 2>&1 | tee -a "$log"
      echo "== portable POSIX fallbacks: the OS-layer, lock, Pipe, queue and shared_memory tests ($((SECONDS - start)) s so far)"
      # The library built with lib/platform/*_portable.cpp in place of the Linux-only calls (what a
      # macOS/BSD build compiles; docs/DESIGN.md §6), and the test binaries that exercise them.
      cmake --preset posix-fallbacks
      cmake --build --preset posix-fallbacks -j "$jobs" --target test_platform test_platform_posix \
        test_futex_lock test_connection test_queues test_shared_memory
      ctest --preset posix-fallbacks -j "$jobs" -E _NOT_BUILT 2>&1 | tee -a "$log"
      echo "== ASan+UBSan and TSan ($((SECONDS - start)) s so far)"
      bash scripts/sanitizers.sh asan tsan 2>&1 | tee -a "$log"
      echo "== fuzzing ($((SECONDS - start)) s so far)"
      MP_FUZZ_SECONDS="${MP_FUZZ_SECONDS:-30}" bash scripts/fuzz.sh
      echo "== Windows ($((SECONDS - start)) s so far)"
      windows 2>&1 | tee -a "$log"
    fi
    # One closing line over every ctest run above (a failure has already stopped the script).
    total=$(sed -n 's/.*tests passed, 0 tests failed out of \([0-9]*\).*/\1/p' "$log" | awk '{s += $1} END {print s + 0}')
    echo "== done in $((SECONDS - start)) s"
    echo "mp: ${total:-0} passed, 0 failed"
    ;;
  *) echo "usage: $0 samples|test|unit|windows" >&2; exit 2 ;;
esac
