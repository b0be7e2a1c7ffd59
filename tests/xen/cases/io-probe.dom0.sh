# Lab test (a): the tiny bare-metal guest (guests/tiny/io_probe.c) served by Debian's stock
# QEMU-xen; its accesses to the floppy controller, PCI config space, the edu device's MMIO BAR and
# Xen's HPET must see what the hardware answers, and QEMU must survive the VENOM sequence.
. /lab/lib.sh

dd if=/dev/zero of=/tmp/fd.img bs=1024 count=1440 2>/dev/null
cat > /tmp/io-probe.cfg <<CFG
name = "io-probe"
type = "hvm"
memory = 32
vcpus = 1
firmware_override = "/lab/guests/io_probe.elf"
vga = "none"
vnc = 0
on_crash = "preserve"
device_model_args_hvm = [ "-drive", "file=/tmp/fd.img,if=floppy,format=raw", "-device", "edu,addr=0x5" ]
CFG

lab_step xl-create
if ! lab_xl 60 create /tmp/io-probe.cfg; then
    lab_fail io-probe.create "xl create failed"
    lab_finish
fi
domid=$(lab_domid io-probe)
lab_step guest-started "domid=$domid"
# The guest ends with cli;hlt, which Xen turns into a power-off of the domain.
lab_wait 240 lab_domain_gone io-probe || lab_fail io-probe.guest-ended "still running after 240 s"
lab_step guest-ended
lab_guest_log "$domid" > /lab/out/io-probe-guest.log
if grep -q '^TINY-DONE' /lab/out/io-probe-guest.log; then
    lab_pass io-probe.guest-finished
else
    lab_fail io-probe.guest-finished "no TINY-DONE from the guest (see io-probe-guest.log)"
fi

seen() { sed -n "s/^TINY $1=//p" /lab/out/io-probe-guest.log | head -n 1; }
# i440FX host bridge 8086:1237, the chipset QEMU's xenfv machine emulates.
lab_expect io-probe.pci-host-bridge-vendor 8086 "$(seen pci-00:00.0-vendor)"
lab_expect io-probe.pci-host-bridge-device 1237 "$(seen pci-00:00.0-device)"
# Nobody decodes 0x2e8 (no COM4): an unclaimed read is all ones.
lab_expect io-probe.unclaimed-port ff "$(seen unclaimed-port-0x2e8)"
# After a DOR reset the controller is ready for a command byte (RQM set, DIO clear).
lab_expect io-probe.fdc-msr 80 "$(seen fdc-msr-after-reset)"
lab_expect io-probe.fdc-version 90 "$(seen fdc-version)"
lab_expect io-probe.venom-writes 1024 "$(seen venom-fifo-writes)"
lab_expect io-probe.fdc-version-after-venom 90 "$(seen fdc-version-after-venom)"
# edu: BAR0 offset 0 is its identification 0x010000ed; offset 4 returns the inverse of a write.
lab_expect io-probe.edu-bar0 f0000000 "$(seen edu-bar0)"
lab_expect io-probe.edu-mmio-id 010000ed "$(seen edu-mmio-id)"
lab_expect io-probe.edu-mmio-liveness edcba987 "$(seen edu-mmio-liveness)"
lab_expect io-probe.xen-hpet-vendor 8086 "$(seen xen-hpet-vendor)"
lab_expect io-probe.ud2 6 "$(seen ud2-vector)"

# A crash or a dead device model would show up as another shutdown reason in xl's log.
if lab_wait 30 grep -q 'shut down, reason code 0 ' /var/log/xen/xl-io-probe.log; then
    lab_pass io-probe.clean-poweroff
else
    lab_fail io-probe.clean-poweroff "the domain did not power itself off (see xl-io-probe.log)"
fi
if grep -Eiq 'abort|assert|segmentation|core dumped' /var/log/xen/qemu-dm-io-probe.log; then
    lab_fail io-probe.device-model-clean "QEMU-xen logged a crash (see qemu-dm-io-probe.log)"
else
    lab_pass io-probe.device-model-clean
fi
lab_finish
