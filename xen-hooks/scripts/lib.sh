# Shared by xen-hooks/scripts/*: where the patched Xen tree lives and how it is made.
# shellcheck shell=bash
source "$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/scripts/lib/common.sh"

XEN_HOOKS_DIR="$IOREQ_FILTER_ROOT/xen-hooks"

# series_key -> hash of everything that goes into the patched tree (the series and this file),
# so a changed patch gets a fresh tree and an unchanged one reuses the cache. gate_corpus is
# rebuilt inside the tree when its own sources change (see build-harness).
series_key() {
  local files
  files=$(awk '{sub(/#.*/, ""); gsub(/[[:space:]]/, "")} $0 != "" {print "patches/" $0}' \
          "$XEN_HOOKS_DIR/patches/series") || die "cannot read patches/series"
  # shellcheck disable=SC2086
  (cd "$XEN_HOOKS_DIR" && cat patches/series $files scripts/lib.sh) | sha256sum | cut -c1-16
}

# patched_tree -> prints the directory of a copy of Debian's Xen source with the series
# applied (never the pristine cached source itself). Fails if a patch does not apply
# cleanly (no fuzz, no offsets beyond what patch accepts silently are tolerated).
patched_tree() {
  local src key base dir p
  src=$(fetch_xen_source)
  key=$(series_key)
  base="$IOREQ_FILTER_CACHE/xen-gate"
  dir="$base/$key"
  mkdir -p "$base"
  if [ ! -e "$dir/.applied" ]; then
    rm -rf "$dir.tmp" && mkdir -p "$dir.tmp"
    cp -a "$src" "$dir.tmp/xen" || die "copying $src failed"
    while IFS= read -r p; do
      p="${p%%#*}"; p="${p//[[:space:]]/}"
      [ -n "$p" ] || continue
      log "applying $p"
      patch -d "$dir.tmp/xen" -p1 --batch --forward --fuzz=0 --quiet \
        < "$XEN_HOOKS_DIR/patches/$p" >&2 || die "patch $p does not apply cleanly to $src"
    done < "$XEN_HOOKS_DIR/patches/series"
    printf 'AWK := awk\nPYTHON := python3\n' > "$dir.tmp/xen/config/Tools.mk"
    touch "$dir.tmp/.applied"
    rm -rf "$dir" && mv "$dir.tmp" "$dir"
  fi
  printf '%s\n' "$dir"
}

# with_tree_lock DIR NAME CMD... -> runs CMD holding DIR's NAME lock: ctest runs tests in
# parallel and two runs of the same build in one tree would corrupt each other (the harness
# under tools/ and the hypervisor under xen/ are independent and use different locks).
with_tree_lock() {
  local dir="$1" name="$2"; shift 2
  flock "$dir/.lock-$name" "$@"
}
