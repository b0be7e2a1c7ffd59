# Shared shell helpers for scripts/demo, scripts/test and the test tooling. Source, don't run.
# shellcheck shell=bash

IOREQ_FILTER_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export IOREQ_FILTER_ROOT
: "${IOREQ_FILTER_CACHE:=${HOME:-/root}/.cache/ioreq-filter}"
export IOREQ_FILTER_CACHE
mkdir -p "$IOREQ_FILTER_CACHE"

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 2; }

# cache_locked NAME COMMAND [ARGS...]: runs COMMAND (in a subshell) holding an exclusive lock named
# NAME in the cache. ctest runs tests in parallel, and two of them may fetch the same thing on a fresh
# machine (the recorder and the gate harness both unpack Xen's source): without the lock they clobber
# each other's temporary folder, and concurrent `apt-get update`s fail on apt's own lock.
cache_locked() {
  local name="$1"; shift
  (
    exec 9>"$IOREQ_FILTER_CACHE/.lock-$name" || die "cannot create lock file $IOREQ_FILTER_CACHE/.lock-$name"
    flock 9 || die "cannot lock $IOREQ_FILTER_CACHE/.lock-$name"
    "$@"
  )
}

# apt_update: `apt-get update`, one at a time across this project's scripts; its errors are shown.
apt_update() { cache_locked apt apt-get update -qq; }

# Installs the Debian packages listed in scripts/packages.txt that are not installed yet.
# Needs root (apt-get); says so instead of failing obscurely.
ensure_packages() {
  local wanted=() missing=() pkg
  while IFS= read -r pkg; do
    pkg="${pkg%%#*}"; pkg="${pkg//[[:space:]]/}"
    [ -n "$pkg" ] && wanted+=("$pkg")
  done < "$IOREQ_FILTER_ROOT/scripts/packages.txt"
  for pkg in "${wanted[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    die "missing Debian packages: ${missing[*]} — run as root (apt-get install is used) or install them first"
  fi
  log "installing missing Debian packages: ${missing[*]}"
  local stamp="$IOREQ_FILTER_CACHE/apt-updated"
  if [ ! -e "$stamp" ] || [ -n "$(find "$stamp" -mmin +720 2>/dev/null)" ]; then
    apt_update && touch "$stamp"
  fi
  DEBIAN_FRONTEND=noninteractive cache_locked apt apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# configure_and_build BUILD_DIR [cmake args...]
configure_and_build() {
  local dir="$1"; shift
  cmake -S "$IOREQ_FILTER_ROOT" -B "$dir" -G Ninja "$@" >/dev/null
  cmake --build "$dir" -j "$(nproc)"
}

# install_atomically SRC DST: DST is either its old contents or SRC's, never half written (a temporary
# file beside DST, then rename).
install_atomically() {
  local src="$1" dst="$2" tmp
  tmp=$(mktemp "$dst.tmp.XXXXXX") || die "cannot create a temporary file beside $dst"
  cp "$src" "$tmp" && chmod 644 "$tmp" && mv -f "$tmp" "$dst" || { rm -f "$tmp"; die "cannot write $dst from $src"; }
}

# fetch_deb PKG -> prints the directory PKG was extracted into ($IOREQ_FILTER_CACHE/debs/PKG_VERSION).
# Downloads the .deb with apt-get download (no install), cached across runs.
fetch_deb() { cache_locked "deb-$1" fetch_deb_unlocked "$1"; }
fetch_deb_unlocked() {
  local pkg="$1" ver dir debdir
  ver=$(apt-cache policy "$pkg" 2>/dev/null | awk '/Candidate:/ {print $2}')
  if [ -z "$ver" ] || [ "$ver" = "(none)" ]; then
    apt_update >/dev/null || true
    ver=$(apt-cache policy "$pkg" 2>/dev/null | awk '/Candidate:/ {print $2}')
  fi
  [ -n "$ver" ] && [ "$ver" != "(none)" ] || die "Debian package '$pkg' is not known to apt (apt-get update?)"
  dir="$IOREQ_FILTER_CACHE/debs/${pkg}_${ver//:/%}"
  if [ ! -e "$dir/.extracted" ]; then
    debdir="$IOREQ_FILTER_CACHE/debs/archives"
    mkdir -p "$debdir"
    (cd "$debdir" && apt-get download -qq "$pkg=$ver" >/dev/null) || die "apt-get download $pkg=$ver failed"
    rm -rf "$dir.tmp" && mkdir -p "$dir.tmp"
    dpkg -x "$debdir/${pkg}_${ver//:/%3a}"_*.deb "$dir.tmp" || die "dpkg -x of $pkg failed"
    touch "$dir.tmp/.extracted" && rm -rf "$dir" && mv "$dir.tmp" "$dir"
  fi
  printf '%s\n' "$dir"
}

# kernel_package -> the versioned linux-image package the linux-image-amd64 meta package depends on.
kernel_package() {
  apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}'
}

