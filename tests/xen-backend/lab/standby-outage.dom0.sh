# Lab: outages the guest does not notice (issue #14). The Debian Linux HVM guest (real floppy.ko)
# reads its floppy three times with O_DIRECT through ioreq-filter in proxy mode (datasheet policy,
# enforce, no device list: QMP discovery). A hot standby (ioreq-filterd --standby) waits beside the
# serving daemon (the wrapper starts it); during the reads the serving daemon is SIGKILLed three
# times, each time the standby takes over from the journal and starts its own successor. Every pass must give the disk's
# md5 with dd status 0 and no kernel I/O error; the takeover time (death seen by the standby's pidfd
# to serving again) is each new daemon's "takeover_us".
. /lab/lib.sh

mkdir -p /etc/ioreq-filter /var/log/xen
cat > /etc/ioreq-filter/dm-wrapper.conf <<'CONF'
IOREQ_FILTER_MODE=proxy
IOREQ_FILTER_POLICY_DIR=/lab/policies
IOREQ_FILTER_UNFILTERED=i440FX,PIIX3-xen,piix3-ide,PIIX4_PM,xen-platform,i8257,i8042,mc146818rtc,port92,isa-serial
IOREQ_FILTER_INTERPOSER=/usr/local/lib/libioreq-interposer.so
IOREQ_FILTER_DAEMON=/usr/local/bin/ioreq-filterd
CONF
name=linux-standby
serial=/lab/out/$name-serial.log
want=$(lab_linux_floppy_guest "$name" "$serial" 'device_model_override = "/usr/local/bin/ioreq-filter-dm-wrapper"')
sed -i 's|^cmdline = "\(.*\)"|cmdline = "\1 iof.passes=3"|' /tmp/$name.cfg
# at_least PATTERN N: the daemons' log has at least N lines matching PATTERN (re-read on every poll).
at_least() { n=$(grep -c "$1" "$log" 2>/dev/null); [ "${n:-0}" -ge "$2" ]; }

lab_step "$name.create"
if ! lab_xl 90 create /tmp/$name.cfg; then lab_fail "$name.create" "xl create failed"; lab_finish; fi
domid=$(lab_domid $name)
if ! lab_wait_serial 600 "$serial" '^GUEST-READING 1'; then
    lab_fail "$name.reading" "the guest never started its floppy read"
    timeout 30 xl destroy "$domid" || true
    lab_finish
fi
lab_step "$name.reading"
# The wrapper started the serving daemon and its standby; every daemon logs to the same file. After
# each takeover the new serving daemon starts its own successor standby.
log=/var/log/xen/ioreq-filterd-$domid.log
k=1
while [ $k -le 3 ]; do
    if ! lab_wait 90 at_least '"event":"standby"' $k; then
        lab_fail "$name.standby-$k" "no standby ready (see ioreq-filterd-$domid.log)"
        tail -n 5 "$log"
        break
    fi
    # Each kill lands in a different pass: wait for pass k to be under way.
    lab_wait_serial 300 "$serial" "^GUEST-READING $k" || true
    sleep 3
    serving=$(/usr/local/bin/ioreq-filter status --domid "$domid" --json 2>/dev/null | sed -n 's/.*"pid": *\([0-9]*\).*/\1/p' | head -n 1)
    if [ -z "$serving" ]; then
        lab_fail "$name.serving-$k" "ioreq-filter status named no serving daemon"
        break
    fi
    kill -9 "$serving"
    lab_step "$name.killed-$k" "pid=$serving"
    if lab_wait 30 at_least '"takeover_us"' $k; then
        us=$(sed -n 's/.*"takeover_us":\([0-9]*\).*/\1/p' "$log" | sed -n "${k}p")
        lab_pass "$name.takeover-$k" "$us us"
        echo "TAKEOVER $k $us us"
    else
        lab_fail "$name.takeover-$k" "no takeover logged (see ioreq-filterd-$domid.log)"
        tail -n 5 "$log"
    fi
    k=$((k + 1))
done
grep '"event":"bring-up"' "$log" | grep '"t_us"' | sed 's/.*"stage":"\([^"]*\)","t_us":\([0-9]*\).*/  \2 us  \1/' | head -n 24
if ! lab_wait_serial 600 "$serial" '^GUEST-DONE'; then
    lab_fail "$name.done" "the guest did not finish its reads"
    timeout 30 xl destroy "$domid" || true
fi
lab_wait 60 lab_domain_gone "$name" || timeout 30 xl destroy "$domid" || true
cp /var/log/xen/ioreq-filterd-$domid*.log /lab/out/ 2>/dev/null || true
tr -d '\r' < "$serial" | grep '^GUEST-'
p=1
while [ $p -le 3 ]; do
    line=$(tr -d '\r' < "$serial" | grep "^GUEST-PASS $p " | head -n 1)
    got=$(echo "$line" | sed -n 's/^GUEST-PASS [0-9]* md5 \([0-9a-f]*\) dd-status \([0-9]*\).*/\1 \2/p')
    lab_expect "$name.pass-$p" "$want 0" "$got"
    p=$((p + 1))
done
lab_serial_has "$serial" '^GUEST-ERROR' && lab_fail "$name.no-io-errors" "$(tr -d '\r' < "$serial" | grep '^GUEST-ERROR' | head -n 3)" ||
    lab_pass "$name.no-io-errors"
grep -h '"event":"refused"' /var/log/xen/ioreq-filterd-$domid*.log | head -n 3
refused=$(cat /var/log/xen/ioreq-filterd-$domid*.log | grep -c '"event":"refused"')
lab_expect "$name.no-refusals" 0 "$refused"
lab_finish
