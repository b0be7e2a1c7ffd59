# Lab: a Debian Linux HVM guest reads a floppy image with the real floppy.ko through stock QEMU-xen
# behind ioreq-filter in proxy mode (the datasheet floppy policy, enforce); its md5 must match and
# the daemon's refusals and counters are reported.
. /lab/lib.sh

mkdir -p /etc/ioreq-filter /var/log/xen
cat > /etc/ioreq-filter/devices.json <<'JSON'
[{"name": "fdc", "kind": "isa-fdc", "isa_ports": [["0x3f0", 8]]}]
JSON
cat > /etc/ioreq-filter/dm-wrapper.conf <<CONF
IOREQ_FILTER_MODE=${FILTER_MODE:-proxy}
IOREQ_FILTER_POLICY_DIR=/lab/policies
IOREQ_FILTER_DEVICES=/etc/ioreq-filter/devices.json
IOREQ_FILTER_INTERPOSER=/usr/local/lib/libioreq-interposer.so
IOREQ_FILTER_DAEMON=/usr/local/bin/ioreq-filterd
CONF

serial=/lab/out/floppy-filtered-guest-serial.log
want=$(lab_linux_floppy_guest floppy-filtered "$serial" \
    'device_model_override = "/usr/local/bin/ioreq-filter-dm-wrapper"')

lab_step xl-create
if ! lab_xl 60 create /tmp/floppy-filtered.cfg; then
    lab_fail floppy-filtered.create "xl create failed"
    lab_finish
fi
domid=$(lab_domid floppy-filtered)
lab_step guest-started "domid=$domid"
if ! lab_wait 600 lab_domain_gone floppy-filtered; then
    lab_fail floppy-filtered.guest-ended "still running after 600 s"
    timeout 10 /usr/local/bin/ioreq-filter stats --domid "$domid" || true
    timeout 30 xl destroy "$domid" || true
fi
lab_step guest-ended
tr -d '\r' < "$serial" | grep '^GUEST-' || true
log=/var/log/xen/ioreq-filterd-$domid.log
cp "$log" /lab/out/ 2>/dev/null || true
echo "daemon refusal lines: $(grep -c '"event":"refused"' "$log")"
grep '"event":"refused"' "$log" | head -n 5
grep 'suppressed' "$log" | head -n 3
grep -q '^GUEST-UP' "$serial" && lab_pass floppy-filtered.guest-booted ||
    lab_fail floppy-filtered.guest-booted "the guest's init never ran"
got=$(tr -d '\r' < "$serial" | sed -n 's/^GUEST-FLOPPY-MD5 //p' | head -n 1)
lab_expect floppy-filtered.md5 "$want" "$got"
grep -q '"event":"attached"' "$log" && lab_pass floppy-filtered.daemon-attached || lab_fail floppy-filtered.daemon-attached "see $log"
lab_finish
