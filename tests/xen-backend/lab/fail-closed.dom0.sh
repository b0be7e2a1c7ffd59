# Lab: every fault that could leave a guest unfiltered ends with the guest not running, on Debian's
# real Xen 4.17 and stock QEMU-xen 7.2 through the device_model_override wrapper (issue #14):
#   interposer missing (proxy), interposer unloadable (inline): QEMU refuses the handshake option;
#   an empty policy directory (proxy, inline): the attach fails, and QEMU with it;
#   a second ioreq server claiming the FDC ports (proxy, inline): the filter crashes the domain.
# Then dm_restrict=1 (QEMU chrooted, as an unprivileged user, handles restricted) in both modes: the
# tiny io-probe guest runs normally and its VENOM sequence is refused.
. /lab/lib.sh

dd if=/dev/zero of=/tmp/fd.img bs=1024 count=1440 2>/dev/null
mkdir -p /etc/ioreq-filter /var/log/xen /tmp/empty-policies
cat > /etc/ioreq-filter/devices.json <<'JSON'
[{"name": "fdc", "kind": "isa-fdc", "isa_ports": [["0x3f0", 8]]}]
JSON
# dm_restrict runs QEMU as this user (libxl looks it up by name).
grep -q '^xen-qemuuser-shared:' /etc/passwd || echo 'xen-qemuuser-shared:x:990:990::/nonexistent:/bin/false' >> /etc/passwd
grep -q '^xen-qemuuser-shared:' /etc/group || echo 'xen-qemuuser-shared:x:990:' >> /etc/group

# guest_cfg NAME [XL.CFG LINE...]
guest_cfg() {
    name=$1
    shift
    cat > /tmp/$name.cfg <<CFG
name = "$name"
type = "hvm"
memory = 32
vcpus = 1
firmware_override = "/lab/guests/io_probe.elf"
vga = "none"
vnc = 0
on_crash = "destroy"
device_model_override = "/usr/local/bin/ioreq-filter-dm-wrapper"
device_model_args_hvm = [ "-drive", "file=/tmp/fd.img,if=floppy,format=raw", "-device", "edu,addr=0x5" ]
CFG
    for line in "$@"; do echo "$line" >> /tmp/$name.cfg; done
}

# The xenfv machine's own devices and the guest's edu device have no policy: without a device list
# (QMP discovery) they must be named to run unfiltered (docs/xen.md, "The unfiltered list").
XENFV_UNFILTERED=i440FX,PIIX3-xen,piix3-ide,PIIX4_PM,xen-platform,i8257,i8042,mc146818rtc,port92,isa-serial,edu

# wrapper_conf MODE POLICY_DIR [INTERPOSER [DEVICES]]: DEVICES "qmp" means no device list (discovery).
wrapper_conf() {
    cat > /etc/ioreq-filter/dm-wrapper.conf <<CONF
IOREQ_FILTER_MODE=$1
IOREQ_FILTER_POLICY_DIR=$2
IOREQ_FILTER_INTERPOSER=${3:-/usr/local/lib/libioreq-interposer.so}
IOREQ_FILTER_DAEMON=/usr/local/bin/ioreq-filterd
CONF
    if [ "${4:-}" = qmp ]; then
        echo "IOREQ_FILTER_UNFILTERED=$XENFV_UNFILTERED" >> /etc/ioreq-filter/dm-wrapper.conf
    else
        echo "IOREQ_FILTER_DEVICES=/etc/ioreq-filter/devices.json" >> /etc/ioreq-filter/dm-wrapper.conf
    fi
}

# not_running NAME: no domain of that name exists (xl create failed and cleaned up, or it was crashed).
not_running() { ! timeout 20 xl domid "$1" >/dev/null 2>&1; }

