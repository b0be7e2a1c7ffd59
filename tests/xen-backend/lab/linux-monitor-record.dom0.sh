# Lab: the Debian Linux HVM guest reads its floppy (real floppy.ko) through ioreq-filterd in proxy
# mode, the engine in MONITOR mode with the binary-derived policies (policies/linux-6.1), recording
# every request it is asked about as a trace (--record). The shipped policy must not have refused
# anything (monitored = refused = 0); the trace is handed to the host (gzip + base64) where
# check-recorded.sh runs `ioreq-filter check` on it against each shipped set. A second guest then
# reads a new image with the same policies in ENFORCE mode: 0 refusals, md5 right.
# The daemon also drops its privileges once attached: --restrict (xentoolcore_restrict_all) with
# --verify-restriction against a second, paused domain that must be reachable before and not after,
# and --user nobody.
. /lab/lib.sh

mkdir -p /etc/ioreq-filter /var/log/xen /var/lib/ioreq-filter/rec
grep -q '^nobody:' /etc/passwd || echo 'nobody:x:65534:65534:nobody:/nonexistent:/bin/false' >> /etc/passwd
grep -q '^nogroup:' /etc/group || echo 'nogroup:x:65534:' >> /etc/group
chown 65534:65534 /var/lib/ioreq-filter/rec  # the daemon renames its finished trace as nobody
cat > /etc/ioreq-filter/devices.json <<'JSON'
[{"name": "fdc", "kind": "isa-fdc", "isa_ports": [["0x3f0", 8]]}]
JSON

sum_field() { printf '%s\n' "$1" | sed -n "s/.*\"$2\": *\([0-9]*\).*/\1/p" | head -n 1; }

# The domain a restricted daemon must no longer reach: paused, never run.
cat > /tmp/bystander.cfg <<'CFG'
name = "bystander"
type = "hvm"
memory = 32
vcpus = 1
firmware_override = "/lab/guests/io_probe.elf"
vga = "none"
vnc = 0
CFG
lab_step bystander.create
if ! lab_xl 90 create -p /tmp/bystander.cfg; then
    lab_fail bystander.create "xl create -p failed"
    lab_finish
fi
other=$(lab_domid bystander)

cat > /etc/ioreq-filter/dm-wrapper.conf <<CONF
IOREQ_FILTER_MODE=proxy
IOREQ_FILTER_ENGINE_MODE=monitor
IOREQ_FILTER_POLICY_DIR=/lab/policies
IOREQ_FILTER_DEVICES=/etc/ioreq-filter/devices.json
IOREQ_FILTER_INTERPOSER=/usr/local/lib/libioreq-interposer.so
IOREQ_FILTER_DAEMON=/usr/local/bin/ioreq-filterd
IOREQ_FILTER_DAEMON_ARGS="--restrict --verify-restriction $other --user nobody --record /var/lib/ioreq-filter/rec/dom%d.qtest"
CONF

name=linux-monitor
serial=/lab/out/$name-serial.log
want=$(lab_linux_floppy_guest $name "$serial" 'device_model_override = "/usr/local/bin/ioreq-filter-dm-wrapper"')
lab_step "$name.create"
if ! lab_xl 90 create /tmp/$name.cfg; then
    lab_fail "$name.create" "xl create failed"
    lab_finish
fi
domid=$(lab_domid $name)
log=/var/log/xen/ioreq-filterd-$domid.log
trace=/var/lib/ioreq-filter/rec/dom$domid.qtest

# While the guest runs: the daemon's real uid.
i=0
while ! tr -d '\r' < "$serial" 2>/dev/null | grep -q '^GUEST-READING' && [ $i -lt 600 ]; do sleep 1; i=$((i + 1)); done
pid=$(ps -o pid,args | grep "[i]oreq-filterd --domid $domid " | awk '{print $1}' | head -n 1)
uids=$(sed -n 's/^Uid:[[:space:]]*//p' /proc/$pid/status 2>/dev/null | tr -s '[:space:]' ' ')
echo "daemon pid $pid: Uid $uids"
lab_expect privileges.user-dropped "65534 65534 65534 65534 " "$uids"

if ! lab_wait 600 lab_domain_gone $name; then
    lab_fail "$name.guest-ended" "still running after 600 s"
    timeout 30 xl destroy "$domid" || true
fi
lab_step "$name.ended"
# The daemon's 100 ms timer notices the domain is gone, writes final-stats, renames the trace.
lab_wait 30 grep -q '"final-stats"' "$log" || echo "the daemon wrote no final-stats"
timeout 30 xl destroy "$other" || true
cp "$log" /lab/out/ 2>/dev/null || true
tr -d '\r' < "$serial" | grep '^GUEST-' || true
got=$(tr -d '\r' < "$serial" | sed -n 's/^GUEST-FLOPPY-MD5 \([0-9a-f]*\).*/\1/p' | head -n 1)
lab_expect "$name.md5" "$want" "$got"

priv=$(grep '"event":"privileges"' "$log" | grep restricted_to | head -n 1)
echo "privileges: $priv"
echo "$priv" | grep -q "\"restricted_to\":$domid" && lab_pass privileges.restricted || lab_fail privileges.restricted "no restriction logged"
if echo "$priv" | grep -q '"before":{[^}]*"reachable":true' && echo "$priv" | grep -q '"after":{[^}]*"reachable":false'; then
    lab_pass privileges.other-domain-out-of-reach "domid $other reachable before, not after"
