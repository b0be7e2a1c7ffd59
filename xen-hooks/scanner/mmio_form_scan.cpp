// mmio_form_scan: collects the instruction forms real guest code uses on device memory, as
// evidence for the MMIO context's allowlist in the Xen emulation gate (xen-hooks/patches).
//
// Inputs and how "accesses device memory" is approximated for each:
//   --modules DIR  Linux .ko files (ELF64 REL, x86-64). A register holds an __iomem base when
//                  it is the return value of a call to an ioremap/iomap-family function
//                  (resolved through .rela.text), a copy of such a register, an offset from it,
//                  or a load from a struct field offset that some ioremap result was stored to
//                  anywhere in the same module (offset 0 excluded: too many unrelated structs
//                  have a pointer there). Every instruction with a memory operand whose base is
//                  such a register counts. Field offsets are matched module-wide, not per struct
//                  type, so this over-approximates (more forms, never fewer).
//   --rom16 FILE   16-bit firmware (VGA BIOS, SeaBIOS's 16-bit code): a segment register loaded
//                  from a register holding 0xa000/0xa800/0xb000/0xb800 (the VGA windows) makes
//                  every memory operand addressed through that segment count, until the segment
//                  is reloaded or control leaves linearly (ret/jmp/invalid byte).
//   --flat32 FILE  32-bit flat firmware (SeaBIOS's 32-bit code in bios-256k.bin, raw):
//   --elf32 FILE   and hvmloader's executable sections: absolute addresses in the IOAPIC/HPET/
//                  LAPIC range (0xfec00000-0xfee00fff), or base registers loaded with a
//                  constant in that range or the VGA window (0xa0000-0xbffff), count.
// Raw images are swept linearly, so data decoded as code can add noise; the 16/32-bit state
// resets on every unconditional control transfer to limit that.
//
// Output: a gate_corpus file ("source | mode | bytes | - | - | disassembly"), one line per
// distinct encoding, plus per-source statistics on stdout.
//
// This is a deliberately small, self-contained scanner; it should move onto the project's
// analysis library (analysis/) once that exists.

#include <capstone/capstone.h>
#include <elf.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace fs = std::filesystem;

namespace {

struct Finding {
  std::string source;
  std::string text;
  unsigned long count = 0;
};

// Key: mode + encoded bytes. One line per distinct encoding keeps the corpus small while the
// count says how common a form is.
// Tier 0: direct evidence (firmware; module registers derived from an ioremap return value
// in the same function). Tier 1: module struct-field matches (weaker, see header).
std::array<std::map<std::string, Finding>, 2> g_findings;
std::array<std::map<std::string, unsigned long>, 2> g_per_source;

std::string hex_bytes(const uint8_t* b, size_t n) {
  std::string s;
  char buf[4];
  for (size_t i = 0; i < n; ++i) {
    std::snprintf(buf, sizeof buf, i ? " %02x" : "%02x", b[i]);
    s += buf;
  }
  return s;
}

void record(const std::string& source, const char* mode, const cs_insn* insn, int tier = 0) {
  std::string key = std::string(mode) + " | " + hex_bytes(insn->bytes, insn->size);
  auto& f = g_findings[tier][key];
  if (f.count++ == 0) {
    f.source = source;
    f.text = std::string(insn->mnemonic) + " " + insn->op_str;
  }
  ++g_per_source[tier][source];
}

bool is_access(unsigned id) {
  return id != X86_INS_LEA && id != X86_INS_NOP && id != X86_INS_PREFETCH && id != X86_INS_PREFETCHW &&
         id != X86_INS_PREFETCHNTA && id != X86_INS_PREFETCHT0 && id != X86_INS_PREFETCHT1 &&
         id != X86_INS_PREFETCHT2 && id != X86_INS_CLFLUSH && id != X86_INS_CLFLUSHOPT;
}

std::optional<std::vector<uint8_t>> read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) return std::nullopt;
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

