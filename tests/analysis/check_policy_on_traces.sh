#!/usr/bin/env bash
# A shipped analysis policy against its device's real recorded guest trace (every request must be
# forwarded, firmware phase included) and the reproducers it must stop before their trigger line.
# The machine layout comes from each trace's '# qemu:' header (QEMU discovery, no device model run).
# Usage: check_policy_on_traces.sh IOREQ_FILTER_BINARY SOURCE_DIR POLICY_NAME TRACE[:uncovered=N] [REPRODUCER...]
#   POLICY_NAME: policies/linux-6.1/POLICY_NAME.json; TRACE, REPRODUCER: names below tests/data/{traces,attacks}
#   (a REPRODUCER holding a '/' is a path below SOURCE_DIR without .qtest: a derived reproducer kept here)
#   TRACE:uncovered=N: the policy leaves some of the device's BARs out, so the real trace is expected to
#   draw exactly N refusals, every one of them uncovered-region (a BAR the policy has no region for), and
#   no other refusal; the reason is stated where the test is declared.
set -uo pipefail
bin=$1 src=$2 name=$3 trace=$4
shift 4
policy="$src/policies/linux-6.1/$name.json"
status=0
expect_uncovered=0
if [[ $trace == *:uncovered=* ]]; then
  expect_uncovered=${trace#*:uncovered=}
  trace=${trace%%:*}
fi
out=$(timeout 120 "$bin" check --policy "$policy" "$src/tests/data/traces/$trace.qtest" 2>&1)
rc=$?
if [ "$expect_uncovered" -eq 0 ]; then
  if [ $rc -ne 0 ] || ! grep -q 'refused 0$' <<<"$out" || ! grep -q "filtered: .*<- $policy" <<<"$out"; then
    echo "FAIL: real $trace trace not fully forwarded by $name.json (exit $rc)"; echo "$out" | head -20; status=1
  fi
else
  json=$(timeout 120 "$bin" check --json --policy "$policy" "$src/tests/data/traces/$trace.qtest" 2>&1)
  if ! python3 -c '
import json, sys
report = json.load(sys.stdin)[0]
want = int(sys.argv[1])
uncovered = sum(d["refused"]["uncovered-region"] for d in report["devices"])
other = sum(v for d in report["devices"] for k, v in d["refused"].items() if k != "uncovered-region")
print("refusals %d, uncovered-region %d, other %d (expected %d uncovered-region only)" % (report["refusals_total"], uncovered, other, want))
sys.exit(0 if uncovered == want and other == 0 and report["refusals_total"] == want else 1)
' "$expect_uncovered" <<<"$json"; then
    echo "FAIL: real $trace trace under $name.json: not exactly $expect_uncovered uncovered-region refusals"; echo "$out" | head -30; status=1
  fi
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