# refused_start CHECK NAME PATTERN: `xl create` must fail, leave no domain, and QEMU's log (or the
# daemon's) must say why (PATTERN, grep -E).
refused_start() {
    check=$1 name=$2 pattern=$3
    lab_step "$check.create"
    if lab_xl 120 create /tmp/$name.cfg > /lab/out/$name-xl.log 2>&1; then
        lab_fail "$check.create-fails" "xl create succeeded"
        timeout 30 xl destroy "$name" 2>/dev/null || true
    else
        lab_pass "$check.create-fails"
    fi
    lab_wait 30 not_running "$name" && lab_pass "$check.not-running" || lab_fail "$check.not-running" "domain $name exists"
    cp /var/log/xen/qemu-dm-$name.log /lab/out/ 2>/dev/null || true
    cat /var/log/xen/ioreq-filterd-*.log > /lab/out/$name-daemon.log 2>/dev/null || true
    rm -f /var/log/xen/ioreq-filterd-*.log
    echo "--- $check: what QEMU and the daemon said"
    grep -h -E "$pattern" /lab/out/qemu-dm-$name.log /lab/out/$name-daemon.log 2>/dev/null | head -n 5
    grep -q -h -E "$pattern" /lab/out/qemu-dm-$name.log /lab/out/$name-daemon.log 2>/dev/null &&
        lab_pass "$check.reason" || lab_fail "$check.reason" "no line matching '$pattern' (see qemu-dm-$name.log)"
}

# second_server CHECK MODE: the guest is created paused, a second ioreq server claims the FDC ports,
# then the guest runs: the filter must crash the domain (on_crash=destroy) before it finishes.
second_server() {
    check=$1 mode=$2 name=second-$2
    wrapper_conf "$mode" /lab/policies
    guest_cfg "$name"
    lab_step "$check.create"
    if ! lab_xl 120 create -p /tmp/$name.cfg > /lab/out/$name-xl.log 2>&1; then
        lab_fail "$check.create" "xl create -p failed"
        cp /var/log/xen/qemu-dm-$name.log /lab/out/ 2>/dev/null || true
        return
    fi
    domid=$(lab_domid "$name")
    /usr/local/bin/second_ioreq_server "$domid" && lab_pass "$check.second-server-created" ||
        lab_fail "$check.second-server-created" "the helper failed"
    t0=$(lab_now)
    xl unpause "$domid" 2>/dev/null || true
    if lab_wait 60 not_running "$name"; then
        lab_pass "$check.domain-crashed" "gone $(awk -v a="$t0" -v b="$(lab_now)" 'BEGIN {printf "%.1f", b - a}') s after unpause"
    else
        lab_fail "$check.domain-crashed" "still running 60 s after a second server appeared"
        timeout 30 xl destroy "$domid" || true
    fi
    cp /var/log/xen/qemu-dm-$name.log /lab/out/ 2>/dev/null || true
    cp /var/log/xen/ioreq-filterd-$domid.log /lab/out/ 2>/dev/null || true
    timeout 20 xl dmesg | grep -E "d$domid|domain_crash" | tail -n 5
    if [ "$mode" = proxy ]; then
        grep -h '"foreign-ioreq-server"' /lab/out/ioreq-filterd-$domid.log | head -n 2
        grep -q '"foreign-ioreq-server"' /lab/out/ioreq-filterd-$domid.log && lab_pass "$check.reason" ||
            lab_fail "$check.reason" "the daemon did not log foreign-ioreq-server"
    else
        grep -h 'is not the filter' /lab/out/qemu-dm-$name.log | head -n 2
        grep -q 'is not the filter.*crashed the domain' /lab/out/qemu-dm-$name.log && lab_pass "$check.reason" ||
            lab_fail "$check.reason" "QEMU's interposer did not report the second server"
    fi
    lab_guest_log "$domid" > /lab/out/$name-guest.log
    grep -q '^TINY-DONE' /lab/out/$name-guest.log && lab_fail "$check.guest-stopped" "the guest ran to its end" ||
        lab_pass "$check.guest-stopped"
}

