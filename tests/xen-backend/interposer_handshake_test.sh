#!/bin/bash
# The wrapper's handshake with the interposer, on Debian's real QEMU-xen 7.2 (xen-qemu-system-i386
# from the qemu-system-xen package, fetched into the cache): LD_PRELOAD of a missing or unloadable
# library is only a warning from ld.so, so the wrapper appends an option QEMU rejects unless the
# interposer was loaded and replaced it. Each case must leave QEMU not running (it exits before
# creating any device), except the one with the real interposer.
#   interposer_handshake_test.sh WRAPPER INTERPOSER.so
set -euo pipefail
wrapper=$1 interposer=$2
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=../../scripts/lib/common.sh
source "$root/scripts/lib/common.sh"
qemu="$(fetch_deb qemu-system-xen 2>/dev/null)/usr/libexec/xen-qemu-system-i386"
[ -x "$qemu" ] || { echo "FAIL: no QEMU-xen at $qemu" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
export IOREQ_FILTER_WRAPPER_CONF=/nonexistent IOREQ_FILTER_MODE=inline IOREQ_FILTER_QEMU="$qemu" \
    IOREQ_FILTER_RUN_DIR="$tmp/run"
# -version makes QEMU print its version and exit 0 - once its option parser accepted every option.
run() { IOREQ_FILTER_INTERPOSER=$1 "$wrapper" -xen-domid 7 -version > "$tmp/out" 2>&1; }

run "$interposer" || fail "QEMU-xen with the interposer did not start: $(cat "$tmp/out")"
grep -q '^QEMU emulator version 7\.2' "$tmp/out" || fail "unexpected output: $(cat "$tmp/out")"
echo "ok: with the interposer QEMU-xen starts ($(head -1 "$tmp/out"))"

if run "$tmp/missing.so"; then fail "QEMU ran without its interposer (file missing): $(cat "$tmp/out")"; fi
grep -q "interposer $tmp/missing.so is missing or unreadable; refusing to run QEMU unfiltered" "$tmp/out" ||
    fail "missing interposer: unclear error: $(cat "$tmp/out")"
echo "ok: a missing interposer: $(cat "$tmp/out")"

printf 'not a shared object\n' > "$tmp/broken.so"
if run "$tmp/broken.so"; then fail "QEMU ran although the interposer could not be loaded: $(cat "$tmp/out")"; fi
grep -q 'cannot be preloaded' "$tmp/out" && grep -q -- '-ioreq-filter-interposer-required: invalid option' "$tmp/out" ||
    fail "unloadable interposer: $(cat "$tmp/out")"
echo "ok: an unloadable interposer: $(tr '\n' ' ' < "$tmp/out")"

# A loadable library that is not the interposer (a wrong path in the configuration).
libm=$(ldconfig -p | awk '/libm\.so\.6 .*x86-64/ {print $NF; exit}')
if run "$libm"; then fail "QEMU ran with $libm in the interposer's place: $(cat "$tmp/out")"; fi
grep -q -- '-ioreq-filter-interposer-required: invalid option' "$tmp/out" || fail "wrong library: $(cat "$tmp/out")"
echo "ok: another library in its place: $(cat "$tmp/out")"
echo PASS
