#!/usr/bin/env bash
# Damaged variants of real Debian modules (analysis/fuzz/make_damaged_modules.py --from) and seeded
# mutations of three modules through the ASan+UBSan replay driver.
# Usage: fuzz_real_modules.sh ANALYSIS_FUZZ_REPLAY SOURCE_DIR KERNEL_MODULES_FILE SCRATCH_DIR
set -euo pipefail
replay=$1 src=$2 modules_file=$3 scratch=$4
read -r dir ver < "$modules_file"
kernel=$dir/lib/modules/$ver/kernel
rm -rf "$scratch" && mkdir -p "$scratch"
args=()
for m in drivers/input/misc/pcspkr.ko drivers/net/ethernet/8390/ne2k-pci.ko; do
  name=$(basename "$m" .ko)
  /usr/bin/python3 "$src/analysis/fuzz/make_damaged_modules.py" --from "$kernel/$m" "$scratch/$name"
  args+=(--expect "$scratch/$name/expect.tsv" "$scratch/$name")
done
# Mutation counts keep the run within a few minutes under the sanitizers on two cores.
exec "$replay" "${args[@]}" --seed 1 --timeout 60 --jobs 2 --save-failures "$scratch/failures" \
  --mutations 150 --mutate "$kernel/drivers/input/misc/pcspkr.ko" --mutate "$kernel/drivers/net/ethernet/8390/ne2k-pci.ko" \
  --mutate "$kernel/drivers/block/floppy.ko"