# restricted CHECK MODE: dm_restrict=1 - the guest runs, its FDC works, the VENOM sequence is refused.
# Proxy mode runs without a device list: the daemon attaches, holds requests, and discovers QEMU's
# devices over QMP once QEMU's main loop runs.
restricted() {
    check=$1 mode=$2 name=restricted-$2
    if [ "$mode" = proxy ]; then wrapper_conf "$mode" /lab/policies "" qmp; else wrapper_conf "$mode" /lab/policies; fi
    guest_cfg "$name" 'dm_restrict = 1'
    lab_step "$check.create"
    if ! lab_xl 120 create /tmp/$name.cfg > /lab/out/$name-xl.log 2>&1; then
        lab_fail "$check.create" "xl create failed (see $name-xl.log)"
        cat /lab/out/$name-xl.log | tail -n 15
        cp /var/log/xen/qemu-dm-$name.log /lab/out/ 2>/dev/null || true
        tail -n 15 /var/log/xen/qemu-dm-$name.log 2>/dev/null
        return
    fi
    domid=$(lab_domid "$name")
    # What dm_restrict did to QEMU: its argv (libxl adds -xen-domid-restrict, -chroot, -runas) and its uid.
    qpid=$(ps -o pid,args | grep "[q]emu-system-i386.*-xen-domid $domid " | awk '{print $1}' | head -n 1)
    qargs=$(tr '\0' ' ' < /proc/$qpid/cmdline 2>/dev/null)
    quid=$(awk '/^Uid:/ {print $2}' /proc/$qpid/status 2>/dev/null)
    echo "QEMU pid $qpid uid $quid argv: $qargs" | cut -c1-400
    case "$qargs" in
        *-xen-domid-restrict*-ioreq-filter-interposer-required*|*-ioreq-filter-interposer-required*-xen-domid-restrict*)
            [ -n "$quid" ] && [ "$quid" != 0 ] && lab_pass "$check.qemu-restricted" "uid $quid" ||
                lab_fail "$check.qemu-restricted" "QEMU runs as uid '$quid'" ;;
        *) lab_fail "$check.qemu-restricted" "no -xen-domid-restrict in QEMU's argv (or no handshake option)" ;;
    esac
    if ! lab_wait 120 lab_domain_gone "$name"; then
        lab_fail "$check.guest-ended" "still running after 120 s"
        timeout 30 xl destroy "$domid" || true
    fi
    lab_guest_log "$domid" > /lab/out/$name-guest.log
    cp /var/log/xen/qemu-dm-$name.log /lab/out/ 2>/dev/null || true
    cp /var/log/xen/ioreq-filterd-$domid.log /lab/out/ 2>/dev/null || true
    grep -q '^TINY-DONE' /lab/out/$name-guest.log && lab_pass "$check.guest-finished" ||
        lab_fail "$check.guest-finished" "no TINY-DONE (see $name-guest.log)"
    lab_expect "$check.fdc-version" 90 "$(sed -n 's/^TINY fdc-version=//p' /lab/out/$name-guest.log | head -n 1)"
    if [ "$mode" = proxy ]; then
        grep -E '"event":"(attached|discovering|filtering|discovery-failed)"' /lab/out/ioreq-filterd-$domid.log | cut -c1-400
        grep '"event":"filtering"' /lab/out/ioreq-filterd-$domid.log | grep -q '"isa-fdc@0x3f0"' && lab_pass "$check.discovered-without-list" ||
            lab_fail "$check.discovered-without-list" "no filtering event naming isa-fdc@0x3f0 (see ioreq-filterd-$domid.log)"
        grep -q '"event":"refused"' /lab/out/ioreq-filterd-$domid.log && lab_pass "$check.venom-refused" ||
            lab_fail "$check.venom-refused" "no refusal logged by the daemon"
    else
        grep -q 'ioreq-interposer: refused' /lab/out/qemu-dm-$name.log && lab_pass "$check.venom-refused" ||
            lab_fail "$check.venom-refused" "no refusal reported by the interposer"
        # Exact totals (the per-refusal lines stop at powers of two).
        last=$(grep 'ioreq-interposer: counters' /lab/out/qemu-dm-$name.log | tail -n 1)
        echo "$last"
        case "$last" in
            *" refused 0 "*|"") lab_fail "$check.exact-counters" "no counters line with refusals in qemu-dm-$name.log" ;;
            *) lab_pass "$check.exact-counters" "$(echo "$last" | sed 's/.*counters[^:]*: //')" ;;
        esac
    fi
}

printf 'not a shared object\n' > /tmp/broken.so
wrapper_conf proxy /lab/policies /usr/local/lib/missing-interposer.so
guest_cfg no-interposer
refused_start no-interposer-proxy no-interposer 'missing or unreadable; refusing to run QEMU unfiltered'
wrapper_conf inline /lab/policies /tmp/broken.so
guest_cfg broken-interposer
refused_start broken-interposer-inline broken-interposer 'ioreq-filter-interposer-required: invalid option'
wrapper_conf proxy /tmp/empty-policies
guest_cfg no-policy-proxy
refused_start no-policy-proxy no-policy-proxy 'no policies \(\*\.json\) found'
wrapper_conf inline /tmp/empty-policies
guest_cfg no-policy-inline
refused_start no-policy-inline no-policy-inline 'no policies \(\*\.json\) found'
second_server second-server-proxy proxy
second_server second-server-inline inline
restricted restricted-proxy proxy
restricted restricted-inline inline
lab_finish
