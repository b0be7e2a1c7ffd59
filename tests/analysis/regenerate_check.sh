#!/usr/bin/env bash
# CI check: regenerating the shipped analysis policies from the binaries reproduces them exactly.
# Usage: regenerate_check.sh IOREQ_FILTER_BINARY SOURCE_DIR SCRATCH_DIR
set -euo pipefail
bin=$1 src=$2 scratch=$3
rm -rf "$scratch" && mkdir -p "$scratch"
"$src/analysis/regenerate-policies.sh" "$bin" "$scratch" 2>/dev/null
status=0
for f in "$scratch"/*; do
  name=$(basename "$f")
  if ! cmp -s "$f" "$src/policies/linux-6.1/$name"; then
    echo "FAIL: policies/linux-6.1/$name differs from what the analyser generates now:"; diff "$src/policies/linux-6.1/$name" "$f" | head -20; status=1
  fi
done
exit $status
