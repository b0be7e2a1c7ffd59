#!/bin/sh
# ioreq-filter-dm-wrapper keeps QEMU's argv and inherited fds, sets up the interposer, starts the
# daemon first in proxy mode, and refuses to start QEMU it cannot place behind the filter.
# A fake QEMU records what it was exec'd with; a fake daemon only creates its socket.
set -eu
wrapper=$1
tmp=$(mktemp -d)
trap 'kill $(cat "$tmp/daemon.pid" 2>/dev/null) 2>/dev/null || true; rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

cat > "$tmp/qemu" <<'SH'
#!/bin/sh
printf '%s\n' "$@" > "$OUT/argv"
printf '%s\n' "$LD_PRELOAD" > "$OUT/preload"
printf '%s %s\n' "$IOREQ_FILTER_MODE" "${IOREQ_FILTER_DEVICES:-}" > "$OUT/env"
printf '%s\n' "${IOREQ_FILTER_UNFILTERED:-}" > "$OUT/unfiltered"
if [ -e /proc/self/fd/7 ]; then echo inherited > "$OUT/fd7"; fi
SH
cat > "$tmp/daemon" <<'SH'
#!/bin/sh
case " $* " in *" --standby "*) printf '%s\n' "$@" > "$OUT/standby-argv"; exit 0 ;; esac
printf '%s\n' "$@" > "$OUT/daemon-argv"
echo $$ > "$OUT/daemon.pid"
exec /usr/bin/python3 -c 'import socket,sys,time; s=socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen(1); time.sleep(30)' "$RUN/dom7.sock"
SH
chmod +x "$tmp/qemu" "$tmp/daemon"
cat > "$tmp/conf" <<CONF
IOREQ_FILTER_QEMU=$tmp/qemu
IOREQ_FILTER_INTERPOSER=/lib/x86_64-linux-gnu/libdl.so.2
IOREQ_FILTER_LOG_DIR=$tmp/log
IOREQ_FILTER_DAEMON=$tmp/daemon
IOREQ_FILTER_RUN_DIR=$tmp/run
IOREQ_FILTER_DEVICES=/etc/iof/dom%d.json
CONF
export OUT="$tmp" RUN="$tmp/run" IOREQ_FILTER_WRAPPER_CONF="$tmp/conf"

# inline: argv untouched but for the interposer handshake option at the end, fd 7 inherited, interposer first in LD_PRELOAD
LD_PRELOAD=/lib/x86_64-linux-gnu/libm.so.6 IOREQ_FILTER_MODE=inline "$wrapper" -xen-domid 7 -chardev 'socket,id=libxl-cmd,path=/x,server=on,wait=off' \
    -mon chardev=libxl-cmd,mode=control -no-shutdown 7<"$tmp/conf"
printf '%s\n' -xen-domid 7 -chardev 'socket,id=libxl-cmd,path=/x,server=on,wait=off' -mon chardev=libxl-cmd,mode=control \
    -no-shutdown -ioreq-filter-interposer-required > "$tmp/expected"
cmp -s "$tmp/argv" "$tmp/expected" || fail "inline: argv changed: $(cat "$tmp/argv")"
[ "$(cat "$tmp/preload")" = "/lib/x86_64-linux-gnu/libdl.so.2:/lib/x86_64-linux-gnu/libm.so.6" ] || fail "LD_PRELOAD: $(cat "$tmp/preload")"
[ "$(cat "$tmp/env")" = "inline /etc/iof/dom7.json" ] || fail "env: $(cat "$tmp/env")"
[ -e "$tmp/fd7" ] || fail "inherited fd 7 was not passed on"
[ "$(cat "$tmp/unfiltered")" = "" ] || fail "inline: an unfiltered list nobody set: $(cat "$tmp/unfiltered")"
# inline: the unfiltered list reaches the interposer (it reads IOREQ_FILTER_UNFILTERED)
IOREQ_FILTER_UNFILTERED=isa-serial,PIIX4_PM IOREQ_FILTER_MODE=inline "$wrapper" -xen-domid 7
[ "$(cat "$tmp/unfiltered")" = "isa-serial,PIIX4_PM" ] || fail "inline: unfiltered list not exported: $(cat "$tmp/unfiltered")"

