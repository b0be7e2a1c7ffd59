# Shared by xen-hooks/scripts/*: where the patched Xen tree lives and how it is made.
# shellcheck shell=bash
source "$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/scripts/lib/common.sh"

XEN_HOOKS_DIR="$IOREQ_FILTER_ROOT/xen-hooks"

# series_key -> hash of everything that goes into the patched tree and its builds, so a
# changed patch or harness file gets a fresh tree and an unchanged one reuses the cache.
series_key() {
  (cd "$XEN_HOOKS_DIR" && cat patches/series $(sed 's/#.*//' patches/series) \
     harness/gate_corpus.c harness/gate.mk scripts/lib.sh) | sha256sum | cut -c1-16
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

# with_tree_lock DIR CMD... -> runs CMD holding DIR's lock: ctest runs tests in parallel
# and two builds in one tree would corrupt each other.
with_tree_lock() {
  local dir="$1"; shift
  flock "$dir/.lock" "$@"
}
