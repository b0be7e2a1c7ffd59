# Lab test (b), the first milestone: a real Debian Linux HVM guest, booted directly into its kernel
# by Debian's stock QEMU-xen, loads floppy.ko and reads a floppy image through QEMU-xen's emulated
# controller; the md5 it prints must be that of the image this script made.
. /lab/lib.sh

# Random content made here and now: the guest can only print this md5 by really reading the disk.
dd if=/dev/urandom of=/tmp/fd.img bs=1024 count=1440 2>/dev/null
want=$(md5sum /tmp/fd.img | cut -d' ' -f1)
serial=/lab/out/floppy-md5-guest-serial.log

# pci=noearly: the kernel's early AMD GART aperture probe walks PCI config space before the PCI
# subsystem is up; through QEMU-xen under TCG that took 23 of the 36 s to reach init.
cat > /tmp/floppy-md5.cfg <<CFG
name = "floppy-md5"
type = "hvm"
memory = 256
vcpus = 1
kernel = "/lab/linux-guest/vmlinuz"
ramdisk = "/lab/linux-guest/initrd.zst"
cmdline = "console=ttyS0 quiet panic=-1 pci=noearly"
vga = "none"
vnc = 0
serial = "file:$serial"
on_reboot = "destroy"
on_crash = "destroy"
device_model_args_hvm = [ "-drive", "file=/tmp/fd.img,if=floppy,format=raw" ]
CFG

lab_step xl-create
if ! lab_xl 60 create /tmp/floppy-md5.cfg; then
    lab_fail floppy-md5.create "xl create failed"
    lab_finish
fi
lab_step guest-started
lab_wait 900 lab_domain_gone floppy-md5 || lab_fail floppy-md5.guest-ended "still running after 900 s"
lab_step guest-ended
tr -d '\r' < "$serial" | grep '^GUEST-' || true

if grep -q '^GUEST-UP' "$serial"; then
    lab_pass floppy-md5.guest-booted
else
    lab_fail floppy-md5.guest-booted "the guest's init never ran (see floppy-md5-guest-serial.log, qemu-dm-floppy-md5.log)"
fi
got=$(tr -d '\r' < "$serial" | sed -n 's/^GUEST-FLOPPY-MD5 //p' | head -n 1)
lab_expect floppy-md5.md5 "$want" "$got"
if grep -q '^GUEST-ERROR' "$serial"; then
    lab_fail floppy-md5.guest-errors "$(grep '^GUEST-ERROR' "$serial" | tr -d '\r' | head -n 1)"
fi
lab_finish
