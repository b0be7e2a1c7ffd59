# Lab: the tiny bare-metal io-probe guest (tests/xen/guests/tiny/io_probe.c) behind ioreq-filter on
# Debian's real Xen 4.17 and stock QEMU-xen 7.2, started through the device_model_override wrapper,
# first in proxy mode (ioreq-filterd), then inline. The floppy policy covers the FDC; the guest's
# VENOM sequence must be refused while its ordinary FDC/PCI accesses keep working.
. /lab/lib.sh

for img in proxy restart inline; do dd if=/dev/zero of=/tmp/fd-$img.img bs=1024 count=1440 2>/dev/null; done
mkdir -p /etc/ioreq-filter /var/log/xen
cat > /etc/ioreq-filter/devices.json <<'JSON'
[{"name": "fdc", "kind": "isa-fdc", "isa_ports": [["0x3f0", 8]]}]
JSON

run_guest() {
    mode=$1
    name=io-probe-$mode
    cat > /etc/ioreq-filter/dm-wrapper.conf <<CONF
IOREQ_FILTER_MODE=$mode
IOREQ_FILTER_POLICY_DIR=/lab/policies
IOREQ_FILTER_DEVICES=/etc/ioreq-filter/devices.json
IOREQ_FILTER_INTERPOSER=/usr/local/lib/libioreq-interposer.so
IOREQ_FILTER_DAEMON=/usr/local/bin/ioreq-filterd
# No hot standby: this test is about the path without one (the guest waits while no daemon runs,
# a fresh daemon resumes from the journal); lab_linux_floppy_standby tests the standby.
IOREQ_FILTER_STANDBY=0
CONF
    cat > /tmp/$name.cfg <<CFG
name = "$name"
type = "hvm"
memory = 32
vcpus = 1
firmware_override = "/lab/guests/io_probe.elf"
vga = "none"
vnc = 0
on_crash = "preserve"
device_model_override = "/usr/local/bin/ioreq-filter-dm-wrapper"
device_model_args_hvm = [ "-drive", "file=/tmp/fd-$mode.img,if=floppy,format=raw", "-device", "edu,addr=0x5" ]
CFG
    lab_step "$name.create"
    if ! lab_xl 90 create /tmp/$name.cfg; then
        lab_fail "$name.create" "xl create failed"
        cat /var/log/xen/qemu-dm-$name.log 2>/dev/null | tail -n 20
        return
    fi
    domid=$(lab_domid "$name")
    lab_pass "$name.create"
    lab_step "$name.started" "domid=$domid"
    if [ "$mode" = proxy ]; then
        sleep 2
        timeout 10 /usr/local/bin/ioreq-filter status --domid "$domid" || true
    fi
    if ! lab_wait 120 lab_domain_gone "$name"; then
        lab_fail "$name.guest-ended" "still running after 120 s"
        timeout 30 xl destroy "$domid" || true
    fi
    lab_guest_log "$domid" > /lab/out/$name-guest.log
    cp /var/log/xen/qemu-dm-$name.log /lab/out/ 2>/dev/null || true
    grep -q '^TINY-DONE' /lab/out/$name-guest.log && lab_pass "$name.guest-finished" ||
        lab_fail "$name.guest-finished" "no TINY-DONE (see $name-guest.log)"
    seen() { sed -n "s/^TINY $1=//p" /lab/out/$name-guest.log | head -n 1; }
    lab_expect "$name.pci-host-bridge-device" 1237 "$(seen pci-00:00.0-device)"
    lab_expect "$name.fdc-msr" 80 "$(seen fdc-msr-after-reset)"
    lab_expect "$name.fdc-version" 90 "$(seen fdc-version)"
    lab_expect "$name.edu-mmio-id" 010000ed "$(seen edu-mmio-id)"
    echo "guest saw: venom-msr-after=$(seen venom-msr-after) fdc-version-after-venom=$(seen fdc-version-after-venom)"
    if [ "$mode" = proxy ]; then
        log=/var/log/xen/ioreq-filterd-$domid.log
        cp "$log" /lab/out/ 2>/dev/null || true
        refused=$(grep -c '"event":"refused"' "$log" 2>/dev/null || echo 0)
        echo "daemon refusal lines: $refused"
        grep '"event":"refused"' "$log" | head -n 3
        grep '"final-stats"' "$log" | tail -n 1
        grep -q '"event":"attached"' "$log" && lab_pass "$name.daemon-attached" || lab_fail "$name.daemon-attached" "see $log"
        [ "$refused" -gt 0 ] && lab_pass "$name.venom-refused" || lab_fail "$name.venom-refused" "no refusal logged"
    else
        grep 'ioreq-interposer' /lab/out/qemu-dm-$name.log | head -n 20
        grep -q 'inline filtering enabled' /lab/out/qemu-dm-$name.log && lab_pass "$name.interposer-active" ||
            lab_fail "$name.interposer-active" "see qemu-dm-$name.log"
        grep -q 'ioreq-interposer: refused' /lab/out/qemu-dm-$name.log && lab_pass "$name.venom-refused" ||
            lab_fail "$name.venom-refused" "no refusal reported by the interposer"
    fi
}

