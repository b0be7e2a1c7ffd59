# Lab: the tiny bare-metal io-probe guest (tests/xen/guests/tiny/io_probe.c) behind ioreq-filter on
# Debian's real Xen 4.17 and stock QEMU-xen 7.2, started through the device_model_override wrapper,
# first in proxy mode (ioreq-filterd), then inline. The floppy policy covers the FDC; the guest's
# VENOM sequence must be refused while its ordinary FDC/PCI accesses keep working.
. /lab/lib.sh

dd if=/dev/zero of=/tmp/fd.img bs=1024 count=1440 2>/dev/null
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
device_model_args_hvm = [ "-drive", "file=/tmp/fd.img,if=floppy,format=raw", "-device", "edu,addr=0x5" ]
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
    lab_wait 240 lab_domain_gone "$name" || lab_fail "$name.guest-ended" "still running after 240 s"
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

run_guest proxy
run_guest inline
lab_finish