// GPR family index 0..15 for any width of a general-purpose register, -1 otherwise.
int gpr_family(unsigned reg) {
  static const std::array<std::array<unsigned, 5>, 16> families = {{
      {X86_REG_RAX, X86_REG_EAX, X86_REG_AX, X86_REG_AL, X86_REG_AH},
      {X86_REG_RCX, X86_REG_ECX, X86_REG_CX, X86_REG_CL, X86_REG_CH},
      {X86_REG_RDX, X86_REG_EDX, X86_REG_DX, X86_REG_DL, X86_REG_DH},
      {X86_REG_RBX, X86_REG_EBX, X86_REG_BX, X86_REG_BL, X86_REG_BH},
      {X86_REG_RSP, X86_REG_ESP, X86_REG_SP, X86_REG_SPL, 0},
      {X86_REG_RBP, X86_REG_EBP, X86_REG_BP, X86_REG_BPL, 0},
      {X86_REG_RSI, X86_REG_ESI, X86_REG_SI, X86_REG_SIL, 0},
      {X86_REG_RDI, X86_REG_EDI, X86_REG_DI, X86_REG_DIL, 0},
      {X86_REG_R8, X86_REG_R8D, X86_REG_R8W, X86_REG_R8B, 0},
      {X86_REG_R9, X86_REG_R9D, X86_REG_R9W, X86_REG_R9B, 0},
      {X86_REG_R10, X86_REG_R10D, X86_REG_R10W, X86_REG_R10B, 0},
      {X86_REG_R11, X86_REG_R11D, X86_REG_R11W, X86_REG_R11B, 0},
      {X86_REG_R12, X86_REG_R12D, X86_REG_R12W, X86_REG_R12B, 0},
      {X86_REG_R13, X86_REG_R13D, X86_REG_R13W, X86_REG_R13B, 0},
      {X86_REG_R14, X86_REG_R14D, X86_REG_R14W, X86_REG_R14B, 0},
      {X86_REG_R15, X86_REG_R15D, X86_REG_R15W, X86_REG_R15B, 0},
  }};
  if (reg == X86_REG_INVALID) return -1;
  for (int i = 0; i < 16; ++i)
    for (unsigned r : families[i])
      if (r && r == reg) return i;
  return -1;
}

constexpr int kRax = 0, kRsp = 4;

bool is_unconditional_transfer(unsigned id) {
  return id == X86_INS_RET || id == X86_INS_RETF || id == X86_INS_JMP || id == X86_INS_LJMP ||
         id == X86_INS_IRET || id == X86_INS_IRETD || id == X86_INS_IRETQ || id == X86_INS_HLT ||
         id == X86_INS_UD2;
}

bool is_branch_or_call(unsigned id) {
  return id == X86_INS_CALL || id == X86_INS_LCALL || id == X86_INS_JMP || id == X86_INS_LJMP;
}

// Registers an instruction writes (explicit and implicit), as GPR families.
std::vector<int> written_families(csh h, const cs_insn* insn) {
  cs_regs rd, wr;
  uint8_t nrd = 0, nwr = 0;
  std::vector<int> out;
  if (cs_regs_access(h, insn, rd, &nrd, wr, &nwr) != CS_ERR_OK) return out;
  for (uint8_t i = 0; i < nwr; ++i)
    if (int f = gpr_family(wr[i]); f >= 0) out.push_back(f);
  return out;
}

const cs_x86_op* mem_operand(const cs_insn* insn) {
  const cs_x86& x = insn->detail->x86;
  for (uint8_t i = 0; i < x.op_count; ++i)
    if (x.operands[i].type == X86_OP_MEM) return &x.operands[i];
  return nullptr;
}

// ---------------------------------------------------------------- Linux modules (ELF64 REL)

const std::regex kIoremapName(
    "^(devm_|pcim_|pci_|of_|devm_of_|devm_platform_(get_and_)?)?(ioremap|iomap)[a-z_]*$|"
    "^acpi_os_map_iomem$|^devm_platform_ioremap_resource(_byname)?$");

