#!/usr/bin/env bash
# Runs the clang libFuzzer target (analysis/fuzz/build-fuzzer.sh) for SECONDS, seeded with the committed
# corpus. Exit 77 (ctest: skipped) when clang-16 is not installed.
# Usage: libfuzzer_run.sh SOURCE_DIR SCRATCH_DIR SECONDS
set -euo pipefail
src=$1 scratch=$2 seconds=$3
if ! command -v clang++-16 >/dev/null || [ ! -d /usr/lib/llvm-16/lib/clang/16/lib/linux ]; then
  echo "SKIPPED: clang++-16 / libclang-rt-16-dev not installed (scripts/packages.txt lists them: run scripts/test as root); the GCC ASan+UBSan replay (analysis_fuzz_*) still runs"
  exit 77
fi
rm -rf "$scratch" && mkdir -p "$scratch/corpus"
cp "$src"/tests/analysis/fuzz-corpus/*.ko "$src"/tests/analysis/fuzz-corpus/*.vmlinux "$scratch/corpus/"
exec "$src/analysis/fuzz/build-fuzzer.sh" "$scratch" "$seconds"