# Kill ioreq-filterd while the guest runs in proxy mode: the guest must stop (blocked in a filtered
# request, never unfiltered) and finish normally once a new daemon re-attaches from the journal.
kill_and_restart() {
    name=io-probe-proxy
    sed 's/^name = .*/name = "io-probe-restart"/; s/fd-proxy.img/fd-restart.img/' /tmp/$name.cfg > /tmp/io-probe-restart.cfg
    lab_step restart.create
    if ! lab_xl 90 create -p /tmp/io-probe-restart.cfg; then
        lab_fail restart.create "xl create -p failed"
        return
    fi
    domid=$(lab_domid io-probe-restart)
    pid=$(ps -o pid,args | grep "[i]oreq-filterd --domid $domid " | awk "{print \$1}" | head -n 1)
    [ -n "$pid" ] && kill -9 "$pid"
    lab_step restart.daemon-killed "pid=$pid"
    xl unpause "$domid"
    sleep 5
    lab_guest_log "$domid" > /lab/out/restart-before.log
    if grep -q '^TINY-DONE' /lab/out/restart-before.log || lab_domain_gone io-probe-restart; then
        lab_fail restart.blocked-while-down "the guest finished without a daemon"
    else
        lab_pass restart.blocked-while-down
        echo "guest output while the daemon was down: $(wc -l < /lab/out/restart-before.log) lines"
    fi
    /usr/local/bin/ioreq-filterd --domid "$domid" --run-dir /run/ioreq-filter --policy-dir /lab/policies \
        --devices /etc/ioreq-filter/devices.json >> /var/log/xen/ioreq-filterd-$domid-restarted.log 2>&1 &
    if ! lab_wait 120 lab_domain_gone io-probe-restart; then
        lab_fail restart.guest-ended "still running after 120 s"
        timeout 30 xl destroy "$domid" || true
    fi
    lab_guest_log "$domid" > /lab/out/restart-guest.log
    cp /var/log/xen/ioreq-filterd-$domid-restarted.log /lab/out/ 2>/dev/null || true
    grep -E '"event":"(bring-up|attached)"' /var/log/xen/ioreq-filterd-$domid-restarted.log | head -n 12
    grep -q '^TINY-DONE' /lab/out/restart-guest.log && lab_pass restart.guest-finished ||
        lab_fail restart.guest-finished "no TINY-DONE after the restart"
    grep -q '"resumed":true' /var/log/xen/ioreq-filterd-$domid-restarted.log && lab_pass restart.resumed-from-journal ||
        lab_fail restart.resumed-from-journal "the new daemon did not resume"
    seen() { sed -n "s/^TINY $1=//p" /lab/out/restart-guest.log | head -n 1; }
    lab_expect restart.fdc-version 90 "$(seen fdc-version)"
    grep -q 'Weird HVM ioreq state' /lab/out/xl-dmesg-restart.log 2>/dev/null && lab_fail restart.no-state-crash "Xen saw a state go backwards"
    grep -q "shut down, reason code 0 " /var/log/xen/xl-io-probe-restart.log && lab_pass restart.clean-poweroff ||
        lab_fail restart.clean-poweroff "not a clean power-off (see xl-io-probe-restart.log)"
    cp /var/log/xen/xl-io-probe-restart.log /lab/out/ 2>/dev/null || true
}

run_guest proxy
kill_and_restart
run_guest inline
lab_finish
