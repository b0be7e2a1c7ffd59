# Reproducer for guest-kernel stalls (issue #13): boot the smallest Linux HVM guest
# (guests/linux/boot-only.init) N times in one Xen boot and record, per boot, whether it reached its
# init or stalled. A boot has stalled when its vCPU has used no CPU for STALL_S seconds before init
# ran; Xen's view of the guest is then dumped (xl vcpu-list, xen-hvmctx: registers and LAPIC,
# debug keys q, t, e into xl dmesg), the guest is poked with an NMI to see whether it wakes, and
# destroyed. Settings come from /lab/loop.conf (sourced, optional; give it with --extra):
#   LOOPS=10  GUEST_OPTS="..." (appended to the guest's kernel command line)  VCPUS=1
#   TYPE=hvm    (or pvh: the same kernel started directly by Xen, without hvmloader, SeaBIOS or a
#               QEMU-xen; the event-channel upcall and the PV timer are the same, boots are faster)
#   STALL_S=40  (below the runner's 60 s stall window, so that a guest-only stall is diagnosed here
#               while a whole-machine stall, dom0 included, is left to the runner's watchdog)
#   IDLE_S=0    (first sleep this long with nothing running, to measure an idle machine's CPU use;
#               run with --stall-cpu 0, or the runner's watchdog ends the run as stalled)
# Prints one line per boot: "LOOP <i> up|stalled|failed <seconds> ..." and a summary check.
# shellcheck disable=SC2046  # vcpu_info's two words are split on purpose (set -- $(vcpu_info ...))
. /lab/lib.sh

LOOPS=10
GUEST_OPTS=""
STALL_S=40
IDLE_S=0
VCPUS=1
TYPE=hvm
[ -f /lab/loop.conf ] && . /lab/loop.conf

if [ "$IDLE_S" -gt 0 ]; then
    lab_step idle.begin
    sleep "$IDLE_S"
    lab_step idle.end
fi

# vcpu_info NAME: the guest's vCPU seconds (sum over its vCPUs, 0.1 s resolution) and states
# (r running, b blocked, - runnable), from xl vcpu-list. Callers split it with `set --`.
vcpu_info() { timeout 20 xl vcpu-list "$1" 2>/dev/null | awk 'NR > 1 {t += $6; s = s $5} END {printf "%s %s\n", t + 0, s}'; }

if [ "$TYPE" = pvh ]; then
    # A PVH guest's console is Xen's PV console: have xenconsoled log it to a file.
    kill "$(cat /run/xenconsoled.pid)" 2>/dev/null
    sleep 1
    mkdir -p /var/log/xen/console
    xenconsoled --pid-file=/run/xenconsoled.pid --log=guest --log-dir=/var/log/xen/console ||
        lab_fail linux-boot-loop.xenconsoled "could not restart xenconsoled with guest logging"
fi

ups=0 stalls=0 fails=0
i=1
while [ $i -le "$LOOPS" ]; do
    name=boot$i
    serial=/tmp/$name.log
    cat > /tmp/$name.cfg <<CFG
