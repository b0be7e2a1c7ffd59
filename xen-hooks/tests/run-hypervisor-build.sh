#!/usr/bin/env bash
# The hypervisor builds with the series applied (Xen's own -Werror), with shadow paging and
# forced emulation compiled in, and the result carries the gate.
set -euo pipefail
source "$(dirname "$0")/../scripts/lib.sh"
xen=$("$XEN_HOOKS_DIR/scripts/build-hypervisor")
[ -s "$xen" ] && [ -s "$xen.gz" ] || die "no hypervisor image at $xen(.gz)"
header=$(readelf -h "$xen") || die "$xen is not an ELF image"
grep -Eq 'Class: +ELF32' <<<"$header" && grep -Eq 'Type: +EXEC' <<<"$header" || die "$xen is not the 32-bit multiboot ELF Xen builds"
syms="$(dirname "$xen")/xen-syms"
symbols=$(nm "$syms")  # not piped into grep -q: nm would die of SIGPIPE under pipefail
for s in x86emul_gate_check hvm_emul_gate_permits; do
  grep -qw "$s" <<<"$symbols" || die "$syms lacks $s: the series is not in the build"
done
grep -a -q 'emul-gate: %s %s' "$syms" || die "$syms lacks the gate's log message"
log "PASS: patched hypervisor built: $xen ($(stat -c %s "$xen.gz") bytes gzipped)"
