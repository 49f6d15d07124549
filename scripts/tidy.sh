#!/usr/bin/env bash
# Runs clang-tidy 14 with the repository's .clang-tidy over the library and the tests.
#   scripts/tidy.sh [BUILD_DIR] [FILE...]
# BUILD_DIR holds compile_commands.json (every preset writes one; default build/dev, configured
# if missing). Without files: every lib/ and tests/ source. Prints the findings and their count;
# exits 1 if there is any.
set -euo pipefail
cd "$(dirname "$0")/.."
build="${1:-build/dev}"
shift || true
command -v clang-tidy-14 >/dev/null || { echo "tidy.sh: clang-tidy-14 not found (apt-get install clang-tidy-14)" >&2; exit 2; }
if [ ! -f "$build/compile_commands.json" ]; then
  [ "$build" = build/dev ] || { echo "tidy.sh: no $build/compile_commands.json" >&2; exit 2; }
  cmake --preset dev >/dev/null
fi
if (($#)); then
  files=("$@")
else
  mapfile -t files < <(git ls-files -- 'lib/*.cpp' 'tests/*.cpp')
fi
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# -j: as many files at once as the machine has CPUs (MP_TIDY_JOBS to override).
printf '%s\n' "${files[@]}" |
  xargs -P "${MP_TIDY_JOBS:-$(nproc)}" -n 1 clang-tidy-14 -p "$build" --quiet 2>/dev/null |
  tee "$log" | grep -E 'warning:|error:' || true
# A header's finding is reported once per file that includes it: count distinct findings.
count=$(grep -E '^/.*: (warning|error):' "$log" | sort -u | wc -l)
echo "tidy.sh: $count findings"
[ "$count" -eq 0 ]
