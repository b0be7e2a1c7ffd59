#!/usr/bin/python3
"""Damaged kernel images for the kernel loader's fuzz replay (analysis/fuzz/replay_main.cpp: inputs whose
name holds ".vmlinu" go through parseKernelImage, linkKernelFixups, function recovery and the analyser).

  make_damaged_kernels.py OUT_DIR

A small valid vmlinux (ELF64 x86-64 ET_EXEC, section headers, no symbols) with __ksymtab naming
__fentry__/ioremap/iounmap/__x86_return_thunk, one .pci_fixup entry whose hook maps BAR 0 and writes it
from a cold fragment (quirk_e100_interrupt's shape), the same kernel as an xz bzImage, and variants each
broken in one way. OUT_DIR/expect-kernel.tsv says what the loader must answer for each file: `ok` or
`error<TAB>SUBSTRING`. Deterministic: the same Python gives the same files.
"""
import lzma
import os
import struct
import sys

EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
SHDR = struct.Struct("<IIQQQQIIQQ")
SHT_PROGBITS, SHT_STRTAB = 1, 3
SHF_ALLOC, SHF_EXECINSTR = 2, 4
ET_REL, ET_EXEC = 1, 2
TEXT, DATA = 0xFFFFFFFF81000000, 0xFFFFFFFF82000000

HOOK = bytes.fromhex(
    "e8fb010000"      # 0x00 call __fentry__ (0x200)
    "55"              # 0x05 push %rbp
    "53"              # 0x06 push %rbx
    "4889fb"          # 0x07 mov %rdi,%rbx
    "488bbbc8030000"  # 0x0a mov 0x3c8(%rbx),%rdi     dev->resource[0].start
    "4885ff"          # 0x11 test %rdi,%rdi
    "7426"            # 0x14 je 0x3c
    "be08000000"      # 0x16 mov $0x8,%esi
    "e8f0010000"      # 0x1b call ioremap (0x210)
    "4885c0"          # 0x20 test %rax,%rax
    "7417"            # 0x23 je 0x3c
    "488d6803"        # 0x25 lea 0x3(%rax),%rbp
    "8a5003"          # 0x29 mov 0x3(%rax),%dl
    "84d2"            # 0x2c test %dl,%dl
    "0f84cc000000"    # 0x2e je 0x100 (cold fragment)
    "4889c7"          # 0x34 mov %rax,%rdi
    "e8e4010000"      # 0x37 call iounmap (0x220)
    "5b"              # 0x3c pop %rbx
    "5d"              # 0x3d pop %rbp
    "e9ed010000"      # 0x3e jmp __x86_return_thunk (0x230)
)
COLD = bytes.fromhex(
    "48890424"        # 0x100 mov %rax,(%rsp)
    "ba01000000"      # 0x104 mov $0x1,%edx
    "885500"          # 0x109 mov %dl,0x0(%rbp)
    "488b0424"        # 0x10c mov (%rsp),%rax
    "e91fffffff"      # 0x110 jmp 0x34
)
EXPORTS = [(TEXT + 0x200, "__fentry__"), (TEXT + 0x210, "ioremap"), (TEXT + 0x220, "iounmap"), (TEXT + 0x230, "__x86_return_thunk")]


def text_bytes(hook=HOOK, cold=COLD):
    t = bytearray(b"\xcc" * 0x240)
    t[0:len(hook)] = hook
    t[0x100:0x100 + len(cold)] = cold
    for stub in range(0x200, 0x240, 0x10):
        t[stub] = 0xC3  # ret
    return bytes(t)


def kernel_sections(fixups=((0x8086, 0xFFFF, 0x200, 8, TEXT),), exports=EXPORTS, text=None):
    ksymtab, strings, fixup_at = DATA, DATA + 0x1000, DATA + 0x2000
    tab, strs = bytearray(), bytearray()
    for i, (address, name) in enumerate(exports):
        entry = ksymtab + 12 * i
        tab += struct.pack("<iii", address - entry, strings + len(strs) - (entry + 4), 0)
        strs += name.encode() + b"\0"
    fix = bytearray()
    for i, (vendor, device, cls, shift, hook) in enumerate(fixups):
        entry = fixup_at + 16 * i
        fix += struct.pack("<HHIIi", vendor, device, cls, shift, hook - (entry + 12))
    return [
        [".text", SHT_PROGBITS, SHF_ALLOC | SHF_EXECINSTR, TEXT, text if text is not None else text_bytes()],
        ["__ksymtab", SHT_PROGBITS, SHF_ALLOC, ksymtab, bytes(tab)],
        ["__ksymtab_strings", SHT_PROGBITS, SHF_ALLOC, strings, bytes(strs)],
        [".pci_fixup", SHT_PROGBITS, SHF_ALLOC, fixup_at, bytes(fix)],
    ]


