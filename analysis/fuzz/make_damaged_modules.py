#!/usr/bin/python3
"""Damaged kernel modules for the loader/analyser fuzz replay (analysis/fuzz/replay_main.cpp).

  make_damaged_modules.py --seed OUT_DIR           a small valid x86-64 .ko built here, plus its damaged variants
  make_damaged_modules.py --from MODULE.ko OUT_DIR  damaged variants of a real module

Each variant is one ELF structure broken on purpose (truncation, section headers, symbols, relocations,
string tables, e_machine, huge sizes, a signature trailer without a module...). OUT_DIR/expect.tsv names
each file and what the loader must say: `ok` (loads and analyses) or `error<TAB>SUBSTRING` (refused with
a message containing SUBSTRING). Deterministic: the same input gives the same files.
"""
import os
import struct
import sys

EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
SHDR = struct.Struct("<IIQQQQIIQQ")
SYM = struct.Struct("<IBBHQQ")
RELA = struct.Struct("<QQq")
SIG_MAGIC = b"~Module signature appended~\n"
SHT_PROGBITS, SHT_SYMTAB, SHT_STRTAB, SHT_RELA, SHT_NOBITS, SHT_REL = 1, 2, 3, 4, 8, 9
SHF_WRITE, SHF_ALLOC, SHF_EXECINSTR = 1, 2, 4
STT_OBJECT, STT_FUNC, STT_SECTION = 1, 2, 3
STB_LOCAL, STB_GLOBAL = 0, 1
R_X86_64_PC32, R_X86_64_PLT32 = 2, 4


def build_seed():
    """A relocatable x86-64 module with port I/O, an external call, a local call, a global and a PCI table."""
    text = bytes.fromhex(
        "baf2030000"      # mov $0x3f2,%edx
        "b81c000000"      # mov $0x1c,%eax
        "ee"              # out %al,(%dx)
        "baf4030000"      # mov $0x3f4,%edx
        "ec"              # in (%dx),%al
        "488b3d00000000"  # mov io_base(%rip),%rdi      (R_X86_64_PC32 io_base-4)
        "e800000000"      # call ioread8                (R_X86_64_PLT32 ioread8-4)
        "e800000000"      # call helper                 (R_X86_64_PLT32 helper-4)
        "c3"              # ret
        # helper:
        "baf5030000"      # mov $0x3f5,%edx
        "b003"            # mov $3,%al
        "ee"              # out %al,(%dx)
        "c3")             # ret
    helper = text.index(bytes.fromhex("baf5030000"))
    pci = struct.pack("<IIIIIIQ", 0x8086, 0x100E, 0xFFFFFFFF, 0xFFFFFFFF, 0, 0, 0) + b"\0" * 8
    pci += b"\0" * 40
    data = struct.pack("<Q", 0x3F0) + pci
    modinfo = b"license=GPL\0name=seed\0alias=pci:v00008086d0000100Esv*sd*bc*sc*i*\0"
    strtab = b"\0init_module\0helper\0io_base\0ioread8\0__mod_pci__seed_device_table\0"
    name = lambda s: strtab.index(s.encode() + b"\0")  # noqa: E731
    syms = [
        SYM.pack(0, 0, 0, 0, 0, 0),
        SYM.pack(0, (STB_LOCAL << 4) | STT_SECTION, 0, 1, 0, 0),
        SYM.pack(name("helper"), (STB_LOCAL << 4) | STT_FUNC, 0, 1, helper, len(text) - helper),
        SYM.pack(name("io_base"), (STB_LOCAL << 4) | STT_OBJECT, 0, 3, 0, 8),
        SYM.pack(name("__mod_pci__seed_device_table"), (STB_LOCAL << 4) | STT_OBJECT, 0, 3, 8, 80),
        SYM.pack(name("init_module"), (STB_GLOBAL << 4) | STT_FUNC, 0, 1, 0, helper),
        SYM.pack(name("ioread8"), (STB_GLOBAL << 4), 0, 0, 0, 0),
    ]
    mov_disp = text.index(bytes.fromhex("488b3d")) + 3
    call1 = text.index(bytes.fromhex("e800000000")) + 1
    relas = [RELA.pack(mov_disp, (3 << 32) | R_X86_64_PC32, -4),
             RELA.pack(call1, (6 << 32) | R_X86_64_PLT32, -4),
             RELA.pack(call1 + 5, (2 << 32) | R_X86_64_PLT32, -4)]
    names = ["", ".text", ".rela.text", ".data", ".modinfo", ".symtab", ".strtab", ".shstrtab", ".bss"]
    shstrtab = b"\0" + b"".join(n.encode() + b"\0" for n in names[1:])
    contents = [b"", text, b"".join(relas), data, modinfo, b"".join(syms), strtab, shstrtab, b""]
    # (type, flags, link, info, align, entsize)
    attrs = [(0, 0, 0, 0, 0, 0), (SHT_PROGBITS, SHF_ALLOC | SHF_EXECINSTR, 0, 0, 16, 0), (SHT_RELA, 0, 5, 1, 8, 24),
             (SHT_PROGBITS, SHF_ALLOC | SHF_WRITE, 0, 0, 8, 0), (SHT_PROGBITS, SHF_ALLOC, 0, 0, 1, 0),
             (SHT_SYMTAB, 0, 6, 5, 8, 24), (SHT_STRTAB, 0, 0, 0, 1, 0), (SHT_STRTAB, 0, 0, 0, 1, 0),
             (SHT_NOBITS, SHF_ALLOC | SHF_WRITE, 0, 0, 8, 0)]
    body = bytearray(EHDR.size)
    offsets = []
    for c in contents:
        while len(body) % 8:
            body.append(0)
        offsets.append(len(body))
        body += c
    while len(body) % 8:
        body.append(0)
    shoff = len(body)
    for i, n in enumerate(names):
        t, fl, link, info, align, ent = attrs[i]
        size = 0x40 if t == SHT_NOBITS else len(contents[i])
        body += SHDR.pack(shstrtab.index(n.encode() + b"\0") if n else 0, t, fl, 0, offsets[i] if i else 0, size, link, info, align, ent)
    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + b"\0" * 8
    body[:EHDR.size] = EHDR.pack(ident, 1, 62, 1, 0, 0, shoff, 0, EHDR.size, 0, 0, SHDR.size, len(names), 7)
    return bytes(body)