struct ElfView {
  const std::vector<uint8_t>& data;
  const Elf64_Ehdr* eh() const { return reinterpret_cast<const Elf64_Ehdr*>(data.data()); }
  const Elf64_Shdr* sh(unsigned i) const {
    return reinterpret_cast<const Elf64_Shdr*>(data.data() + eh()->e_shoff) + i;
  }
  bool valid() const {
    if (data.size() < sizeof(Elf64_Ehdr) || std::memcmp(data.data(), ELFMAG, SELFMAG) ||
        data[EI_CLASS] != ELFCLASS64 || eh()->e_machine != EM_X86_64)
      return false;
    return eh()->e_shoff + uint64_t(eh()->e_shnum) * sizeof(Elf64_Shdr) <= data.size();
  }
  bool in_bounds(const Elf64_Shdr* s) const {
    return s->sh_type == SHT_NOBITS || s->sh_offset + s->sh_size <= data.size();
  }
};

struct ModuleStats {
  unsigned long modules = 0, skipped = 0, instructions = 0, ioremap_calls = 0;
};

void scan_module(csh h, const fs::path& path, const std::string& name, ModuleStats& stats) {
  auto bytes = read_file(path);
  if (!bytes) {
    ++stats.skipped;
    return;
  }
  ElfView elf{*bytes};
  if (!elf.valid()) {
    ++stats.skipped;
    return;
  }
  ++stats.modules;
  const unsigned nsec = elf.eh()->e_shnum;

  // Symbols: names for relocation targets, function starts per section.
  const Elf64_Shdr* symtab = nullptr;
  for (unsigned i = 0; i < nsec; ++i)
    if (elf.sh(i)->sh_type == SHT_SYMTAB && elf.in_bounds(elf.sh(i))) symtab = elf.sh(i);
  if (!symtab || symtab->sh_link >= nsec || !elf.in_bounds(elf.sh(symtab->sh_link))) {
    ++stats.skipped;
    return;
  }
  const auto* syms = reinterpret_cast<const Elf64_Sym*>(bytes->data() + symtab->sh_offset);
  const size_t nsyms = symtab->sh_size / sizeof(Elf64_Sym);
  const auto* strtab = reinterpret_cast<const char*>(bytes->data() + elf.sh(symtab->sh_link)->sh_offset);
  const size_t strsz = elf.sh(symtab->sh_link)->sh_size;
  auto sym_name = [&](size_t i) -> std::string {
    if (i >= nsyms || syms[i].st_name >= strsz) return {};
    return std::string(strtab + syms[i].st_name, strnlen(strtab + syms[i].st_name, strsz - syms[i].st_name));
  };

  struct Text {
    unsigned index;
    std::map<uint64_t, std::string> call_targets;  // offset of rel32 -> symbol
    std::set<uint64_t> func_starts;
  };
  std::vector<Text> texts;
  for (unsigned i = 0; i < nsec; ++i) {
    const Elf64_Shdr* s = elf.sh(i);
    if (s->sh_type == SHT_PROGBITS && (s->sh_flags & SHF_EXECINSTR) && elf.in_bounds(s) && s->sh_size)
      texts.push_back({i, {}, {}});
  }
  for (size_t k = 0; k < nsyms; ++k)
    if (ELF64_ST_TYPE(syms[k].st_info) == STT_FUNC)
      for (auto& t : texts)
        if (syms[k].st_shndx == t.index) t.func_starts.insert(syms[k].st_value);
  for (unsigned i = 0; i < nsec; ++i) {
    const Elf64_Shdr* s = elf.sh(i);
    if (s->sh_type != SHT_RELA || !elf.in_bounds(s)) continue;
    for (auto& t : texts) {
      if (s->sh_info != t.index) continue;
      const auto* rel = reinterpret_cast<const Elf64_Rela*>(bytes->data() + s->sh_offset);
      for (size_t r = 0; r < s->sh_size / sizeof(Elf64_Rela); ++r)
        t.call_targets[rel[r].r_offset] = sym_name(ELF64_R_SYM(rel[r].r_info));
    }
  }

  auto is_ioremap_call = [&](const Text& t, const cs_insn* insn) {
    if (insn->id != X86_INS_CALL || insn->size != 5) return false;
    auto it = t.call_targets.find(insn->address + 1);
    return it != t.call_targets.end() && std::regex_match(it->second, kIoremapName);
  };

  std::set<int64_t> iomem_fields;
  for (int pass = 0; pass < 2; ++pass) {
    for (const auto& t : texts) {
      const Elf64_Shdr* s = elf.sh(t.index);
      const uint8_t* code = bytes->data() + s->sh_offset;
      size_t size = s->sh_size;
      uint64_t addr = 0;
      cs_insn* insn = cs_malloc(h);
      std::array<uint8_t, 16> iomem{};  // 0 no, 1 direct, 2 via a struct field offset
      while (size) {
        if (t.func_starts.count(addr)) iomem.fill(0);
        const uint64_t at = addr;
        if (!cs_disasm_iter(h, &code, &size, &addr, insn)) {
          ++code, --size, addr = at + 1;
          iomem.fill(0);
          continue;
        }
        if (pass) ++stats.instructions;
        const cs_x86& x = insn->detail->x86;
        const cs_x86_op* mem = mem_operand(insn);
        const int base = mem ? gpr_family(mem->mem.base) : -1;

        // Evidence (pass 2): a memory access through an __iomem base.
        if (pass && mem && base >= 0 && iomem[base] && is_access(insn->id) && !is_branch_or_call(insn->id))
          record(name, "l64", insn, iomem[base] - 1);

        // Pass 1: where ioremap results get stored (struct field offsets).
        if (!pass && insn->id == X86_INS_MOV && x.op_count == 2 && x.operands[0].type == X86_OP_MEM &&
            x.operands[1].type == X86_OP_REG) {
          int src = gpr_family(x.operands[1].reg);
          int b = gpr_family(x.operands[0].mem.base);
          if (src >= 0 && iomem[src] == 1 && b >= 0 && b != kRsp && x.operands[0].mem.disp != 0)
            iomem_fields.insert(x.operands[0].mem.disp);
        }

        // Transfer function.
        if (insn->id == X86_INS_CALL) {
          bool ioremap = is_ioremap_call(t, insn);
          for (int f : {0, 1, 2, 6, 7, 8, 9, 10, 11}) iomem[f] = 0;
          if (ioremap) {
            iomem[kRax] = 1;
            if (pass) ++stats.ioremap_calls;
          }
          continue;
        }
        if (is_unconditional_transfer(insn->id)) {
          iomem.fill(0);
          continue;
        }
        uint8_t keep_dst = 0;
        int dst = x.op_count >= 1 && x.operands[0].type == X86_OP_REG ? gpr_family(x.operands[0].reg) : -1;
        if (dst >= 0 && x.op_count == 2) {
          const cs_x86_op& src = x.operands[1];
          if (insn->id == X86_INS_MOV && src.type == X86_OP_REG) {
            int sf = gpr_family(src.reg);
            keep_dst = sf >= 0 && src.size == 8 ? iomem[sf] : 0;
          } else if (insn->id == X86_INS_MOV && src.type == X86_OP_MEM) {
            int sb = gpr_family(src.mem.base);
            keep_dst = src.size == 8 && sb >= 0 && sb != kRsp && src.mem.base != X86_REG_RIP &&
                               src.mem.disp != 0 && iomem_fields.count(src.mem.disp)
                           ? 2
                           : 0;
          } else if (insn->id == X86_INS_LEA) {
            int sb = gpr_family(src.mem.base);
            keep_dst = sb >= 0 ? iomem[sb] : 0;
          } else if ((insn->id == X86_INS_ADD || insn->id == X86_INS_SUB) && src.type == X86_OP_IMM) {
            keep_dst = iomem[dst];
          }
        }
        for (int f : written_families(h, insn)) iomem[f] = 0;
        if (dst >= 0 && keep_dst) iomem[dst] = keep_dst;
      }
      cs_free(insn, 1);
    }
  }
}