def elf(sections, e_type=ET_EXEC, machine=62, size_override=None):
    out = bytearray(EHDR.size)
    names = bytearray(b"\0")
    headers = [SHDR.pack(0, 0, 0, 0, 0, 0, 0, 0, 0, 0)]
    for name, sh_type, flags, address, data in sections + [[".shstrtab", SHT_STRTAB, 0, 0, None]]:
        name_off = len(names)
        names += name.encode() + b"\0"
        if data is None:
            data = bytes(names)
        size = size_override.get(name, len(data)) if size_override else len(data)
        headers.append(SHDR.pack(name_off, sh_type, flags, address, len(out), size, 0, 0, 1, 0))
        out += data
    while len(out) % 8:
        out += b"\0"
    shoff = len(out)
    for h in headers:
        out += h
    ident = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9)
    out[0:EHDR.size] = EHDR.pack(ident, e_type, machine, 1, 0, 0, shoff, 0, EHDR.size, 0, 0, SHDR.size, len(headers), len(headers) - 1)
    return bytes(out)


def bzimage(payload, protocol=0x20F, length=None):
    b = bytearray(1024)
    b[0x1F1] = 1
    b[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", b, 0x206, protocol)
    struct.pack_into("<II", b, 0x248, 0, len(payload) if length is None else length)
    return bytes(b) + payload


def xz(data):
    return lzma.compress(data, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32) + struct.pack("<I", len(data))


def variants():
    good = elf(kernel_sections())
    packed = xz(good)
    damaged = bytearray(packed)
    damaged[len(damaged) // 2] ^= 0xFF
    no_fixup = kernel_sections()[:3]
    no_ksymtab = [kernel_sections()[0], kernel_sections()[3]]
    self_loop = text_bytes(hook=bytes.fromhex("e8fb010000" "ebfe"))  # call __fentry__; jmp .
    # The hook tail-calls a second function (it starts with `call __fentry__`), which calls the first.
    chain_hook = bytes.fromhex("e8fb010000" "e9f6000000")  # call __fentry__; jmp 0x100
    chain_cold = bytes.fromhex("e8fb000000" "e8f6feffff" "e921010000")  # call __fentry__; call 0x0; jmp __x86_return_thunk
    chain = text_bytes(hook=chain_hook, cold=chain_cold)
    return [
        ("seed-kernel.vmlinux", good, "ok"),
        ("seed-kernel.vmlinuz", bzimage(packed), "ok"),
        ("kernel-self-loop.vmlinux", elf(kernel_sections(text=self_loop)), "ok"),
        ("kernel-tail-call-chain.vmlinux", elf(kernel_sections(text=chain)), "ok"),
        ("kernel-no-fixups-for-any-device.vmlinux", elf(kernel_sections(fixups=())), "ok"),
        ("kernel-not-elf-nor-bzimage.vmlinuz", b"MZ" + bytes(0x300), "error\tneither an ELF file nor a bzImage"),
        ("kernel-bzimage-truncated.vmlinuz", bzimage(packed)[: 1024 + len(packed) // 2], "error\truns past the end of the file"),
        ("kernel-xz-stops-halfway.vmlinuz", bzimage(packed[: len(packed) // 2]), "error\txz stream ends early"),
        ("kernel-xz-damaged.vmlinuz", bzimage(bytes(damaged)), "error\txz payload is damaged"),
        ("kernel-gzip-payload.vmlinuz", bzimage(b"\x1f\x8b\x08\0" + bytes(64)), "error\tcompressed with gzip"),
        ("kernel-boot-protocol-old.vmlinuz", bzimage(packed, protocol=0x206), "error\tolder than 2.08"),
        ("kernel-payload-length-huge.vmlinuz", bzimage(packed, length=0xFFFFFFFF), "error\truns past the end of the file"),
        ("kernel-relocatable.vmlinux", elf(kernel_sections(), e_type=ET_REL), "error\tis not ET_EXEC"),
        ("kernel-i386.vmlinux", elf(kernel_sections(), machine=3), "error\tnot an x86-64 ELF64 kernel"),
        ("kernel-no-pci-fixup.vmlinux", elf(no_fixup), "error\tno .pci_fixup section"),
        ("kernel-no-ksymtab.vmlinux", elf(no_ksymtab), "error\tno __ksymtab"),
        ("kernel-ksymtab-ragged.vmlinux", elf(kernel_sections(), size_override={"__ksymtab": 13}), "error\tnot a whole number of 12-byte"),
        ("kernel-ksymtab-name-outside.vmlinux", elf(kernel_sections(exports=EXPORTS), size_override={"__ksymtab_strings": 3}),
         "error\tholds no NUL-terminated name"),
        ("kernel-pci-fixup-ragged.vmlinux", elf(kernel_sections(), size_override={".pci_fixup": 17}), "error\tnot a whole number of 16-byte"),
        ("kernel-hook-outside-text.vmlinux", elf(kernel_sections(fixups=((0x8086, 0xFFFF, 0x200, 8, DATA + 0x1000),))),
         "error\tis outside the kernel's code"),
        ("kernel-text-past-eof.vmlinux", elf(kernel_sections(), size_override={".text": 0x10000000}), "error\truns past the end of the file"),
    ]


def main(argv):
    if len(argv) != 2:
        sys.stderr.write(__doc__)
        return 2
    out_dir = argv[1]
    os.makedirs(out_dir, exist_ok=True)
    lines = []
    for name, data, expect in variants():
        with open(os.path.join(out_dir, name), "wb") as f:
            f.write(data)
        lines.append(f"{name}\t{expect}\n")
    with open(os.path.join(out_dir, "expect-kernel.tsv"), "w", encoding="utf-8") as f:
        f.writelines(lines)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
