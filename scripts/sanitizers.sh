#!/usr/bin/env bash
# The sanitizer runs of CI:
#   asan  the whole test suite built with ASan+UBSan (the `asan` preset)
#   tsan  the tests labelled `tsan` (threads within one process) built with ThreadSanitizer
# A report fails the run even when it comes from a child process whose exit code no test looks
# at: every sanitizer writes its reports to build/<preset>/sanitizer-logs/, which must stay empty.
#   scripts/sanitizers.sh [asan] [tsan]     (default: both)
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)
runs=("$@")
((${#runs[@]})) || runs=(asan tsan)

status=0
for run in "${runs[@]}"; do
  logs="$PWD/build/$run/sanitizer-logs"
  cmake --preset "$run" >/dev/null
  case "$run" in
    asan)
      cmake --build --preset asan -j "$jobs"
      rm -rf "$logs" && mkdir -p "$logs"
      ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:log_path=$logs/asan" \
      UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$logs/ubsan" \
      LSAN_OPTIONS="log_path=$logs/lsan" \
        ctest --test-dir build/asan -j "$jobs" --output-on-failure --timeout 600 --no-tests=error || status=1
      ;;
    tsan)
      cmake --build --preset tsan -j "$jobs" --target tsan_tests
      rm -rf "$logs" && mkdir -p "$logs"
      TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:log_path=$logs/tsan" \
        ctest --test-dir build/tsan -L tsan -j "$jobs" --output-on-failure --timeout 600 --no-tests=error || status=1
      ;;
    *) echo "usage: $0 [asan] [tsan]" >&2; exit 2 ;;
  esac
  if [ -n "$(ls -A "$logs")" ]; then
    echo "== $run: sanitizer reports:" >&2
    for f in "$logs"/*; do echo "--- $f" >&2; head -60 "$f" >&2; done
    status=1
  else
    echo "== $run: no sanitizer report"
  fi
done
exit $status