// ---------------------------------------------------------------- firmware

bool is_vga_segment(int64_t v) { return v == 0xa000 || v == 0xa800 || v == 0xb000 || v == 0xb800; }
bool is_mmio_address(uint64_t v) {
  return (v >= 0xa0000 && v < 0xc0000) || (v >= 0xfec00000 && v < 0xfee01000);
}

void scan_rom16(csh h, const std::string& name, const std::vector<uint8_t>& image) {
  // Pass 0 learns which call targets receive a VGA segment in a register argument (SeaBIOS
  // passes it in %ax/%dx/%cx, regparm(3), to helpers like memset16_far/memmove in the same
  // segment); pass 1 records accesses with that knowledge.
  std::map<uint64_t, std::array<bool, 16>> entry_vga;
  cs_insn* insn = cs_malloc(h);
  for (int pass = 0; pass < 2; ++pass) {
    const uint8_t* code = image.data();
    size_t size = image.size();
    uint64_t addr = 0;
    std::array<bool, 16> vga_value{};
    std::map<unsigned, bool> vga_seg;  // X86_REG_ES/DS/FS/GS -> holds a VGA window
    auto reset = [&] {
      vga_value.fill(false);
      vga_seg.clear();
    };
    while (size) {
      const uint64_t at = addr;
      if (auto it = entry_vga.find(at); it != entry_vga.end())
        for (int f = 0; f < 16; ++f) vga_value[f] = vga_value[f] || it->second[f];
      if (!cs_disasm_iter(h, &code, &size, &addr, insn)) {
        ++code, --size, addr = at + 1;
        reset();
        continue;
      }
      const cs_x86& x = insn->detail->x86;
      if (const cs_x86_op* mem = mem_operand(insn);
          pass && mem && is_access(insn->id) && !is_branch_or_call(insn->id)) {
        unsigned seg = mem->mem.segment;
        if (seg == X86_REG_INVALID) {
          int b = gpr_family(mem->mem.base);
          seg = (b == 4 || b == 5) ? X86_REG_SS : X86_REG_DS;
        }
        // String stores and moves write through ES whatever the source segment is.
        switch (insn->id) {
          case X86_INS_STOSB: case X86_INS_STOSW: case X86_INS_STOSD:
          case X86_INS_MOVSB: case X86_INS_MOVSW: case X86_INS_MOVSD:
            if (vga_seg[X86_REG_ES]) seg = X86_REG_ES;
            break;
          default:
            break;
        }
        if (vga_seg[seg]) record(name, "r16", insn);
      }
      if (insn->id == X86_INS_CALL) {
        if (!pass && x.op_count == 1 && x.operands[0].type == X86_OP_IMM) {
          uint64_t target = (at & ~uint64_t(0xffff)) | (uint64_t(x.operands[0].imm) & 0xffff);
          auto& e = entry_vga[target];
          for (int f : {0, 1, 2}) e[f] = e[f] || vga_value[f];
        }
        for (int f : {0, 1, 2}) vga_value[f] = false;  // caller-saved under regparm
        continue;
      }
      if (is_unconditional_transfer(insn->id)) {
        reset();
        continue;
      }
      if (insn->id == X86_INS_MOV && x.op_count == 2 && x.operands[0].type == X86_OP_REG) {
        unsigned d = x.operands[0].reg;
        int sf = x.operands[1].type == X86_OP_REG ? gpr_family(x.operands[1].reg) : -1;
        if (d == X86_REG_ES || d == X86_REG_DS || d == X86_REG_FS || d == X86_REG_GS) {
          vga_seg[d] = sf >= 0 && vga_value[sf];
          continue;
        }
        int df = gpr_family(d);
        if (df >= 0 && x.operands[1].type == X86_OP_IMM) {
          // A segment load takes the low 16 bits (gcc -m16 often sets %edi = 0xffffa000).
          vga_value[df] = is_vga_segment(x.operands[1].imm & 0xffff);
          continue;
        }
        if (df >= 0 && sf >= 0) {
          vga_value[df] = vga_value[sf];
          continue;
        }
      }
      cs_regs rd, wr;
      uint8_t nrd = 0, nwr = 0;
      if (cs_regs_access(h, insn, rd, &nrd, wr, &nwr) == CS_ERR_OK)
        for (uint8_t i = 0; i < nwr; ++i) {
          if (wr[i] == X86_REG_ES || wr[i] == X86_REG_DS || wr[i] == X86_REG_FS || wr[i] == X86_REG_GS)
            vga_seg[wr[i]] = false;
          if (int f = gpr_family(wr[i]); f >= 0) vga_value[f] = false;
        }
    }
  }
  cs_free(insn, 1);
}

