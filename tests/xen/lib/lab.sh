# Lab: Debian's real Xen 4.17 + a busybox dom0, booted under QEMU TCG (AMD SVM + NPT emulated).
# Sourced by tests/xen/lab; the functions below are its building blocks.
# shellcheck shell=bash

LAB_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=../../../scripts/lib/common.sh
source "$LAB_DIR/../../scripts/lib/common.sh"
LAB_CACHE="$IOREQ_FILTER_CACHE/lab"
mkdir -p "$LAB_CACHE"

# Everything the dom0 image is made of comes from these Debian packages, downloaded and extracted
# (never from what happens to be installed on the host).
LAB_XEN_PACKAGES=(xen-hypervisor-4.17-amd64 xen-utils-4.17 xenstore-utils
  libxenmisc4.17 libxenstore4 libxencall1 libxendevicemodel1 libxenevtchn1 libxenforeignmemory1
  libxengnttab1 libxenhypfs1 libxentoolcore1 libxentoollog1)
LAB_OTHER_PACKAGES=(qemu-system-xen seabios qemu-system-data busybox-static)
# Kernel modules dom0 needs for the toolstack (xenfs pulls xen-privcmd through modules.dep).
LAB_DOM0_MODULES=(xen-evtchn xen-privcmd xen-gntdev xen-gntalloc xenfs)

