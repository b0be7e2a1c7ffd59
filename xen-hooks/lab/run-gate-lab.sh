#!/usr/bin/env bash
# Item 6 of the gate: builds the patched hypervisor (xen-hooks/scripts/build-hypervisor, cached)
# and boots it in the Xen lab (tests/xen/lab, SVM under QEMU TCG) with hvm_fep.
#   run-gate-lab.sh XEN_EMUL_GATE_BIN LOGDIR probe    tiny guest: verdicts per context, off/log/enforce
#   run-gate-lab.sh XEN_EMUL_GATE_BIN LOGDIR floppy   hvmloader+SeaBIOS+Linux floppy read, enforcing
set -euo pipefail
source "$(dirname "$0")/../scripts/lib.sh"
usage="usage: run-gate-lab.sh XEN_EMUL_GATE_BIN LOGDIR probe|floppy"
tool="${1:?$usage}"
logdir="${2:?$usage}"
case="${3:?$usage}"
xen=$("$XEN_HOOKS_DIR/scripts/build-hypervisor")
lab=("$IOREQ_FILTER_ROOT/tests/xen/lab" run --logdir "$logdir" --bin "$tool:/usr/local/bin/xen-emul-gate"
     --xen "$xen" --xen-args "hvm_fep")
case "$case" in
  probe)
    exec "${lab[@]}" --name xen-gate-probe --dom0-script "$XEN_HOOKS_DIR/lab/gate-probe.dom0.sh" \
      --tiny-guest "$XEN_HOOKS_DIR/lab/gate_probe.c" --timeout 540 \
      --expect gate.enforce.mmio-lgdt --expect gate.enforce.denied-total --expect gate.off.mmio-lgdt \
      --expect gate.log.denied-total ;;
  floppy)
    exec "${lab[@]}" --name xen-gate-floppy --dom0-script "$XEN_HOOKS_DIR/lab/gate-floppy.dom0.sh" \
      --linux-guest "$IOREQ_FILTER_ROOT/tests/xen/guests/linux/floppy-md5.init:floppy" --timeout 1080 \
      --expect gate-floppy.md5 --expect gate-floppy.denied-total --expect gate-floppy.enforcing ;;
  *) die "$usage" ;;
esac
