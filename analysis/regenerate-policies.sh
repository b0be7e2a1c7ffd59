#!/usr/bin/env bash
# Regenerates the shipped analysis policies (policies/linux-6.1/*.json) from Debian 12's own driver binaries,
# the build Debian serves today (fetch_kernel), and records that build in each shipped policy:
#  - the same build as a shipped graph's (derived_from.guest_os): that graph is replaced by today's output
#    (a one-graph policy becomes exactly the file the analyser writes, so an unchanged kernel and analyser
#    reproduce the shipped file byte for byte);
#  - another build whose graph equals a shipped graph (modulo provenance, see `ioreq-filter policy diff`):
#    only the build is listed in that graph's derived_from.builds ("provenance only");
#  - another build with another graph: the graph is added to the policy's graphs, which the engine runs as
#    a union (a request passes if a live graph accepts it), so guests with either kernel are covered.
# Coverage files are the analyser's report for today's build and are replaced. Every file is written
# atomically (a temporary file in the same directory, then rename).
# Usage: analysis/regenerate-policies.sh [IOREQ_FILTER_BINARY] [OUTPUT_DIR]
#   OUTPUT_DIR defaults to policies/linux-6.1 (update in place); elsewhere, the shipped policies are still
#   the base and OUTPUT_DIR receives the result (tests/analysis/regenerate_check.sh compares the two).
#   IOREQ_FILTER_FRESH_DIR=DIR keeps today's one-build policies there.
set -euo pipefail
source "$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/scripts/lib/common.sh"
bin=${1:-$IOREQ_FILTER_ROOT/build/bin/ioreq-filter}
shipped=$IOREQ_FILTER_ROOT/policies/linux-6.1
out=${2:-$shipped}
[ -x "$bin" ] || die "no ioreq-filter binary at $bin (build first, or pass its path)"
read -r dir ver < <(fetch_kernel)
kernel="$dir/lib/modules/$ver/kernel"
echo "kernel: $ver ($dir)"
mkdir -p "$out"
# Today's one-build policies, as the analyser writes them: kept in $IOREQ_FILTER_FRESH_DIR if set
# (regenerate_check.sh shows what changed against them), else in a temporary directory.
if [ -n "${IOREQ_FILTER_FRESH_DIR:-}" ]; then
  fresh=$IOREQ_FILTER_FRESH_DIR && rm -rf "$fresh" && mkdir -p "$fresh"
else
  fresh=$(mktemp -d "${TMPDIR:-/tmp}/ioreq-filter-regenerate.XXXXXX")
  trap 'rm -rf "$fresh"' EXIT
fi
# Only drivers whose generated graphs were checked are shipped (see analysis/README.md).
timeout 120 "$bin" analyze "$kernel/drivers/block/floppy.ko" --device floppy \
  --guest-os "Debian 12 (Linux $ver)" -o "$fresh/floppy.json" --coverage "$fresh/floppy.coverage.txt"
# e1000: the NIC QEMU emulates (82540EM, 8086:100e) among the driver's ids.
timeout 120 "$bin" analyze "$kernel/drivers/net/ethernet/intel/e1000/e1000.ko" --device e1000 --pci 8086:100e \
  --guest-os "Debian 12 (Linux $ver)" -o "$fresh/e1000.json" --coverage "$fresh/e1000.coverage.txt"
# ne2k-pci with 8390.ko linked in: ei_* do most of the register traffic through dev->base_addr.
net="$kernel/drivers/net/ethernet"
timeout 120 "$bin" analyze "$net/8390/ne2k-pci.ko" "$net/8390/8390.ko" --device ne2k_pci --pci 10ec:8029 \
  --guest-os "Debian 12 (Linux $ver)" -o "$fresh/ne2k_pci.json" --coverage "$fresh/ne2k_pci.coverage.txt"
# pcnet32 (+ mii.ko, which it imports from): QEMU's PCnet-PCI II, 1022:2000.
timeout 120 "$bin" analyze "$net/amd/pcnet32.ko" "$kernel/drivers/net/mii.ko" --device pcnet --pci 1022:2000 \
  --guest-os "Debian 12 (Linux $ver)" -o "$fresh/pcnet.json" --coverage "$fresh/pcnet.coverage.txt"
# rtl8139: QEMU's RTL8139C+ (10ec:8139, revision 0x20) is driven by 8139cp (+ mii.ko). 8139too has the
# same ids but its probe refuses revision >= 0x20 ("enhanced 8139C+ chip, use 8139cp"), so its graph
# would only widen this device's policy: not shipped (analysis/README.md).
timeout 120 "$bin" analyze "$net/realtek/8139cp.ko" "$kernel/drivers/net/mii.ko" --device rtl8139 --pci 10ec:8139 \
  --guest-os "Debian 12 (Linux $ver)" -o "$fresh/rtl8139.json" --coverage "$fresh/rtl8139.coverage.txt"
# snd-ens1370: QEMU's ES1370 (1274:5000). Registers are ensoniq->port + offset (pci_resource_start, BAR 0);
# its AK4531 codec writes come through the driver's own snd_es1370_codec_write, so no snd-* module is linked.
timeout 120 "$bin" analyze "$kernel/sound/pci/snd-ens1370.ko" --device es1370 --pci 1274:5000 \
  --guest-os "Debian 12 (Linux $ver)" -o "$fresh/es1370.json" --coverage "$fresh/es1370.coverage.txt"
# e100 (+ mii.ko): QEMU's i82557b (8086:1229). Before e100.ko binds, the PCI core runs the kernel's own
# fixups for the device; quirk_e100_interrupt (vmlinux) reads and writes SCB cmd_hi through BAR 0, so the
# kernel image's fixups for 8086:1229 are analysed as entry points of the same graph (--kernel).
timeout 120 "$bin" analyze "$net/intel/e100.ko" "$kernel/drivers/net/mii.ko" --device e100 --pci 8086:1229 \
  --kernel "$dir/boot/vmlinuz-$ver" \
  --guest-os "Debian 12 (Linux $ver)" -o "$fresh/e100.json" --coverage "$fresh/e100.coverage.txt"
# vmxnet3: QEMU's vmxnet3 (15ad:07b0). BAR 1 (command/config registers) is ioremap(pci_resource_start(
# adapter->pdev, 1)); the BAR 0 registers (interrupt masks, ring producers) are reached at an index the
# driver computes at run time, so the policy has no BAR 0 region, and the filter refuses BAR 0 as uncovered
# (analysis/README.md).
timeout 120 "$bin" analyze "$kernel/drivers/net/vmxnet3/vmxnet3.ko" --device vmxnet3 --pci 15ad:07b0 \
  --guest-os "Debian 12 (Linux $ver)" -o "$fresh/vmxnet3.json" --coverage "$fresh/vmxnet3.coverage.txt"

# Record today's build in each shipped policy (or install a policy that is not shipped yet).
for f in "$fresh"/*.json; do
  name=$(basename "$f")
  if [ -e "$shipped/$name" ]; then
    "$bin" policy add-build "$shipped/$name" "$f" -o "$out/$name" \
      || die "policies/linux-6.1/$name: cannot record Linux $ver's graph (see above)"
  else
    install_atomically "$f" "$out/$name"
    echo "$out/$name: new policy from Linux $ver"
  fi
done
for f in "$fresh"/*.coverage.txt; do install_atomically "$f" "$out/$(basename "$f")"; done