# lab_resolve_packages: extract (cached) every package the lab uses and remember where, so later
# lookups cost no apt-cache call. Call it once, outside a subshell, before lab_deb.
declare -A LAB_DEB_DIR=()
LAB_KERNEL=""
lab_resolve_packages() {
  local p memo key line
  # Asking apt for ~20 candidate versions takes 10-40 s on a busy machine, so the answer is kept
  # until apt's package lists change (apt-get update rewrites them).
  key=$( { printf '%s\n' "${LAB_XEN_PACKAGES[@]}" "${LAB_OTHER_PACKAGES[@]}";
           stat -c '%n %Y %s' /var/lib/apt/lists/*Packages* /etc/apt/preferences* 2>/dev/null; } |
         sha256sum | cut -c1-16)
  memo="$LAB_CACHE/resolved-$key"
  if [ -f "$memo" ]; then
    while read -r p line; do
      [ "$p" = "@kver" ] && continue
      [ -e "$line/.extracted" ] || { LAB_DEB_DIR=(); LAB_KERNEL=""; break; }
      if [ "$p" = "@kernel" ]; then LAB_KERNEL="$line $(sed -n 's/^@kver //p' "$memo")"
      else LAB_DEB_DIR[$p]=$line; fi
    done < "$memo"
  fi
  for p in "${LAB_XEN_PACKAGES[@]}" "${LAB_OTHER_PACKAGES[@]}"; do
    [ -n "${LAB_DEB_DIR[$p]:-}" ] && continue
    # apt-get download as root warns about the _apt sandbox on every call; that is noise here.
    LAB_DEB_DIR[$p]=$(fetch_deb "$p" 2> >(grep -v -e 'unsandboxed as root' -e '^$' >&2)) || exit 2
  done
  if [ -z "$LAB_KERNEL" ] || [ ! -e "${LAB_KERNEL% *}/.extracted" ]; then
    LAB_KERNEL=$(fetch_kernel 2> >(grep -v -e 'unsandboxed as root' >&2)) || exit 2
  fi
  if [ ! -f "$memo" ]; then
    { for p in "${!LAB_DEB_DIR[@]}"; do printf '%s %s\n' "$p" "${LAB_DEB_DIR[$p]}"; done
      printf '@kernel %s\n@kver %s\n' "${LAB_KERNEL% *}" "${LAB_KERNEL##* }"; } > "$memo.tmp.$$"
    mv -f "$memo.tmp.$$" "$memo"
  fi
}

# lab_deb PKG -> where PKG was extracted (one of LAB_*_PACKAGES).
lab_deb() {
  [ -n "${LAB_DEB_DIR[$1]:-}" ] || lab_resolve_packages
  [ -n "${LAB_DEB_DIR[$1]:-}" ] || die "lab_deb: $1 is not one of the lab's packages"
  printf '%s\n' "${LAB_DEB_DIR[$1]}"
}

# lab_module_closure KDIR KVER MODULE... -> relative .ko paths in load order (dependencies first).
lab_module_closure() {
  local kdir="$1" kver="$2"; shift 2
  /usr/bin/python3 - "$kdir/lib/modules/$kver/modules.dep" "$@" <<'EOF'
import sys, os
dep_file, wanted = sys.argv[1], sys.argv[2:]
deps, by_name = {}, {}
with open(dep_file) as f:
    for line in f:
        mod, _, rest = line.partition(":")
        deps[mod] = rest.split()
        name = os.path.basename(mod).split(".ko")[0]
        by_name[name] = by_name[name.replace("-", "_")] = mod
order, seen = [], set()
def visit(mod):
    if mod in seen:
        return
    seen.add(mod)
    for d in deps.get(mod, []):
        visit(d)
    order.append(mod)
for w in wanted:
    mod = by_name.get(w) or by_name.get(w.replace("-", "_"))
    if mod is None:
        sys.exit(f"{dep_file}: no module named '{w}' (built into vmlinux, or misspelt?)")
    visit(mod)
print("\n".join(order))
EOF
}

# lab_copy_with_libs ROOT SRC DEST [LIBDIR...]: SRC to ROOT/DEST, plus every shared library it
# needs (resolved by ldd, LIBDIRs searched first) under ROOT/usr/lib/x86_64-linux-gnu.
lab_copy_with_libs() {
  local root="$1" src="$2" dest="$3"; shift 3
  local libpath lib
  libpath=$(IFS=:; echo "$*")
  mkdir -p "$root/$(dirname "$dest")"
  cp -L "$src" "$root/$dest"
  if ! readelf -d "$src" 2>/dev/null | grep -q '(NEEDED)'; then
    return 0
  fi
  local missing
  missing=$(LD_LIBRARY_PATH="$libpath" ldd "$src" | awk '/not found/ {print $1}')
  [ -z "$missing" ] || die "$src needs libraries that neither the fetched packages nor this host have: $missing"
  mkdir -p "$root/usr/lib/x86_64-linux-gnu" "$root/usr/lib64"
  while read -r lib; do
    case "$lib" in
      */ld-linux-x86-64.so.2) cp -L "$lib" "$root/usr/lib64/ld-linux-x86-64.so.2" ;;
      /*) [ -e "$root/usr/lib/x86_64-linux-gnu/$(basename "$lib")" ] ||
            cp -L "$lib" "$root/usr/lib/x86_64-linux-gnu/$(basename "$lib")" ;;
    esac
  done < <(LD_LIBRARY_PATH="$libpath" ldd "$src" | awk '$2 == "=>" {print $3} $1 ~ /^\// {print $1}')
}

# lab_write_cpio DIR OUT: a zstd-compressed newc archive of DIR, owned by root, written atomically.
lab_write_cpio() {
  local dir="$1" out="$2"
  (cd "$dir" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) |
    zstd -q -T2 -10 -o "$out.tmp.$$" -f || die "cannot write $out"
  # Per-process temporary name: two lab runs may build the same cached image at once.
  mv -f "$out.tmp.$$" "$out"
}

# lab_inputs_key -> hash of everything the base dom0 image is built from.
lab_inputs_key() {
  local p
  {
    for p in "${LAB_XEN_PACKAGES[@]}" "${LAB_OTHER_PACKAGES[@]}"; do lab_deb "$p"; done
    lab_kernel
    printf '%s\n' "${LAB_DOM0_MODULES[@]}"
    # The code that builds the image, not the whole file: other edits need no rebuild.
    declare -f lab_build_base lab_copy_with_libs lab_write_cpio lab_module_closure
  } | sha256sum | cut -c1-16
}

# lab_kernel -> prints "DIR VERSION" of Debian's kernel (dom0 and the Linux guest use the same one).
lab_kernel() {
  [ -n "$LAB_KERNEL" ] || lab_resolve_packages
  printf '%s\n' "$LAB_KERNEL"
}

# lab_build_base -> path of the cached base dom0 initramfs: busybox, the Xen toolstack, QEMU-xen,
# firmware and the dom0 modules. The per-run init, test script and files go in a second archive.
lab_build_base() {
  local key out root p d kdir kver bin
  key=$(lab_inputs_key)
  out="$LAB_CACHE/dom0-base-$key.cpio.zst"
  if [ -e "$out" ]; then printf '%s\n' "$out"; return 0; fi
  log "building the dom0 base image ($out)"
  root=$(mktemp -d "$LAB_CACHE/root.XXXXXX")
  declare -A pkg
  for p in "${LAB_XEN_PACKAGES[@]}" "${LAB_OTHER_PACKAGES[@]}"; do pkg[$p]=$(lab_deb "$p"); done
  read -r kdir kver < <(lab_kernel)
  local libdirs=()
  for p in "${LAB_XEN_PACKAGES[@]}"; do
    d="${pkg[$p]}/usr/lib/x86_64-linux-gnu"
    [ -d "$d" ] && libdirs+=("$d")
  done

  # Merged /usr, like Debian 12: the dynamic loader finds libraries through /lib too.
  mkdir -p "$root"/{bin,sbin,etc,proc,sys,dev,tmp,run,root,var/lib/xen,var/log/xen,usr/bin,usr/sbin,usr/lib/x86_64-linux-gnu,usr/lib64}
  ln -s usr/lib "$root/lib"
  ln -s usr/lib64 "$root/lib64"
  ln -s ../run "$root/var/run"

  cp "${pkg[busybox-static]}/bin/busybox" "$root/bin/busybox"
  local applet
  for applet in $("$root/bin/busybox" --list); do
    [ -e "$root/bin/$applet" ] || ln -s busybox "$root/bin/$applet"
  done

  local xenbin="${pkg[xen-utils-4.17]}/usr/lib/xen-4.17/bin"
  for bin in xl xenstored xen-init-dom0 xenconsoled libxl-save-helper xenstore-control xen-hvmctx; do
    lab_copy_with_libs "$root" "$xenbin/$bin" "usr/lib/xen-4.17/bin/$bin" "${libdirs[@]}"
  done
  for bin in "${pkg[xenstore-utils]}"/usr/bin/xenstore*; do
    if [ -L "$bin" ]; then
      cp -P "$bin" "$root/usr/bin/"
    else
      lab_copy_with_libs "$root" "$bin" "usr/bin/$(basename "$bin")" "${libdirs[@]}"
    fi
  done
  mkdir -p "$root/usr/lib/xen-4.17/boot"
  cp "${pkg[xen-utils-4.17]}/usr/lib/xen-4.17/boot/hvmloader" "$root/usr/lib/xen-4.17/boot/"
  lab_copy_with_libs "$root" "${pkg[qemu-system-xen]}/usr/libexec/xen-qemu-system-i386" \
    usr/libexec/xen-qemu-system-i386 "${libdirs[@]}"
  # xl aborts at exit without libgcc_s (glibc loads it for thread cancellation), and ldd cannot see that.
  cp -L /usr/lib/x86_64-linux-gnu/libgcc_s.so.1 "$root/usr/lib/x86_64-linux-gnu/"

  mkdir -p "$root/usr/share/seabios" "$root/usr/share/qemu"
  cp "${pkg[seabios]}"/usr/share/seabios/{bios-256k.bin,vgabios-stdvga.bin,vgabios-cirrus.bin} "$root/usr/share/seabios/"
  local q="${pkg[qemu-system-data]}/usr/share/qemu"
  cp "$q"/{kvmvapic.bin,linuxboot.bin,linuxboot_dma.bin} "$root/usr/share/qemu/"
  cp -r "$q/keymaps" "$root/usr/share/qemu/"

  mkdir -p "$root/lib/modules/dom0"
  local mod
  : > "$root/lib/modules/dom0/load-order"
  for mod in $(lab_module_closure "$kdir" "$kver" "${LAB_DOM0_MODULES[@]}"); do
    cp "$kdir/lib/modules/$kver/$mod" "$root/lib/modules/dom0/"
    basename "$mod" >> "$root/lib/modules/dom0/load-order"
  done

  printf 'root:x:0:0:root:/root:/bin/sh\n' > "$root/etc/passwd"
  printf 'root:x:0:\n' > "$root/etc/group"
  mkdir -p "$root/etc/xen"
  : > "$root/etc/xen/xl.conf"
  ldconfig -r "$root" 2>/dev/null || true
  lab_write_cpio "$root" "$out"
  rm -rf "$root"
  # Superseded images (~13 MB each) pile up as inputs change; a day's grace for runs still using one.
  find "$LAB_CACHE" -maxdepth 1 \( -name 'dom0-base-*.cpio.zst' -o -name 'linux-guest-*.cpio.zst' \) \
    -mtime +1 -delete 2>/dev/null || true
  printf '%s\n' "$out"
}

# lab_hypervisor [PATH] -> an uncompressed Xen image QEMU's multiboot loader can boot (it does not
# gunzip). Without PATH: Debian's xen-hypervisor-4.17-amd64.
lab_hypervisor() {
  local src="${1:-}" out
  if [ -z "$src" ]; then
    src="$(lab_deb xen-hypervisor-4.17-amd64)/boot/xen-4.17-amd64.gz"
  fi
  [ -f "$src" ] || die "--xen $src: no such file"
  if gzip -t "$src" 2>/dev/null; then
    out="$LAB_CACHE/xen-$(sha256sum "$src" | cut -c1-16)"
    if [ ! -e "$out" ]; then
      gzip -dc "$src" > "$out.tmp.$$" || die "cannot gunzip $src"
      mv -f "$out.tmp.$$" "$out"
    fi
    printf '%s\n' "$out"
  else
    printf '%s\n' "$src"
  fi
}

# lab_build_linux_guest INIT OUTDIR [MODULE...]: OUTDIR/vmlinuz and OUTDIR/initrd.zst, a Debian-kernel
# HVM guest whose initramfs holds busybox, INIT as /init and MODULE... (with their dependencies,
# listed in load order in /modules/load-order).
lab_build_linux_guest() {
  local init="$1" outdir="$2"; shift 2
  local kdir kver key cached root mod bb
  [ -f "$init" ] || die "linux guest init $init: no such file"
  read -r kdir kver < <(lab_kernel)
  bb="$(lab_deb busybox-static)/bin/busybox"
  key=$( { sha256sum "$init" "$bb"; echo "$kver $*"; declare -f lab_build_linux_guest lab_write_cpio lab_module_closure; } | sha256sum | cut -c1-16)
  cached="$LAB_CACHE/linux-guest-$key.cpio.zst"
  if [ ! -e "$cached" ]; then
    root=$(mktemp -d "$LAB_CACHE/guest.XXXXXX")
    mkdir -p "$root"/{bin,dev,proc,sys,tmp,modules}
    cp "$bb" "$root/bin/busybox"
    for applet in $("$bb" --list); do [ -e "$root/bin/$applet" ] || ln -s busybox "$root/bin/$applet"; done
    install -m 0755 "$init" "$root/init"
    : > "$root/modules/load-order"
    if [ $# -gt 0 ]; then
      for mod in $(lab_module_closure "$kdir" "$kver" "$@"); do
        cp "$kdir/lib/modules/$kver/$mod" "$root/modules/"
        basename "$mod" >> "$root/modules/load-order"
      done
    fi
    lab_write_cpio "$root" "$cached"
    rm -rf "$root"
  fi
  mkdir -p "$outdir"
  cp "$kdir/boot/vmlinuz-$kver" "$outdir/vmlinuz"
  cp "$cached" "$outdir/initrd.zst"
}

# lab_build_tiny_guest SRC.c OUT.elf: a bare-metal 32-bit HVM guest (firmware_override=) made of
# the runtime in guests/tiny and the test program SRC.c.
lab_build_tiny_guest() {
  local src="$1" out="$2" t="$LAB_DIR/guests/tiny" obj
  [ -f "$src" ] || die "tiny guest source $src: no such file"
  obj=$(mktemp -d)
  local cflags=(-m32 -march=i686 -ffreestanding -fno-pic -fno-pie -fno-stack-protector -fno-builtin
    -fno-asynchronous-unwind-tables -nostdinc -isystem "$(gcc -print-file-name=include)"
    -O2 -Wall -Wextra -Werror -I "$t")
  gcc "${cflags[@]}" -c "$t/start.S" -o "$obj/start.o" &&
    gcc "${cflags[@]}" -c "$t/runtime.c" -o "$obj/runtime.o" &&
    gcc "${cflags[@]}" -c "$src" -o "$obj/main.o" &&
    ld -m elf_i386 -nostdlib -static --no-warn-rwx-segments -T "$t/link.ld" -o "$out" "$obj/start.o" "$obj/runtime.o" "$obj/main.o" ||
    { rm -rf "$obj"; die "cannot build tiny guest from $src"; }
  rm -rf "$obj"
}
