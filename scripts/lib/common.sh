# Shared shell helpers for scripts/demo, scripts/test and the test tooling. Source, don't run.
# shellcheck shell=bash

IOREQ_FILTER_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export IOREQ_FILTER_ROOT
: "${IOREQ_FILTER_CACHE:=${HOME:-/root}/.cache/ioreq-filter}"
export IOREQ_FILTER_CACHE
mkdir -p "$IOREQ_FILTER_CACHE"

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 2; }

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
    apt-get update -qq && touch "$stamp"
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# configure_and_build BUILD_DIR [cmake args...]
configure_and_build() {
  local dir="$1"; shift
  cmake -S "$IOREQ_FILTER_ROOT" -B "$dir" -G Ninja "$@" >/dev/null
  cmake --build "$dir" -j "$(nproc)"
}
