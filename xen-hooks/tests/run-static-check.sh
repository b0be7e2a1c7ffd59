#!/usr/bin/env bash
# Every hvm_emulate_init_once()/hvm_emulate_one_insn()/handle_mmio()/x86_emulate() call in the
# patched tree passes a context (and the checker catches mutations that drop one). Also checks
# that the dom0 tool's parameter numbers and context names match the patched hypervisor.
set -euo pipefail
source "$(dirname "$0")/../scripts/lib.sh"
tree="$(patched_tree)/xen"
/usr/bin/python3 "$XEN_HOOKS_DIR/scripts/check-gate-call-sites.py" "$tree"
/usr/bin/python3 "$XEN_HOOKS_DIR/scripts/check-gate-call-sites.py" --self-test "$tree"

params="$tree/xen/include/public/hvm/params.h"
tool="$XEN_HOOKS_DIR/tools/xen_emul_gate.cpp"
for p in EMUL_GATE:kParamEmulGate EMUL_GATE_DENIED:kParamEmulGateDenied EMUL_GATE_SELECT:kParamEmulGateSelect; do
  xen=$(awk -v n="HVM_PARAM_${p%%:*}" '$1=="#define" && $2==n {print $3}' "$params")
  ours=$(sed -n "s/.*constexpr uint32_t ${p##*:} = \([0-9]*\);.*/\1/p" "$tool")
  [ -n "$xen" ] && [ "$xen" = "$ours" ] || die "HVM_PARAM_${p%%:*}: hypervisor says '$xen', xen-emul-gate says '$ours'"
done
xen_ctx=$(sed -n 's/^ *\[X86EMUL_GATE_[A-Z_]*\] *= "\([a-z-]*\)",/\1/p' "$tree/xen/arch/x86/x86_emulate/gate.c" | tr '\n' ' ')
tool_ctx=$(sed -n '/kContexts = {/,/};/p' "$tool" | grep -o '"[a-z-]*"' | tr -d '"' | tr '\n' ' ')
[ "$xen_ctx" = "$tool_ctx" ] || die "context names differ: hypervisor '$xen_ctx' vs xen-emul-gate '$tool_ctx'"
log "PASS: every call site passes a context; dom0 tool matches the patched ABI"
