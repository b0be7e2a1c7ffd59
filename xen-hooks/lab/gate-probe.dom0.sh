# Lab test for the emulation gate on the real, patched Xen (booted with hvm_fep): the tiny guest
# xen-hooks/lab/gate_probe.c runs three times - gate off, log only, enforcing - and each verdict
# is checked: needed instructions work in every mode; the ones their context does not need
# raise #UD only when enforcing, and every one is counted per context by the hypervisor.
. /lab/lib.sh

# --bin installs into /usr/local/bin, which is not on dom0's PATH.
gate_tool=/usr/local/bin/xen-emul-gate

cat > /tmp/gate-probe.cfg <<CFG
name = "gate-probe"
type = "hvm"
memory = 32
vcpus = 1
firmware_override = "/lab/guests/gate_probe.elf"
vga = "none"
vnc = 0
on_crash = "preserve"
CFG

needed="lapic-mov-read lapic-mov-write hpet-movzx string-outsb cr0-write"
unneeded="mmio-sgdt mmio-lgdt mmio-ljmp mmio-bts-reg fep-mov"

run_probe() {
    local mode="$1" domid
    lab_step "create-$mode"
    if ! lab_xl 60 create -p /tmp/gate-probe.cfg; then
        lab_fail "gate.$mode.create" "xl create failed"
        return 1
    fi
    domid=$(lab_domid gate-probe)
    if "$gate_tool" "$domid" "$mode" > "/lab/out/gate-$mode-set.txt" 2>&1; then
        lab_pass "gate.$mode.param-set"
    else
        lab_fail "gate.$mode.param-set" "$(cat "/lab/out/gate-$mode-set.txt")"
    fi
    lab_xl 20 unpause gate-probe
    if lab_wait 180 lab_guest_says "$domid" '^GATE-PROBE-DONE'; then
        lab_pass "gate.$mode.guest-finished"
    else
        lab_fail "gate.$mode.guest-finished" "no GATE-PROBE-DONE within 180 s"
    fi
    lab_guest_log "$domid" > "/lab/out/gate-$mode-guest.log"
    "$gate_tool" "$domid" status > "/lab/out/gate-$mode-status.txt" 2>&1 || true
    cat "/lab/out/gate-$mode-status.txt"
    sed -n 's/^TINY gate-/  verdict /p' "/lab/out/gate-$mode-guest.log"
    lab_xl 30 destroy gate-probe
    lab_wait 30 lab_domain_gone gate-probe || true
    GUEST_LOG="/lab/out/gate-$mode-guest.log"
    STATUS="/lab/out/gate-$mode-status.txt"
}

seen() { sed -n "s/^TINY gate-$1=//p" "$GUEST_LOG" | head -n 1; }
denied() { sed -n "s/^denied $1 //p" "$STATUS" | head -n 1; }

for mode in off log enforce; do
    run_probe "$mode" || continue
    for p in $needed; do
        lab_expect "gate.$mode.$p" ok "$(seen "$p")"
    done
    if [ "$mode" = enforce ]; then
        for p in $unneeded; do
            lab_expect "gate.$mode.$p" 6 "$(seen "$p")"
        done
        lab_expect "gate.$mode.lgdt-changed-gdtr" 0 "$(seen lgdt-changed-gdtr)"
    else
        # Without enforcement Xen emulates them: MMIO-sourced GDTR, far jump through device
        # registers (ends in #GP on the null selector it read), BTS on the APIC page.
        for p in mmio-sgdt mmio-lgdt mmio-bts-reg fep-mov; do
            lab_expect "gate.$mode.$p" ok "$(seen "$p")"
        done
        v=$(seen mmio-ljmp)
        if [ -n "$v" ] && [ "$v" != 6 ]; then lab_pass "gate.$mode.mmio-ljmp-emulated"; else
            lab_fail "gate.$mode.mmio-ljmp-emulated" "got '$v'"; fi
        lab_expect "gate.$mode.lgdt-changed-gdtr" 1 "$(seen lgdt-changed-gdtr)"
    fi
    case "$mode" in
        off) lab_expect "gate.off.denied-total" 0 "$(sed -n 's/^denied total //p' "$STATUS")" ;;
        *)   lab_expect "gate.$mode.denied-total" 5 "$(sed -n 's/^denied total //p' "$STATUS")"
             lab_expect "gate.$mode.denied-mmio" 4 "$(denied mmio)"
             lab_expect "gate.$mode.denied-hvm-fep" 1 "$(denied hvm-fep)" ;;
    esac
done

timeout 20 xl dmesg | grep 'emul-gate:' > /lab/out/gate-xen-log.txt || true
cat /lab/out/gate-xen-log.txt
if grep -q 'emul-gate: denied sysdesc-load' /lab/out/gate-xen-log.txt &&
   grep -q 'emul-gate: would deny far-branch' /lab/out/gate-xen-log.txt; then
    lab_pass gate.xen-logs-verdicts
else
    lab_fail gate.xen-logs-verdicts "Xen's log lacks the gate's denied / would-deny lines"
fi
lab_finish
