# Helpers for dom0 test scripts (busybox sh). A test script starts with `. /lab/lib.sh`.
# Results are markers on the console, one per line, read by tests/xen/lab run on the host:
#   IOREQ-LAB-PASS <check> [detail]      IOREQ-LAB-FAIL <check> <reason>
# Files copied to /lab/out/ are dumped to the host log directory when the script ends.

LAB_FAILED=0

lab_now() { cut -d' ' -f1 /proc/uptime; }
lab_step() { echo "IOREQ-LAB-STEP $(lab_now) $*"; }
lab_pass() { echo "IOREQ-LAB-PASS $*"; }
lab_fail() { LAB_FAILED=1; echo "IOREQ-LAB-FAIL $*"; }

# lab_expect CHECK EXPECTED ACTUAL
lab_expect() {
    if [ "$2" = "$3" ]; then
        lab_pass "$1" "$3"
    else
        lab_fail "$1" "expected '$2', got '$3'"
    fi
}

# lab_wait SECONDS COMMAND...: retries COMMAND every 2 s (each poll costs the emulated CPUs) until it succeeds; 1 if it never did.
lab_wait() {
    local deadline=$(( $(cut -d. -f1 /proc/uptime) + $1 ))
    shift
    while ! "$@" >/dev/null 2>&1; do
        [ "$(cut -d. -f1 /proc/uptime)" -ge "$deadline" ] && return 1
        sleep 2
    done
    return 0
}

# lab_xl SECONDS ARGS...: xl with a time limit; a hung toolstack is a failure, not a stuck lab.
lab_xl() {
    local limit="$1"
    shift
    timeout -s KILL "$limit" xl "$@"
}

# lab_guest_log DOMID: what the guest wrote to port 0xE9 (Xen prints it as "(dN) [time] text").
# Reads the whole console ring: cheap once, but poll with lab_domain_gone rather than with this.
lab_guest_log() { timeout 20 xl dmesg | sed -n "s/^(d$1) \(\[[ 0-9.]*\] \)\{0,1\}//p"; }

# lab_guest_says DOMID PATTERN: the guest's 0xE9 output has a line matching PATTERN (grep -E).
lab_guest_says() { lab_guest_log "$1" | grep -Eq "$2"; }

# lab_domain_gone NAME: the domain no longer exists (it powered off or was destroyed). Reads the log
# of the xl process that watches the domain: starting xl itself every poll costs seconds of
# emulated CPU in dom0, which the guest would miss.
lab_domain_gone() { grep -Eq 'Done. Exiting now|has been destroyed' "/var/log/xen/xl-$1.log" 2>/dev/null; }

# lab_serial_has FILE PATTERN: a guest's serial log (xl.cfg serial = "file:...") has a line matching
# PATTERN (grep, carriage returns dropped). lab_wait_serial SECONDS FILE PATTERN polls it every second
# (cheap: no xl); 1 if it never matched.
lab_serial_has() { tr -d '\r' < "$1" 2>/dev/null | grep -q "$2"; }
lab_wait_serial() {
    local deadline=$(( $(cut -d. -f1 /proc/uptime) + $1 ))
    while ! lab_serial_has "$2" "$3"; do
        [ "$(cut -d. -f1 /proc/uptime)" -ge "$deadline" ] && return 1
        sleep 1
    done
}

# lab_domid NAME
lab_domid() { timeout 20 xl domid "$1" 2>/dev/null; }

# lab_linux_floppy_guest NAME SERIAL [CFG_LINE...]: a random 1.44 MB floppy image /tmp/fd.img and
# /tmp/NAME.cfg for the Debian Linux HVM guest that reads it (guests/linux/floppy-md5.init); extra xl.cfg
# lines (e.g. device_model_override) are appended. Prints the image's md5: the guest can only print the
# same one by really reading the disk.
# pci=noearly: the kernel's early AMD GART aperture probe walks PCI config space before the PCI
# subsystem is up; through QEMU-xen under TCG that took 23 of the 36 s to reach init.
lab_linux_floppy_guest() {
    local name="$1" serial="$2" line
    shift 2
    dd if=/dev/urandom of=/tmp/fd.img bs=1024 count=1440 2>/dev/null
    {
        cat <<CFG
name = "$name"
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
        for line in "$@"; do echo "$line"; done
    } > "/tmp/$name.cfg"
    md5sum /tmp/fd.img | cut -d' ' -f1
}

# lab_finish: the script's exit status: 0 only if no check failed.
lab_finish() {
    [ "$LAB_FAILED" = 0 ]
    exit $?
}