else
    lab_fail privileges.other-domain-out-of-reach "$priv"
fi
grep -q '"event":"privileges","user":"nobody"\|"user":"nobody"' "$log" || lab_fail privileges.user-logged "no user drop logged"

final=$(grep '"final-stats"' "$log" | tail -n 1)
echo "final: $final"
relay=$(printf '%s\n' "$final" | sed -n 's/.*"relay":{\([^}]*\)}.*/\1/p')
req=$(sum_field "$relay" requests)
mon=$(sum_field "$relay" monitored)
ref=$(sum_field "$relay" refused)
echo "would-refuse lines: $(grep -c '"event":"would-refuse"' "$log")"
grep '"event":"would-refuse"' "$log" | head -n 5
if [ "${req:-0}" -gt 1000 ] && [ "$mon" = 0 ] && [ "$ref" = 0 ]; then
    lab_pass "$name.nothing-would-be-refused" "$req requests, monitored 0, refused 0"
else
    lab_fail "$name.nothing-would-be-refused" "requests=${req:-?} monitored=${mon:-?} refused=${ref:-?}"
fi

grep '"event":"record' "$log"
if [ -f "$trace" ]; then
    fdc=$(grep -c '^[a-z]* 0x3f[0-7] ' "$trace")
    echo "trace: $(wc -l < "$trace") lines, $fdc FDC accesses; $(tail -n 1 "$trace")"
    head -n 4 "$trace"
    # dom0 dumps the last 200 kB of each /lab/out file on the console (tests/xen/dom0/init).
    gzip -9 -c "$trace" | base64 > /lab/out/$name.qtest.gz.b64
    size=$(wc -c < /lab/out/$name.qtest.gz.b64)
    echo "trace handed over as $size bytes of base64"
    [ "$size" -lt 190000 ] || lab_fail "$name.trace-handed-over" "$size bytes of base64: too large for the console dump"
    [ "$fdc" -gt 1000 ] && lab_pass "$name.trace-recorded" "$fdc FDC accesses" || lab_fail "$name.trace-recorded" "only $fdc FDC accesses"
else
    ls -l /var/lib/ioreq-filter/rec/
    lab_fail "$name.trace-recorded" "no $trace"
fi

# The same workload, same policies, enforce mode.
name=linux-enforce
serial=/lab/out/$name-serial.log
sed -i -e 's/^IOREQ_FILTER_ENGINE_MODE=.*/IOREQ_FILTER_ENGINE_MODE=enforce/' -e '/^IOREQ_FILTER_DAEMON_ARGS=/d' \
    /etc/ioreq-filter/dm-wrapper.conf
# With reply polling at its largest bound (QEMU under TCG answers in hundreds of us; with 50 us the
# polling switched itself off at once): answers taken from the shadow slot leave QEMU's port masked
# with its notification latched, and a poll that gives up must unmask the port and get that
# notification from Xen, or the guest hangs and the md5 never comes.
echo 'IOREQ_FILTER_DAEMON_ARGS="--reply-poll-us 1000"' >> /etc/ioreq-filter/dm-wrapper.conf
want=$(lab_linux_floppy_guest $name "$serial" 'device_model_override = "/usr/local/bin/ioreq-filter-dm-wrapper"')
lab_step "$name.create"
if ! lab_xl 90 create /tmp/$name.cfg; then
    lab_fail "$name.create" "xl create failed"
    lab_finish
fi
domid=$(lab_domid $name)
log=/var/log/xen/ioreq-filterd-$domid.log
if ! lab_wait 600 lab_domain_gone $name; then
    lab_fail "$name.guest-ended" "still running after 600 s"
    timeout 30 xl destroy "$domid" || true
fi
lab_step "$name.ended"
lab_wait 30 grep -q '"final-stats"' "$log" || echo "the daemon wrote no final-stats"
cp "$log" /lab/out/ 2>/dev/null || true
tr -d '\r' < "$serial" | grep '^GUEST-' || true
got=$(tr -d '\r' < "$serial" | sed -n 's/^GUEST-FLOPPY-MD5 \([0-9a-f]*\).*/\1/p' | head -n 1)
lab_expect "$name.md5" "$want" "$got"
final=$(grep '"final-stats"' "$log" | tail -n 1)
relay=$(printf '%s\n' "$final" | sed -n 's/.*"relay":{\([^}]*\)}.*/\1/p')
req=$(sum_field "$relay" requests)
ref=$(sum_field "$relay" refused)
grep '"event":"refused"' "$log" | head -n 5
if [ "${req:-0}" -gt 1000 ] && [ "$ref" = 0 ]; then
    lab_pass "$name.no-refusals" "$req requests, refused 0"
else
    lab_fail "$name.no-refusals" "requests=${req:-?} refused=${ref:-?}"
fi
polling=$(printf '%s\n' "$final" | sed -n 's/.*"reply_polling":{\([^}]*\)}.*/\1/p')
if [ "$(sum_field "$polling" max_us)" = 1000 ]; then
    lab_pass "$name.reply-polling" "$polling"
else
    lab_fail "$name.reply-polling" "final-stats has no reply_polling with max_us 1000: ${polling:-none}"
fi
lab_finish
