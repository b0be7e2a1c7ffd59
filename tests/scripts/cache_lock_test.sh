#!/usr/bin/env bash
# scripts/lib/common.sh's cache_locked: two fetches of one thing at once (ctest -j) must run one after
# the other. Each fetch here does what fetch_xen_source does — rm -rf TMP, fill it slowly, move it into
# place — and checks that nobody else touched TMP meanwhile. Without the lock they interleave and fail.
set -euo pipefail
root=$1
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
export IOREQ_FILTER_CACHE="$scratch/cache"
# shellcheck source=../../scripts/lib/common.sh
source "$root/scripts/lib/common.sh"
slow_fetch() {
  local tmp="$IOREQ_FILTER_CACHE/thing.tmp"
  rm -rf "$tmp" && mkdir -p "$tmp"
  echo "$1" > "$tmp/owner"
  sleep 0.3
  [ "$(cat "$tmp/owner" 2>/dev/null)" = "$1" ] || { echo "FAIL: fetch $1 found its folder taken over"; return 1; }
  rm -rf "$IOREQ_FILTER_CACHE/thing" && mv "$tmp" "$IOREQ_FILTER_CACHE/thing"
}
pids=()
for i in 1 2 3 4; do cache_locked thing slow_fetch "$i" & pids+=($!); done
status=0
for p in "${pids[@]}"; do wait "$p" || status=1; done
[ "$status" = 0 ] || exit 1
[ -s "$IOREQ_FILTER_CACHE/thing/owner" ] || { echo "FAIL: nothing in place"; exit 1; }
# A lock that cannot be created is a clear error, not a silent run without it.
if out=$(IOREQ_FILTER_CACHE=/proc/nonexistent cache_locked thing true 2>&1); then
  echo "FAIL: cache_locked ran without its lock"; exit 1
fi
grep -q 'cannot create lock file /proc/nonexistent/.lock-thing' <<< "$out" || { echo "FAIL: unclear error: $out"; exit 1; }
echo "PASS: 4 concurrent fetches ran one at a time"
