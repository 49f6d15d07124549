#!/usr/bin/env bash
# Formats the C++ sources with the repository's .clang-format (clang-format 14).
#   scripts/format.sh              reformat every tracked C++ file in place
#   scripts/format.sh --check      change nothing; list the files that differ, exit 1 if any
#   scripts/format.sh [--check] FILE...   only these files
set -euo pipefail
cd "$(dirname "$0")/.."
clang_format="${CLANG_FORMAT:-clang-format-14}"
command -v "$clang_format" >/dev/null || { echo "format.sh: $clang_format not found (apt-get install clang-format-14)" >&2; exit 2; }

check=0
if [ "${1:-}" = --check ]; then check=1; shift; fi
if (($#)); then
  files=("$@")
else
  mapfile -t files < <(git ls-files -- 'include/*.hpp' 'lib/*.cpp' 'lib/*.hpp' 'tests/*.cpp' 'tests/*.hpp' \
                                       'samples/*.cpp' 'bench/*.cpp' 'bench/*.hpp' 'fuzz/*.cpp' 'fuzz/*.hpp')
fi

if ((check)); then
  bad=0
  for f in "${files[@]}"; do
    if ! "$clang_format" --style=file "$f" | cmp -s - "$f"; then
      echo "$f"
      bad=1
    fi
  done
  if ((bad)); then echo "format.sh: the files above need formatting (run scripts/format.sh)" >&2; fi
  exit "$bad"
fi
"$clang_format" --style=file -i "${files[@]}"
