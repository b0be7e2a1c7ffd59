#!/usr/bin/env bash
# A shipped analysis policy against its device's real recorded guest trace (every request must be
# forwarded, firmware phase included) and the reproducers it must stop before their trigger line.
# The machine layout comes from each trace's '# qemu:' header (QEMU discovery, no device model run).
# Usage: check_policy_on_traces.sh IOREQ_FILTER_BINARY SOURCE_DIR POLICY_NAME TRACE [REPRODUCER...]
#   POLICY_NAME: policies/linux-6.1/POLICY_NAME.json; TRACE, REPRODUCER: names below tests/data/{traces,attacks}
#   (a REPRODUCER holding a '/' is a path below SOURCE_DIR without .qtest: a derived reproducer kept here)
set -uo pipefail
bin=$1 src=$2 name=$3 trace=$4
shift 4
policy="$src/policies/linux-6.1/$name.json"
status=0
out=$(timeout 120 "$bin" check --policy "$policy" "$src/tests/data/traces/$trace.qtest" 2>&1)
rc=$?
if [ $rc -ne 0 ] || ! grep -q 'refused 0$' <<<"$out" || ! grep -q "filtered: .*<- $policy" <<<"$out"; then
  echo "FAIL: real $trace trace not fully forwarded by $name.json (exit $rc)"; echo "$out" | head -20; status=1
fi
for attack in "$@"; do
  file="$src/tests/data/attacks/$attack.qtest"
  [[ $attack == */* ]] && file="$src/$attack.qtest"
  out=$(timeout 120 "$bin" check --policy "$policy" "$file" 2>&1)
  if ! grep -q 'refused before it' <<<"$out"; then
    echo "FAIL: $attack not refused before its trigger"; echo "$out" | tail -5; status=1
  fi
done
exit $status
