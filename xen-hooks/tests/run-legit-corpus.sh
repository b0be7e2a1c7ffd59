#!/usr/bin/env bash
# Legitimate corpus: instruction forms that Debian's kernel modules and the firmware that runs
# in HVM guests use on device memory (found by mmio_form_scan), run through Xen's
# x86_emulate() in the MMIO context: 0 denials, on every CPU profile where MMIO exists.
# Also guards against passing vacuously: the corpus must hold real evidence.
set -euo pipefail
source "$(dirname "$0")/../scripts/lib.sh"
scanner="${1:?usage: run-legit-corpus.sh MMIO_FORM_SCAN OUT_DIR}"
outdir="${2:?usage: run-legit-corpus.sh MMIO_FORM_SCAN OUT_DIR}"
mkdir -p "$outdir"
emu=$("$XEN_HOOKS_DIR/scripts/build-harness")
corpus=$("$XEN_HOOKS_DIR/scripts/scan-legit-corpus" "$scanner" "$outdir")
modules=$(grep -c '\.ko x[0-9]* |' "$corpus" || true)
firmware=$(grep -v '^#' "$corpus" | grep -vc '\.ko x[0-9]* |' || true)
log "legitimate corpus: $modules encodings from modules, $firmware from firmware"
[ "$modules" -ge 100 ] || die "only $modules module encodings: the scan found too little to be evidence"
[ "$firmware" -ge 5 ] || die "only $firmware firmware encodings: the firmware scan found too little"
status=0
for profile in svm-tcg svm vmx-ug vmx-noug; do
  rc=0
  timeout 300 "$emu/gate_corpus" legit "$corpus" mmio "$profile" >"$outdir/legit-$profile.txt" || rc=$?
  grep -v '^undecodable' "$outdir/legit-$profile.txt" | tail -40
  [ "$rc" -eq 0 ] || { log "FAIL: denials (or errors, rc $rc) in the MMIO context on $profile"; status=1; }
done
[ "$status" -eq 0 ] && log "PASS: 0 denials of the legitimate corpus in the MMIO context"
exit $status
