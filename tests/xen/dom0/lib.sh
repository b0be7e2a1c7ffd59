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

# lab_domid NAME
lab_domid() { timeout 20 xl domid "$1" 2>/dev/null; }

# lab_finish: the script's exit status: 0 only if no check failed.
lab_finish() {
    [ "$LAB_FAILED" = 0 ]
    exit $?
}
