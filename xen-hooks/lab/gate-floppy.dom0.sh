# Item 6(b) of the gate: a full hvmloader + SeaBIOS + Debian Linux HVM boot (no VGA: with
# vga="stdvga" the guest never reached its init within 900 s here, gate or not untested) that
# loads floppy.ko and reads a floppy image through stock QEMU-xen, with the emulation gate
# ENFORCING from the first instruction: the md5 must match and the gate must deny nothing.
. /lab/lib.sh

# --bin installs into /usr/local/bin, which is not on dom0's PATH.
gate_tool=/usr/local/bin/xen-emul-gate

dd if=/dev/urandom of=/tmp/fd.img bs=1024 count=1440 2>/dev/null
want=$(md5sum /tmp/fd.img | cut -d' ' -f1)
serial=/lab/out/gate-floppy-guest-serial.log

# on_poweroff=preserve keeps the domain (and its gate counters) after the guest powers off.
cat > /tmp/gate-floppy.cfg <<CFG
name = "gate-floppy"
type = "hvm"
memory = 256
vcpus = 1
kernel = "/lab/linux-guest/vmlinuz"
ramdisk = "/lab/linux-guest/initrd.zst"
cmdline = "console=ttyS0 quiet panic=-1"
vga = "none"
vnc = 0
serial = "file:$serial"
on_poweroff = "preserve"
on_reboot = "destroy"
on_crash = "preserve"
device_model_args_hvm = [ "-drive", "file=/tmp/fd.img,if=floppy,format=raw" ]
CFG

lab_step xl-create
if ! lab_xl 60 create -p /tmp/gate-floppy.cfg; then
    lab_fail gate-floppy.create "xl create failed"
    lab_finish
fi
domid=$(lab_domid gate-floppy)
if "$gate_tool" "$domid" enforce > /lab/out/gate-floppy-set.txt 2>&1; then
    lab_pass gate-floppy.enforcing "$(cat /lab/out/gate-floppy-set.txt)"
else
    lab_fail gate-floppy.enforcing "$(cat /lab/out/gate-floppy-set.txt)"
fi
lab_xl 20 unpause gate-floppy
lab_step guest-started "domid=$domid"
guest_done() { grep -q '^GUEST-DONE' "$serial"; }
lab_wait 900 guest_done || lab_fail gate-floppy.guest-ended "no GUEST-DONE after 900 s"
sleep 3
lab_step guest-ended
"$gate_tool" "$domid" status > /lab/out/gate-floppy-status.txt 2>&1 || true
cat /lab/out/gate-floppy-status.txt
tr -d '\r' < "$serial" | grep '^GUEST-' || true

got=$(tr -d '\r' < "$serial" | sed -n 's/^GUEST-FLOPPY-MD5 //p' | head -n 1)
lab_expect gate-floppy.md5 "$want" "$got"
lab_expect gate-floppy.mode "domain $domid: emulation gate enforce" "$(head -n 1 /lab/out/gate-floppy-status.txt)"
lab_expect gate-floppy.denied-total 0 "$(sed -n 's/^denied total //p' /lab/out/gate-floppy-status.txt)"
timeout 20 xl dmesg | grep 'emul-gate:' > /lab/out/gate-floppy-xen-log.txt || true
if [ -s /lab/out/gate-floppy-xen-log.txt ]; then
    lab_fail gate-floppy.no-denial-logged "$(head -n 3 /lab/out/gate-floppy-xen-log.txt)"
else
    lab_pass gate-floppy.no-denial-logged
fi
lab_xl 30 destroy gate-floppy || true
lab_finish