name = "$name"
type = "$TYPE"
memory = 256
vcpus = $VCPUS
kernel = "/lab/linux-guest/vmlinuz"
ramdisk = "/lab/linux-guest/initrd.zst"
on_reboot = "destroy"
on_crash = "destroy"
CFG
    if [ "$TYPE" = pvh ]; then
        # No emulated UART: the console is Xen's PV console, which xenconsoled logs per domain.
        echo "cmdline = \"console=hvc0 quiet panic=-1 $GUEST_OPTS\"" >> /tmp/$name.cfg
        serial=/var/log/xen/console/guest-$name.log
    else
        printf 'cmdline = "console=ttyS0 quiet panic=-1 pci=noearly %s"\nvga = "none"\nvnc = 0\nserial = "file:%s"\n' \
            "$GUEST_OPTS" "$serial" >> /tmp/$name.cfg
    fi
    start=$(lab_now)
    lab_step "$name.create"
    if ! lab_xl 90 create /tmp/$name.cfg >/dev/null 2>&1; then
        echo "LOOP $i failed create"
        fails=$((fails + 1)); i=$((i + 1)); continue
    fi
    domid=$(lab_domid $name)
    last_t=-1 still=0 result=""
    while [ -z "$result" ]; do
        sleep 10
        if lab_domain_gone $name; then
            if grep -q '^GUEST-DONE' "$serial" 2>/dev/null; then result=up; else result=failed; fi
            break
        fi
        grep -q '^GUEST-DONE' "$serial" 2>/dev/null && continue   # powering off
        set -- $(vcpu_info $name)
        # Tenths, not whole seconds: an HVM guest waiting on QEMU-xen (SeaBIOS's byte-wise kernel
        # load) accrues vCPU time slowly, and must not look stalled.
        t=$1 states=$2
        if [ "$t" = "$last_t" ]; then still=$((still + 10)); else still=0; last_t=$t; fi
        if [ "$still" -ge "$STALL_S" ]; then result=stalled; fi
        elapsed=$(awk -v a="$start" -v b="$(lab_now)" 'BEGIN {printf "%d", b - a}')
        [ "$elapsed" -ge 900 ] && result=failed
    done
    elapsed=$(awk -v a="$start" -v b="$(lab_now)" 'BEGIN {printf "%.0f", b - a}')
    if [ "$result" = stalled ]; then
        d=/lab/out/stall-$i
        mkdir -p $d
        lab_step "$name.stalled vcpu-seconds=$last_t states=$states"
        timeout 20 xl vcpu-list $name > $d/vcpu-list.txt 2>&1
        timeout 20 xen-hvmctx $domid > $d/hvmctx.txt 2>&1
        timeout 20 xl debug-keys q; timeout 20 xl debug-keys t; timeout 20 xl debug-keys e
        timeout 20 xl debug-keys r; timeout 20 xl debug-keys i
        timeout 30 xl dmesg | tail -n 2000 > $d/xl-dmesg-tail.txt
        cp "$serial" $d/guest-serial.log 2>/dev/null
        # Does an interrupt from outside wake it? An NMI ends HLT; if the guest then runs on, its
        # wake-up source (timer or event) was lost rather than never armed.
        timeout 20 xl trigger $domid nmi
        sleep 30
        set -- $(vcpu_info $name)
        after=$1
        timeout 20 xen-hvmctx $domid > $d/hvmctx-after-nmi.txt 2>&1
        sleep 60
        set -- $(vcpu_info $name)
        lab_step "$name.after-nmi vcpu-seconds=$after then=$1 states=$2 done=$(grep -c '^GUEST-DONE' "$serial" 2>/dev/null)"
        cp "$serial" $d/guest-serial-after.log 2>/dev/null
        stalls=$((stalls + 1))
    elif [ "$result" = up ]; then
        ups=$((ups + 1))
    else
        fails=$((fails + 1))
    fi
    echo "LOOP $i $result ${elapsed}s vcpu=$last_t $(tr -d '\r' < "$serial" 2>/dev/null | grep '^GUEST-UP' | head -n 1)"
    timeout 30 xl destroy $name >/dev/null 2>&1
    lab_wait 30 lab_domain_gone $name || true
    rm -f "$serial"
    i=$((i + 1))
done
lab_step "loop.summary boots=$LOOPS up=$ups stalled=$stalls failed=$fails type=$TYPE vcpus=$VCPUS opts=$GUEST_OPTS"
if [ "$stalls" = 0 ] && [ "$fails" = 0 ]; then
    lab_pass linux-boot-loop.all-up "$ups of $LOOPS"
else
    lab_fail linux-boot-loop.all-up "$ups of $LOOPS up, $stalls stalled, $fails failed"
fi
lab_finish