# no domid: QEMU must not run at all
rm -f "$tmp/argv"
if IOREQ_FILTER_MODE=inline "$wrapper" -name x 2>/dev/null; then fail "ran without -xen-domid"; fi
[ ! -e "$tmp/argv" ] || fail "QEMU was started without a domid"

# proxy: daemon first (domid, policy, devices), a second QMP socket for it, argv otherwise intact
IOREQ_FILTER_MODE=proxy IOREQ_FILTER_DAEMON_ARGS="--restrict --record /var/lib/iof/dom%d.qtest" \
    "$wrapper" -xen-domid 7 -runas 1234:1234 -no-shutdown
grep -qx -- "--domid" "$tmp/daemon-argv" || fail "daemon args: $(cat "$tmp/daemon-argv")"
grep -qx -- "--dm-uid" "$tmp/daemon-argv" && grep -qx 1234 "$tmp/daemon-argv" || fail "daemon did not get QEMU's uid"
grep -qx -- "/etc/iof/dom7.json" "$tmp/daemon-argv" || fail "daemon did not get the device list"
grep -qx -- "--restrict" "$tmp/daemon-argv" && grep -qx -- "/var/lib/iof/dom7.qtest" "$tmp/daemon-argv" ||
    fail "IOREQ_FILTER_DAEMON_ARGS not passed on (domid substituted): $(cat "$tmp/daemon-argv")"
grep -qx -- "--unfiltered" "$tmp/daemon-argv" && fail "proxy: an unfiltered list nobody set: $(cat "$tmp/daemon-argv")"
# proxy: a hot standby with the same settings (and --standby) is started after the daemon
for _ in 1 2 3 4 5 6 7 8 9 10; do [ -s "$tmp/standby-argv" ] && break; sleep 0.1; done
[ -s "$tmp/standby-argv" ] || fail "proxy: no standby daemon started"
grep -v -x -e --standby -e --standby-wait -e 300 "$tmp/standby-argv" | cmp -s - "$tmp/daemon-argv" ||
    fail "proxy: the standby's settings differ: $(cat "$tmp/standby-argv")"
printf '%s\n' -xen-domid 7 -runas 1234:1234 -no-shutdown -qmp "unix:$tmp/run/dom7.qmp,server=on,wait=off" \
    -ioreq-filter-interposer-required > "$tmp/expected"
cmp -s "$tmp/argv" "$tmp/expected" || fail "proxy: argv: $(cat "$tmp/argv")"
# proxy: the unfiltered list reaches the daemon as one --unfiltered option
kill "$(cat "$tmp/daemon.pid")" 2>/dev/null || true; rm -f "$tmp/run/dom7.sock" "$tmp/standby-argv"
IOREQ_FILTER_STANDBY=0 IOREQ_FILTER_UNFILTERED=isa-serial,PIIX4_PM IOREQ_FILTER_MODE=proxy "$wrapper" -xen-domid 7
sleep 0.3
[ ! -e "$tmp/standby-argv" ] || fail "IOREQ_FILTER_STANDBY=0 still started a standby"
grep -A1 -x -- "--unfiltered" "$tmp/daemon-argv" | grep -qx "isa-serial,PIIX4_PM" ||
    fail "proxy: --unfiltered not passed on: $(cat "$tmp/daemon-argv")"
# no mode configured: proxy (the daemon is started), the mode that needs no device list
kill "$(cat "$tmp/daemon.pid")" 2>/dev/null || true; rm -f "$tmp/run/dom7.sock" "$tmp/daemon-argv"
IOREQ_FILTER_STANDBY=0 "$wrapper" -xen-domid 7
[ -s "$tmp/daemon-argv" ] && [ "$(cut -d' ' -f1 "$tmp/env")" = proxy ] || fail "the default mode is not proxy: $(cat "$tmp/env")"
echo "PASS"
