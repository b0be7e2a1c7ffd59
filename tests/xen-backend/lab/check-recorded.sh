#!/bin/sh
# check-recorded.sh IOREQ_FILTER POLICY_DIR LAB_FILES_DIR
# The trace ioreq-filterd recorded on real Xen (lab_linux_floppy_monitor_recorded: handed over as
# base64 of a gzip file, dumped on the lab's console) checked offline with `ioreq-filter check` against one shipped policy
# set: the FDC must be bound to the set's policy, see well over a thousand requests, and none may be
# refused. The machine is QEMU's i440FX PC with one floppy drive, the layout of Xen's xenfv machine.
set -eu
cli=$1 policies=$2 files=$3
fail() { echo "FAIL: $*" >&2; exit 1; }
[ -f "$files/linux-monitor.qtest.gz.b64" ] || fail "no recorded trace in $files (did the lab test run?)"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
base64 -d "$files/linux-monitor.qtest.gz.b64" | gunzip > "$tmp/xen-floppy.qtest" ||
    fail "the handed-over trace is corrupt"
echo "trace: $(wc -l < "$tmp/xen-floppy.qtest") lines; $(tail -n 1 "$tmp/xen-floppy.qtest")"
timeout -s KILL 120 "$cli" check --policy-dir "$policies" --show 5 \
    --qemu-args "-machine pc-i440fx-7.2 -m 256 -nodefaults -blockdev driver=null-co,node-name=fd0,size=1474560,read-zeroes=on -device floppy,unit=0,drive=fd0" \
    "$tmp/xen-floppy.qtest" > "$tmp/report" 2>&1 || { cat "$tmp/report"; fail "ioreq-filter check failed"; }
cat "$tmp/report"
fdc=$(sed -n 's/^ *isa-fdc@0x3f0 ([^)]*) *\([0-9]*\) .*/\1/p' "$tmp/report")
[ "${fdc:-0}" -gt 1000 ] || fail "the FDC saw ${fdc:-no} forwarded requests (policy not bound?)"
grep -q 'refused 0$' "$tmp/report" || fail "refusals: $(grep 'refused' "$tmp/report" | tail -n 1)"
echo "PASS: $fdc FDC requests, 0 refused ($policies)"
