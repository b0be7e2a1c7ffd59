#!/usr/bin/env bash
# Builds and runs the libFuzzer target for the module and kernel image loaders + analyser.
# Needs clang-16 and libclang-rt-16-dev (Debian 12; ~230 MB installed, in scripts/packages.txt).
# clang-16 predates libstdc++ 12's feature test for <expected>, hence the __cpp_concepts override.
# Usage: analysis/fuzz/build-fuzzer.sh OUT_DIR [SECONDS]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
out=${1:?usage: build-fuzzer.sh OUT_DIR [SECONDS]}
seconds=${2:-60}
command -v clang++-16 >/dev/null || { echo "clang++-16 missing: apt-get install clang-16 libclang-rt-16-dev" >&2; exit 2; }
mkdir -p "$out/corpus"
clang++-16 -Wno-builtin-macro-redefined -D__cpp_concepts=202002L -std=c++2b -O1 -g -fsanitize=fuzzer,address,undefined \
  -I"$root/analysis/include" -I"$root/shim/core/include" -I/usr/include/capstone \
  "$root/analysis/fuzz/fuzz_module_loader.cpp" "$root"/analysis/src/*.cpp "$root/shim/core/src/policy.cpp" \
  "$root/shim/core/src/io_request.cpp" -lelf -lcapstone -llzma -o "$out/fuzz_module_loader"
source "$root/scripts/lib/common.sh"
read -r dir ver < <(fetch_kernel)
for m in drivers/block/floppy.ko drivers/net/ethernet/8390/ne2k-pci.ko drivers/input/misc/pcspkr.ko; do
  cp "$dir/lib/modules/$ver/kernel/$m" "$out/corpus/" 2>/dev/null || true
done
timeout $((seconds + 120)) "$out/fuzz_module_loader" -artifact_prefix="$out/" -max_total_time="$seconds" -max_len=200000 -timeout=10 -rss_limit_mb=2048 "$out/corpus"