void scan_flat32(csh h, const std::string& name, const uint8_t* code, size_t size) {
  uint64_t addr = 0;
  cs_insn* insn = cs_malloc(h);
  std::array<bool, 16> mmio_reg{};
  while (size) {
    const uint64_t at = addr;
    if (!cs_disasm_iter(h, &code, &size, &addr, insn)) {
      ++code, --size, addr = at + 1;
      mmio_reg.fill(false);
      continue;
    }
    const cs_x86& x = insn->detail->x86;
    if (const cs_x86_op* mem = mem_operand(insn); mem && is_access(insn->id) && !is_branch_or_call(insn->id)) {
      int b = gpr_family(mem->mem.base);
      // Absolute VGA-window operands are not trusted: text such as "%d)\n" decodes as
      // "and [0xa2964], ah" in a linear sweep. Only the APIC/HPET range counts there.
      bool absolute = mem->mem.base == X86_REG_INVALID && mem->mem.index == X86_REG_INVALID &&
                      uint32_t(mem->mem.disp) >= 0xfec00000 && is_mmio_address(uint32_t(mem->mem.disp));
      if (absolute || (b >= 0 && mmio_reg[b])) record(name, "p32", insn);
    }
    if (insn->id == X86_INS_CALL || is_unconditional_transfer(insn->id)) {
      mmio_reg.fill(false);
      continue;
    }
    int dst = x.op_count == 2 && x.operands[0].type == X86_OP_REG ? gpr_family(x.operands[0].reg) : -1;
    bool set = dst >= 0 && insn->id == X86_INS_MOV && x.operands[1].type == X86_OP_IMM &&
               is_mmio_address(uint32_t(x.operands[1].imm));
    for (int f : written_families(h, insn)) mmio_reg[f] = false;
    if (set) mmio_reg[dst] = true;
  }
  cs_free(insn, 1);
}

