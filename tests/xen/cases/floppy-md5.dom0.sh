# Lab test (b), the first milestone: a real Debian Linux HVM guest, booted directly into its kernel
# by Debian's stock QEMU-xen, loads floppy.ko and reads a floppy image through QEMU-xen's emulated
# controller; the md5 it prints must be that of the image this script made.
. /lab/lib.sh

serial=/lab/out/floppy-md5-guest-serial.log
want=$(lab_linux_floppy_guest floppy-md5 "$serial")

lab_step xl-create
if ! lab_xl 60 create /tmp/floppy-md5.cfg; then
    lab_fail floppy-md5.create "xl create failed"
    lab_finish
fi
lab_step guest-started
lab_wait 380 lab_domain_gone floppy-md5 || lab_fail floppy-md5.guest-ended "still running after 380 s"
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
