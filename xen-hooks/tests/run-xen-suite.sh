#!/usr/bin/env bash
# Xen's own x86 emulator test suite, built from Debian's source with the gate series applied:
#  1. unchanged (no gate): must pass;
#  2. the gate in log-only mode in every context: must pass (classifier runs on every
#     instruction the suite emulates, without changing behaviour);
#  3. enforcing real mode without unrestricted guest (allows everything): must pass with
#     0 denials;
#  4. enforcing MMIO: must FAIL - proves the hook really sits in the emulator's path.
set -euo pipefail
source "$(dirname "$0")/../scripts/lib.sh"
emu=$("$XEN_HOOKS_DIR/scripts/build-harness")
cd "$emu"
run() { timeout 120 ./test_x86_emulator >"$1.out" 2>"$1.err"; }

run plain || { tail -5 plain.out; die "Xen's test suite fails without the gate"; }
tests=$(grep -c 'okay$' plain.out)
log "Xen's suite without gate: $tests checks okay"

for ctx in decode-only mmio apic-access string-pio cr-access invlpg sysdesc ud-intercept hvm-fep \
           realmode ro-mmio introspection shadow-pt; do
  XEN_EMUL_GATE="$ctx:log:amd,hap" run "log-$ctx" || { tail -5 "log-$ctx.out"; die "suite fails with the gate logging in $ctx"; }
  [ "$(grep -c 'okay$' "log-$ctx.out")" = "$tests" ] || die "log mode in $ctx changed the number of passing checks"
  grep '^gate: context' "log-$ctx.err"
done

XEN_EMUL_GATE="realmode:enforce:hap" run enforce-realmode || { tail -5 enforce-realmode.out; die "suite fails enforcing real mode (no unrestricted guest)"; }
grep -q '^gate: context realmode mode enforce checked [1-9][0-9]* denied 0$' enforce-realmode.err \
  || { cat enforce-realmode.err; die "real mode enforcement did not check instructions with 0 denials"; }
grep '^gate: context' enforce-realmode.err

if XEN_EMUL_GATE="mmio:enforce:amd,hap" run enforce-mmio; then
  die "suite passed while enforcing the MMIO context: the gate is not in the emulator's path"
fi
grep '^gate: context' enforce-mmio.err
log "PASS: suite passes in log mode in all contexts and enforcing real mode; enforcing MMIO breaks it as it must"
