#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzz/, the `fuzz` preset: clang 14, ASan+UBSan) and runs each for
# MP_FUZZ_SECONDS (default 30) from its seed corpus in fuzz/corpus/<name>/. Fails on any crash,
# sanitizer report, leak, timeout, or allocation above the cap. New interesting inputs go to a
# scratch directory (the repository's corpus is only read); a crashing input is kept in
# build/fuzz/artifacts/ and printed.
#   scripts/fuzz.sh [target...]     (default: every fuzz_* target)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${MP_FUZZ_SECONDS:-30}"
# Caps: no single allocation above 64 MB, no more than 2 GB resident, no input slower than 10 s.
caps=(-malloc_limit_mb=64 -rss_limit_mb=2048 -timeout=10 -max_len=65536)

cmake --preset fuzz >/dev/null
cmake --build --preset fuzz -j "$(nproc)"

targets=("$@")
if ((${#targets[@]} == 0)); then
  for f in fuzz/fuzz_*.cpp; do targets+=("$(basename "$f" .cpp)"); done
fi
artifacts=build/fuzz/artifacts
mkdir -p "$artifacts"
status=0
for t in "${targets[@]}"; do
  name="${t#fuzz_}"
  seeds="fuzz/corpus/$name"
  [ -d "$seeds" ] || { echo "== $t: no seed corpus in $seeds" >&2; status=1; continue; }
  scratch=$(mktemp -d)
  echo "== $t: ${seconds}s from $(find "$seeds" -type f | wc -l) seeds"
  if ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
     "build/fuzz/fuzz/$t" "${caps[@]}" -max_total_time="$seconds" -print_final_stats=1 \
       -artifact_prefix="$artifacts/$t-" "$scratch" "$seeds" >"$scratch.log" 2>&1; then
    grep -E "^stat::number_of_executed_units|^Done" "$scratch.log" | tr '\n' ' '; echo
  else
    echo "== $t FAILED:" >&2
    tail -40 "$scratch.log" >&2
    status=1
  fi
  rm -rf "$scratch" "$scratch.log"
done
exit $status
