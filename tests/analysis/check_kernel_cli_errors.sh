#!/usr/bin/env bash
# `ioreq-filter analyze --kernel` refuses what it cannot use with an error naming the input and the reason.
# Usage: check_kernel_cli_errors.sh IOREQ_FILTER_BINARY KERNEL_MODULES_FILE
set -uo pipefail
bin=$1
read -r dir ver < "$2"
kernel=$dir/lib/modules/$ver/kernel
e100=$kernel/drivers/net/ethernet/intel/e100.ko
status=0
expect() {  # expect SUBSTRING -- ARGS...: exit status 2 (bad input) and SUBSTRING on stderr
  local want=$1
  shift 2
  local out rc
  out=$(timeout 120 "$bin" analyze "$@" 2>&1 >/dev/null)
  rc=$?
  if [ $rc -ne 2 ] || ! grep -qF -- "$want" <<<"$out"; then
    echo "FAIL: analyze $* -> exit $rc, expected 2 and '$want':"; echo "$out" | head -5; status=1
  fi
}
expect "/nonexistent/vmlinuz: cannot open the kernel image" -- "$e100" --kernel /nonexistent/vmlinuz
expect "is not ET_EXEC" -- "$e100" --kernel "$e100"
expect "neither an ELF file nor a bzImage" -- "$e100" --kernel "$dir/boot/System.map-$ver"
expect "--pci-class: 'ethernet' is not a 24-bit class code" -- "$e100" --kernel "$dir/boot/vmlinuz-$ver" --pci-class ethernet
expect "--kernel needs the PCI device the fixups run for" -- "$kernel/drivers/block/floppy.ko" --kernel "$dir/boot/vmlinuz-$ver"
exit $status
