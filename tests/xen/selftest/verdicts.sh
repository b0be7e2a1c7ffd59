#!/usr/bin/env bash
# The lab runner's verdicts, without booting anything: canned serial logs must pass or fail exactly
# as a real run's would. Guards against a lab test that cannot fail.
set -uo pipefail
lab="$(dirname "$(readlink -f "$0")")/../lab"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failures=0

# case NAME WANT_RC [--expect CHECK...] < serial log
case_() {
  local name="$1" want="$2"; shift 2
  mkdir -p "$work/$name"
  cat > "$work/$name/serial.log"
  "$lab" judge "$work/$name" "$@" > "$work/$name/out" 2>&1
  local rc=$?
  if [ "$rc" != "$want" ]; then
    echo "FAIL $name: exit status $rc, want $want"; sed 's/^/    /' "$work/$name/out"
    failures=$((failures + 1))
  else
    echo "ok   $name"
  fi
}

printf 'IOREQ-LAB-DOM0-READY 10\r\nIOREQ-LAB-PASS a 1\r\nIOREQ-LAB-PASS b\r\nIOREQ-LAB-END 20 status=0\r\n' | case_ pass-with-crlf 0 --expect a --expect b
printf 'IOREQ-LAB-PASS a\nIOREQ-LAB-FAIL b expected 1, got 2\nIOREQ-LAB-END 20 status=0\n' | case_ one-fail 1
printf 'IOREQ-LAB-PASS a\n(XEN) [ 1.0] hung\n' | case_ no-end-marker 1
printf 'IOREQ-LAB-PASS a\nIOREQ-LAB-END 20 status=1\n' | case_ script-status 1
printf 'IOREQ-LAB-STEP 1 x\nIOREQ-LAB-END 20 status=0\n' | case_ no-pass 1
printf 'IOREQ-LAB-PASS a\nIOREQ-LAB-END 20 status=0\n' | case_ expected-check-missing 1 --expect b
printf 'IOREQ-LAB-PASS ab\nIOREQ-LAB-END 20 status=0\n' | case_ expect-is-whole-name 1 --expect a
printf '+ echo IOREQ-LAB-PASS a\nIOREQ-LAB-END 20 status=0\n' | case_ marker-not-at-line-start 1
printf 'IOREQ-LAB-FILE-BEGIN g.log\nIOREQ-LAB-PASS a\nIOREQ-LAB-FILE-END g.log\nIOREQ-LAB-END 20 status=0\n' | case_ pass-inside-dump 1
printf 'IOREQ-LAB-PASS a\nIOREQ-LAB-FILE-BEGIN g.log\nIOREQ-LAB-FAIL x\nIOREQ-LAB-FILE-END g.log\nIOREQ-LAB-END 20 status=0\n' | case_ fail-inside-dump-is-data 0
if [ -f "$work/fail-inside-dump-is-data/files/g.log" ] && grep -q 'IOREQ-LAB-FAIL x' "$work/fail-inside-dump-is-data/files/g.log"; then
  echo "ok   dump-extracted"
else
  echo "FAIL dump-extracted: files/g.log missing or wrong"; failures=$((failures + 1))
fi

# The stall watchdog, with a fake machine standing in for QEMU (`lab watch`): one that prints a
# progress marker and then uses no CPU must end as "stalled", naming that marker, within the window.
# watch_case NAME WANT_RC WANT_VERDICT_REGEX [watch options] -- fake machine's shell commands
watch_case() {
  local name="$1" want="$2" verdict="$3"; shift 3
  local opts=()
  while [ "$1" != -- ]; do opts+=("$1"); shift; done
  shift
  printf '#!/bin/sh\n%s\n' "$*" > "$work/$name.fake"
  chmod +x "$work/$name.fake"
  "$lab" watch --logdir "$work/$name" "${opts[@]}" -- "$work/$name.fake" > "$work/$name.out" 2>&1
  local rc=$? got
  got=$(sed -n 's/^verdict *//p' "$work/$name/summary.txt" 2>/dev/null)
  if [ "$rc" != "$want" ] || ! grep -Eq -- "$verdict" <<< "$got"; then
    echo "FAIL $name: exit status $rc (want $want), verdict '$got' (want /$verdict/)"; sed 's/^/    /' "$work/$name.out"
    failures=$((failures + 1))
  else
    echo "ok   $name"
  fi
}
watch_case stall-names-last-progress 1 '^stalled: emulated machine used 0\.[0-9] s CPU in the last [0-9]+ s .*guest\.create.*upcall vector f3' \
  --timeout 60 --stall-window 4 --stall-cpu 0.5 -- \
  'echo "IOREQ-LAB-STEP 12.5 guest.create" >> "$LAB_SERIAL"; echo "(XEN) d1v0: upcall vector f3" >> "$LAB_SERIAL"; exec sleep 100'
watch_case finished-machine-passes 0 '^PASS$' --timeout 60 --stall-window 4 --stall-cpu 0.5 -- \
  'printf "IOREQ-LAB-PASS a\nIOREQ-LAB-END 2 status=0\n" >> "$LAB_SERIAL"'
watch_case timeout-names-last-progress 1 '^timed out after 3 s .*step "IOREQ-LAB-STEP 1.0 waiting"' \
  --timeout 3 --stall-cpu 0 -- 'echo "IOREQ-LAB-STEP 1.0 waiting" >> "$LAB_SERIAL"; exec sleep 100'
[ "$failures" = 0 ] || { echo "$failures verdict case(s) wrong"; exit 1; }