class Elf:
    """Just enough of ELF64 to find and break the structures the loader reads."""

    def __init__(self, image):
        if len(image) >= len(SIG_MAGIC) + 12 and image.endswith(SIG_MAGIC):
            sig_len = struct.unpack(">I", image[-len(SIG_MAGIC) - 4:-len(SIG_MAGIC)])[0]
            image = image[:len(image) - len(SIG_MAGIC) - 12 - sig_len]
        self.image = bytes(image)
        f = EHDR.unpack_from(self.image, 0)
        self.shoff, self.shnum, self.shstrndx = f[6], f[12], f[13]
        self.sections = [list(SHDR.unpack_from(self.image, self.shoff + i * SHDR.size)) for i in range(self.shnum)]
        sh = self.sections[self.shstrndx]
        names = self.image[sh[4]:sh[4] + sh[5]]
        self.names = [names[s[0]:names.index(b"\0", s[0])].decode() for s in self.sections]

    def index(self, pred):
        for i, s in enumerate(self.sections):
            if pred(i, s):
                return i
        return None

    def named(self, name):
        return self.index(lambda i, s: self.names[i] == name)

    def symtab(self):
        return self.index(lambda i, s: s[1] == SHT_SYMTAB)

    def code_rela(self):
        return self.index(lambda i, s: s[1] == SHT_RELA and s[7] < self.shnum and self.sections[s[7]][2] & SHF_EXECINSTR)

    def symbols(self):
        st = self.sections[self.symtab()]
        return [(i, SYM.unpack_from(self.image, st[4] + i * SYM.size)) for i in range(st[5] // SYM.size)]

    def symbol_offset(self, pred):
        st = self.sections[self.symtab()]
        for i, sym in self.symbols():
            if pred(sym):
                return st[4] + i * SYM.size, i, sym
        return None


def patch(image, offset, fmt, *values):
    out = bytearray(image)
    struct.pack_into(fmt, out, offset, *values)
    return bytes(out)


def patch_section(elf, index, field, value):
    """Section header `index`, field number (SHDR order), set to `value`."""
    fields = list(elf.sections[index])
    fields[field] = value
    out = bytearray(elf.image)
    SHDR.pack_into(out, elf.shoff + index * SHDR.size, *fields)
    return bytes(out)


def patch_ehdr(elf, field, value):
    fields = list(EHDR.unpack_from(elf.image, 0))
    fields[field] = value
    out = bytearray(elf.image)
    EHDR.pack_into(out, 0, *fields)
    return bytes(out)


def signature(sig_len, payload=b""):
    return payload + struct.pack(">BBBBBBBBI", 0, 0, 0, 0, 0, 0, 0, 0, sig_len) + SIG_MAGIC


def variants(elf):
    """(name, bytes, expectation) for each damage; expectation: 'ok' or 'error\\tSUBSTRING'."""
    img = elf.image
    text = elf.index(lambda i, s: s[1] == SHT_PROGBITS and s[2] & SHF_EXECINSTR)
    symtab = elf.symtab()
    strtab = elf.sections[symtab][6]
    rela = elf.code_rela()
    out = [
        ("empty", b"", "error\tnot an ELF file"),
        ("magic-only", img[:4], "error\tnot an ELF file"),
        ("class-32", patch(img, 4, "<B", 1), "error\tnot ELFCLASS64"),
        ("big-endian", patch(img, 5, "<B", 2), "error\tnot little-endian"),
        ("machine-i386", patch_ehdr(elf, 2, 3), "error\te_machine: machine 3 is not x86-64"),
        ("type-exec", patch_ehdr(elf, 1, 2), "error\te_type: type 2 is not a relocatable object"),
        ("header-truncated", img[:40], "error\tlibelf cannot open the image"),
        ("section-headers-past-eof", patch_ehdr(elf, 6, len(img) + 0x1000), "error\tsection headers"),
        ("section-header-count-huge", patch_ehdr(elf, 12, 0xFFFF), "error\tsection headers"),
        ("section-header-entsize-wrong", patch_ehdr(elf, 11, 32), "error\te_shentsize: section header size 32 is not 64"),
        ("shstrndx-out-of-range", patch_ehdr(elf, 13, elf.shnum + 5), f"error\te_shstrndx: section name table index {elf.shnum + 5} out of range"),
        ("truncated-in-section-headers", img[:elf.shoff + SHDR.size * 3], "error\tsection headers"),
        ("truncated-before-section-headers", img[:elf.shoff // 2], "error\tsection headers"),
        ("text-offset-past-eof", patch_section(elf, text, 4, len(img) - 4), "error\textends past the end of the file"),
        ("text-size-huge", patch_section(elf, text, 5, 1 << 63), "error\textends past the end of the file"),
        ("text-offset-wraps", patch_section(elf, text, 4, (1 << 64) - 8), "error\textends past the end of the file"),
        ("symtab-link-not-strtab", patch_section(elf, symtab, 6, text), "error\t.symtab: sh_link"),
        ("symtab-link-out-of-range", patch_section(elf, symtab, 6, 0xFFFFFFFF), "error\t.symtab: sh_link"),
        ("symtab-missing", patch_section(elf, symtab, 1, SHT_PROGBITS), "error\tno .symtab"),
        ("symtab-size-ragged", patch_section(elf, symtab, 5, elf.sections[symtab][5] - 5), "error\tis not a whole number of 24-byte symbols"),
        ("symtab-size-huge", patch_section(elf, symtab, 5, 1 << 62), "error\textends past the end of the file"),
        ("strtab-unterminated", patch(img, elf.sections[strtab][4] + elf.sections[strtab][5] - 1, "<B", 0x41), "any"),
        ("strtab-type-wrong", patch_section(elf, strtab, 1, SHT_PROGBITS), "error\t.symtab: sh_link"),
        ("strtab-empty", patch_section(elf, strtab, 5, 0), "error\t.symtab["),
        ("signature-without-module", signature(0), "error\tnot an ELF file"),
        ("signature-only-trailer", SIG_MAGIC, "error\tnot an ELF file"),
        ("signature-length-huge", img + signature(0xFFFFFFFF), "ok"),
        ("signature-appended", img + signature(16, b"\xA5" * 16), "ok"),
    ]
    sym = elf.symbol_offset(lambda s: s[0] != 0)
    if sym:
        off, i, _ = sym
        out.append(("symbol-name-outside-strtab", patch(img, off, "<I", 0x7FFFFFF0), f"error\t.symtab[{i}]: name offset"))
    sym = elf.symbol_offset(lambda s: 0 < s[3] < 0xFF00)
    if sym:
        off, i, _ = sym
        out.append(("symbol-section-out-of-range", patch(img, off + 6, "<H", 0xFEFF), f"error\t.symtab[{i}]"))
    func = elf.symbol_offset(lambda s: s[1] & 0xF == STT_FUNC and 0 < s[3] < 0xFF00)
    if func:
        off, _, s = func
        out += [("function-size-huge", patch(img, off + 16, "<Q", (1 << 64) - 1), "ok"),
                ("function-past-section", patch(img, off + 8, "<Q", elf.sections[s[3]][5] + 0x100), "ok"),
                ("function-value-wraps", patch(img, off + 8, "<QQ", (1 << 64) - 2, 4), "ok")]
        # Every function covers the whole of its section: overlapping code, one CFG per alias.
        whole = bytearray(img)
        st = elf.sections[symtab]
        for j, sy in elf.symbols():
            if sy[1] & 0xF == STT_FUNC and sy[3] == s[3]:
                struct.pack_into("<QQ", whole, st[4] + j * SYM.size + 8, 0, elf.sections[s[3]][5])
        out.append(("functions-overlap-whole-section", bytes(whole), "ok"))
    code = elf.sections[text]
    out += [("text-undecodable", img[:code[4]] + b"\xFF" * code[5] + img[code[4] + code[5]:], "ok"),
            ("text-self-loops", img[:code[4]] + b"\xEB\xFE" * (code[5] // 2) + b"\x90" * (code[5] % 2) + img[code[4] + code[5]:], "ok"),
            ("text-backward-jumps", img[:code[4]] + (b"\xEE\x75\xFD" * (code[5] // 3 + 1))[:code[5]] + img[code[4] + code[5]:], "ok")]
    if rela is not None:
        rs = elf.sections[rela]
        out += [
            ("rela-target-out-of-range", patch_section(elf, rela, 7, 0xFFFF), "error\tsh_info 65535 names no section"),
            ("rela-target-null", patch_section(elf, rela, 7, 0), "error\tsh_info 0 names no section"),
            ("rela-link-not-symtab", patch_section(elf, rela, 6, text), "error\tis not the symbol table"),
            ("rela-as-rel", patch_section(elf, rela, 1, SHT_REL), "error\tSHT_REL relocations"),
            ("rela-symbol-out-of-range", patch(img, rs[4] + 8, "<Q", (0xFFFFFF << 32) | R_X86_64_PLT32), "error\tsymbol index 16777215 out of range"),
            ("rela-offset-outside-target", patch(img, rs[4], "<Q", 1 << 40), "error\toffset 0x10000000000 outside"),
            ("rela-size-huge", patch_section(elf, rela, 5, 1 << 62), "error\textends past the end of the file"),
            ("rela-size-ragged", patch_section(elf, rela, 5, rs[5] - 7), "error\tis not a whole number of 24-byte relocations"),
        ]
    pci = elf.symbol_offset(lambda s: s[0] != 0 and s[3] != 0 and strname(elf, strtab, s[0]).startswith("__mod_pci__"))
    if pci:
        off, _, s = pci
        out += [("pci-table-ragged", patch(img, off + 16, "<Q", s[5] - 4), "error\tis not a whole number of struct pci_device_id"),
                ("pci-table-outside-section", patch(img, off + 8, "<Q", 1 << 40), "error\tlies outside its section's data"),
                ("pci-table-size-wraps", patch(img, off + 16, "<Q", (1 << 64) - 8), "error\tlies outside its section's data")]
    modinfo = elf.named(".modinfo")
    if modinfo is not None:
        mi = elf.sections[modinfo]
        out.append(("modinfo-unterminated", img[:mi[4]] + b"A" * mi[5] + img[mi[4] + mi[5]:], "ok"))
    return out


def strname(elf, strtab, offset):
    sh = elf.sections[strtab]
    raw = elf.image[sh[4] + offset:sh[4] + sh[5]]
    return raw[:raw.find(b"\0")].decode(errors="replace")


def write_atomically(path, data):
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def main(argv):
    if len(argv) == 3 and argv[1] == "--seed":
        source, out_dir = build_seed(), argv[2]
        prefix = "seed"
    elif len(argv) == 4 and argv[1] == "--from":
        with open(argv[2], "rb") as f:
            source = f.read()
        out_dir = argv[3]
        prefix = os.path.basename(argv[2]).removesuffix(".ko")
    else:
        sys.stderr.write(__doc__)
        return 2
    try:
        elf = Elf(source)
    except (struct.error, ValueError, IndexError) as e:
        sys.stderr.write(f"make_damaged_modules.py: {argv[-2]}: not an ELF64 module this script can take apart: {e}\n")
        return 1
    os.makedirs(out_dir, exist_ok=True)
    lines = [f"{prefix}.ko\tok"]
    write_atomically(os.path.join(out_dir, f"{prefix}.ko"), elf.image)
    for name, data, expect in variants(elf):
        file = f"{prefix}-{name}.ko"
        write_atomically(os.path.join(out_dir, file), data)
        lines.append(f"{file}\t{expect}")
    write_atomically(os.path.join(out_dir, "expect.tsv"), ("\n".join(lines) + "\n").encode())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