# fetch_kernel -> prints "DIR VERSION": DIR holds boot/vmlinuz-VERSION and lib/modules/VERSION
# (with modules.dep made by depmod).
fetch_kernel() {
  local pkg dir ver
  pkg=$(kernel_package)
  [ -n "$pkg" ] || { apt_update >/dev/null; pkg=$(kernel_package); }
  [ -n "$pkg" ] || die "cannot resolve linux-image-amd64 to a versioned kernel package"
  dir=$(fetch_deb "$pkg")
  ver=${pkg#linux-image-}
  if [ ! -e "$dir/lib/modules/$ver/modules.dep" ]; then
    depmod -b "$dir" "$ver" || die "depmod failed for $dir"
  fi
  printf '%s %s\n' "$dir" "$ver"
}

# fetch_xen_source -> prints the directory of Debian bookworm's Xen source tree (unpacked, patched).
fetch_xen_source() { cache_locked xen-source fetch_xen_source_unlocked; }
fetch_xen_source_unlocked() {
  local base="$IOREQ_FILTER_CACHE/xen-source" src
  if [ ! -e "$base/.done" ]; then
    if ! grep -rqs '^Types:.*deb-src' /etc/apt/sources.list.d/ /etc/apt/sources.list 2>/dev/null; then
      [ "$(id -u)" -eq 0 ] || die "need root to add a deb-src entry for Xen's source"
      if [ -f /etc/apt/sources.list.d/debian.sources ]; then
        sed 's/^Types: deb$/Types: deb-src/' /etc/apt/sources.list.d/debian.sources \
          > /etc/apt/sources.list.d/ioreq-filter-src.sources
      else
        sed -n 's/^deb /deb-src /p' /etc/apt/sources.list > /etc/apt/sources.list.d/ioreq-filter-src.list
      fi
      apt_update >/dev/null || die "apt-get update failed after adding a deb-src entry"
    fi
    rm -rf "$base.tmp" && mkdir -p "$base.tmp"
    # bookworm's own release first: the security suite's source has answered 404 (platform notes).
    if ! (cd "$base.tmp" && apt-get source -qq -t bookworm xen > "$base.tmp.log" 2>&1); then
      log "apt-get source -t bookworm xen failed ($(grep -m1 '^E:' "$base.tmp.log")); trying the default suite"
      rm -rf "$base.tmp" && mkdir -p "$base.tmp"
      (cd "$base.tmp" && apt-get source -qq xen >/dev/null) || die "apt-get source xen failed"
    fi
    rm -f "$base.tmp.log"
    touch "$base.tmp/.done" && rm -rf "$base" && mv "$base.tmp" "$base"
  fi
  src=$(find "$base" -maxdepth 1 -mindepth 1 -type d -name 'xen-*' | head -n1)
  [ -n "$src" ] || die "no xen-* directory in $base"
  printf '%s\n' "$src"
}
