#!/usr/bin/env bash
# Item 6 of the gate: builds the patched hypervisor (xen-hooks/scripts/build-hypervisor, cached)
# and boots it in the Xen lab (tests/xen/lab, SVM under QEMU TCG) with hvm_fep, running
# gate-probe.dom0.sh against the tiny guest gate_probe.c. Usage: run-gate-lab.sh XEN_EMUL_GATE_BIN LOGDIR
set -euo pipefail
source "$(dirname "$0")/../scripts/lib.sh"
tool="${1:?usage: run-gate-lab.sh XEN_EMUL_GATE_BIN LOGDIR}"
logdir="${2:?usage: run-gate-lab.sh XEN_EMUL_GATE_BIN LOGDIR}"
xen=$("$XEN_HOOKS_DIR/scripts/build-hypervisor")
exec "$IOREQ_FILTER_ROOT/tests/xen/lab" run --name xen-gate-probe --logdir "$logdir" \
  --dom0-script "$XEN_HOOKS_DIR/lab/gate-probe.dom0.sh" \
  --tiny-guest "$XEN_HOOKS_DIR/lab/gate_probe.c" \
  --bin "$tool:/usr/local/bin/xen-emul-gate" \
  --xen "$xen" --xen-args "hvm_fep" --timeout 540 \
  --expect gate.enforce.mmio-lgdt --expect gate.enforce.denied-total --expect gate.off.mmio-lgdt
