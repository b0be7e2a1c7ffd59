#!/usr/bin/env bash
# The shipped analysis policy for floppy against the real recorded guest trace (every request must be
# forwarded) and the fdc reproducers it must stop before their trigger line.
# Usage: check_floppy_policy.sh IOREQ_FILTER_BINARY SOURCE_DIR
set -uo pipefail
bin=$1 src=$2
policy="$src/policies/linux-6.1/floppy.json"
status=0
out=$(timeout 120 "$bin" check --policy "$policy" --bind floppy=isa:0x3f0 "$src/tests/data/traces/floppy.qtest" 2>&1)
rc=$?
if [ $rc -ne 0 ] || ! grep -q 'refused 0' <<<"$out"; then
  echo "FAIL: real floppy trace not fully forwarded (exit $rc)"; echo "$out" | head -20; status=1
fi
for attack in fdc-cve-2021-20196 fdc-cve-2021-3507 fdc-venom-cve-2015-3456; do
  out=$(timeout 120 "$bin" check --policy "$policy" --bind floppy=isa:0x3f0 "$src/tests/data/attacks/$attack.qtest" 2>&1)
  if ! grep -q 'refused before it' <<<"$out"; then
    echo "FAIL: $attack not refused before its trigger"; echo "$out" | tail -5; status=1
  fi
done
exit $status
