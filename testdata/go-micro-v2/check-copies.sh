#!/usr/bin/env bash
# Compares every file in testdata/go-micro-v2/ with the go-micro v2.9.1 capture set it was copied
# from (byte for byte). Usage: check-copies.sh [capture dir] (default /work/shared/golden/go-micro-v2).
# Exit code 0 when every copy is identical.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
captures="${1:-/work/shared/golden/go-micro-v2}"
[ -d "$captures" ] || { echo "no capture set at $captures" >&2; exit 2; }
status=0
while IFS= read -r -d '' file; do
  relative="${file#"$here"/}"
  case "$relative" in README.md | check-copies.sh) continue ;; esac
  if [ ! -f "$captures/$relative" ]; then
    echo "not in the capture set: $relative"
    status=1
  elif ! cmp -s "$file" "$captures/$relative"; then
    echo "differs from the capture: $relative"
    status=1
  fi
done < <(find "$here" -type f -print0 | sort -z)
[ "$status" -eq 0 ] && echo "all copies identical to $captures"
exit "$status"