bool scan_elf32(csh h, const std::string& name, const std::vector<uint8_t>& data) {
  if (data.size() < sizeof(Elf32_Ehdr) || std::memcmp(data.data(), ELFMAG, SELFMAG) || data[EI_CLASS] != ELFCLASS32)
    return false;
  const auto* eh = reinterpret_cast<const Elf32_Ehdr*>(data.data());
  if (eh->e_phoff + uint64_t(eh->e_phnum) * sizeof(Elf32_Phdr) > data.size()) return false;
  const auto* ph = reinterpret_cast<const Elf32_Phdr*>(data.data() + eh->e_phoff);
  bool any = false;
  for (unsigned i = 0; i < eh->e_phnum; ++i)
    if (ph[i].p_type == PT_LOAD && (ph[i].p_flags & PF_X) && ph[i].p_offset + uint64_t(ph[i].p_filesz) <= data.size()) {
      scan_flat32(h, name, data.data() + ph[i].p_offset, ph[i].p_filesz);
      any = true;
    }
  return any;
}

struct Options {
  std::vector<fs::path> module_dirs, rom16, flat32, elf32;
  fs::path out;
};

int usage() {
  std::cerr << "usage: mmio_form_scan --out CORPUS [--modules DIR] [--rom16 FILE] [--flat32 FILE] "
               "[--elf32 FILE] ...\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  Options opt;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (i + 1 >= argc) return usage();
    fs::path v = argv[++i];
    if (a == "--out") opt.out = v;
    else if (a == "--modules") opt.module_dirs.push_back(v);
    else if (a == "--rom16") opt.rom16.push_back(v);
    else if (a == "--flat32") opt.flat32.push_back(v);
    else if (a == "--elf32") opt.elf32.push_back(v);
    else return usage();
  }
  if (opt.out.empty()) return usage();

  csh h64, h32, h16;
  if (cs_open(CS_ARCH_X86, CS_MODE_64, &h64) != CS_ERR_OK || cs_open(CS_ARCH_X86, CS_MODE_32, &h32) != CS_ERR_OK ||
      cs_open(CS_ARCH_X86, CS_MODE_16, &h16) != CS_ERR_OK) {
    std::cerr << "error: capstone cs_open failed\n";
    return 1;
  }
  for (csh h : {h64, h32, h16}) cs_option(h, CS_OPT_DETAIL, CS_OPT_ON);

  ModuleStats ms;
  for (const auto& dir : opt.module_dirs) {
    if (!fs::is_directory(dir)) {
      std::cerr << "error: " << dir << ": not a directory\n";
      return 1;
    }
    std::vector<fs::path> kos;
    for (const auto& e : fs::recursive_directory_iterator(dir))
      if (e.is_regular_file() && e.path().extension() == ".ko") kos.push_back(e.path());
    std::sort(kos.begin(), kos.end());
    for (const auto& ko : kos) scan_module(h64, ko, ko.filename().string(), ms);
  }
  auto load = [](const fs::path& p) -> std::vector<uint8_t> {
    auto d = read_file(p);
    if (!d || d->empty()) {
      std::cerr << "error: " << p << ": cannot read\n";
      std::exit(1);
    }
    return *d;
  };
  for (const auto& p : opt.rom16) scan_rom16(h16, p.filename().string(), load(p));
  for (const auto& p : opt.flat32) {
    auto d = load(p);
    scan_flat32(h32, p.filename().string() + " (32-bit)", d.data(), d.size());
  }
  for (const auto& p : opt.elf32)
    if (!scan_elf32(h32, p.filename().string(), load(p))) {
      std::cerr << "error: " << p << ": not an ELF32 executable with a loadable code segment\n";
      return 1;
    }

  const char* headers[2] = {
      "# Generated by xen-hooks/scanner/mmio_form_scan: instruction forms real guest code uses on\n"
      "# device memory - direct evidence: firmware, and module accesses through a register derived\n"
      "# from an ioremap-family return value in the same function. One line per encoding.\n",
      "# Generated by xen-hooks/scanner/mmio_form_scan: module accesses through a pointer loaded from\n"
      "# a struct field offset some ioremap result was stored to in the same module (weak evidence:\n"
      "# offsets of unrelated structs collide). One line per encoding.\n"};
  for (int tier = 0; tier < 2; ++tier) {
    const fs::path out_path = tier ? fs::path(opt.out.string() + ".field") : opt.out;
    const fs::path tmp = out_path.string() + ".tmp";
    {
      std::ofstream out(tmp);
      out << headers[tier];
      for (const auto& [key, f] : g_findings[tier]) {
        auto sep = key.find(" | ");
        std::string text = f.text;
        std::replace(text.begin(), text.end(), '|', '/');
        out << f.source << " x" << f.count << " | " << key.substr(0, sep) << " | " << key.substr(sep + 3)
            << " | - | - | " << text << "\n";
      }
      if (!out) {
        std::cerr << "error: " << tmp << ": write failed\n";
        return 1;
      }
    }
    fs::rename(tmp, out_path);
  }

  unsigned long module_hits[2] = {}, firmware_hits = 0;
  for (int tier = 0; tier < 2; ++tier)
    for (const auto& [src, n] : g_per_source[tier]) (src.ends_with(".ko") ? module_hits[tier] : firmware_hits) += n;
  std::cout << "modules: " << ms.modules << " scanned (" << ms.skipped << " skipped), " << ms.instructions
            << " instructions, " << ms.ioremap_calls << " ioremap-family calls, " << module_hits[0]
            << " direct device-memory accesses, " << module_hits[1] << " via struct-field matches\n";
  std::cout << "firmware: " << firmware_hits << " device-memory accesses\n";
  for (const auto& [src, n] : g_per_source[0])
    if (!src.ends_with(".ko")) std::cout << "  " << src << ": " << n << "\n";
  std::cout << "distinct encodings: " << g_findings[0].size() << " direct, " << g_findings[1].size()
            << " field-matched\n";
  for (csh h : {h64, h32, h16}) cs_close(&h);
  return 0;
}
