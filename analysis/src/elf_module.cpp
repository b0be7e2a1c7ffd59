#include "ioreq_filter/analysis/elf_module.h"

#include <gelf.h>
#include <libelf.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include "text_util.h"
#include <iterator>
#include <memory>

namespace iof::analysis {
namespace {

constexpr std::string_view kSignatureMagic = "~Module signature appended~\n";
constexpr std::size_t kModuleSignatureInfoSize = 12;  // struct module_signature
constexpr std::size_t kPciIdSize = 32;                // struct pci_device_id on x86-64 before Linux 5.14
constexpr std::size_t kPciIdSizeLinux514 = 40;        // with override_only

struct ElfCloser {
  void operator()(Elf* elf) const noexcept { elf_end(elf); }
};

std::string elfError() {
  const char* msg = elf_errmsg(-1);
  return msg ? msg : "unknown libelf error";
}

std::uint32_t readLe32(const std::uint8_t* p) noexcept {
  return std::uint32_t(p[0]) | std::uint32_t(p[1]) << 8 | std::uint32_t(p[2]) << 16 | std::uint32_t(p[3]) << 24;
}

std::string baseName(const std::string& path) {
  auto slash = path.find_last_of('/');
  std::string file = slash == std::string::npos ? path : path.substr(slash + 1);
  if (file.size() > 3 && file.ends_with(".ko")) file.resize(file.size() - 3);
  return file;
}

}  // namespace

bool Section::executable() const noexcept { return type == SHT_PROGBITS && (flags & SHF_EXECINSTR) != 0; }

std::optional<std::size_t> moduleSignatureSize(std::span<const std::uint8_t> image) noexcept {
  const std::size_t trailer = kSignatureMagic.size() + kModuleSignatureInfoSize;
  if (image.size() < trailer) return std::nullopt;
  const auto* magic = image.data() + image.size() - kSignatureMagic.size();
  if (std::memcmp(magic, kSignatureMagic.data(), kSignatureMagic.size()) != 0) return std::nullopt;
  const auto* info = magic - kModuleSignatureInfoSize;
  // sig_len is big-endian in the last 4 bytes of struct module_signature.
  const std::size_t sig_len = std::size_t(info[8]) << 24 | std::size_t(info[9]) << 16 | std::size_t(info[10]) << 8 | info[11];
  if (sig_len > image.size() - trailer) return std::nullopt;
  return trailer + sig_len;
}

const std::vector<Relocation>& Module::relocations(std::uint32_t target) const noexcept {
  static const std::vector<Relocation> none;
  return target < relocations_.size() ? relocations_[target] : none;
}

const Relocation* Module::relocationIn(std::uint32_t section, std::uint64_t begin, std::uint64_t end) const noexcept {
  const auto& relocs = relocations(section);
  auto it = std::lower_bound(relocs.begin(), relocs.end(), begin,
                             [](const Relocation& r, std::uint64_t off) { return r.offset < off; });
  if (it == relocs.end() || it->offset >= end) return nullptr;
  return &*it;
}

const Relocation* Module::relocationAt(std::uint32_t section, std::uint64_t offset) const noexcept {
  const Relocation* r = relocationIn(section, offset, offset + 1);
  return r;
}

const Symbol* Module::symbolCovering(std::uint32_t section, std::uint64_t offset, std::uint8_t type) const noexcept {
  if (section >= symbols_by_section_.size()) return nullptr;
  const auto& list = symbols_by_section_[section];
  // Sorted by value; walk back from the last symbol starting at or before offset.
  auto it = std::upper_bound(list.begin(), list.end(), offset,
                             [this](std::uint64_t off, std::uint32_t s) { return off < symbols[s].value; });
  while (it != list.begin()) {
    --it;
    const Symbol& sym = symbols[*it];
    if (type != 0 && sym.type != type) continue;
    if (offset < sym.value + std::max<std::uint64_t>(sym.size, 1)) return &sym;
    if (type != 0) return nullptr;  // symbols of one type do not nest
  }
  return nullptr;
}

const Symbol* Module::findSymbol(std::string_view wanted) const noexcept {
  for (const auto& s : symbols)
    if (s.name == wanted) return &s;
  return nullptr;
}

const Section* Module::findSection(std::string_view wanted) const noexcept {
  for (const auto& s : sections)
    if (s.name == wanted) return &s;
  return nullptr;
}

std::vector<std::string_view> Module::modinfoValues(std::string_view key) const {
  std::vector<std::string_view> out;
  for (const auto& [k, v] : modinfo)
    if (k == key) out.push_back(v);
  return out;
}

std::string Module::describe(std::uint32_t section, std::uint64_t offset) const {
  std::string sec = section < sections.size() ? sections[section].name : (std::string("section#") + dec(section));
  const bool linked = section < section_origin.size() && !section_origin[section].empty();
  // Code linked at a fixed address (vmlinux) is named by that address, as objdump and System.map do.
  if (section < sections.size() && sections[section].address) return (linked ? section_origin[section] : name) + " " + hex(sections[section].address + offset);
  return (linked ? section_origin[section] : name) + ".ko " + sec + "+" + hex(offset);
}

Result<Module> parseModule(std::vector<std::uint8_t> image, std::string path) {
  Module m;
  m.path = std::move(path);
  m.name = baseName(m.path);
  if (auto sig = moduleSignatureSize(image)) image.resize(image.size() - *sig);
  m.image_ = std::move(image);
  if (m.image_.size() < EI_NIDENT || std::memcmp(m.image_.data(), ELFMAG, SELFMAG) != 0)
    return fail(m.path, "not an ELF file (no \\x7fELF magic)");
  if (m.image_[EI_CLASS] != ELFCLASS64)
    return fail(m.path, (std::string("ELF class ") + dec(m.image_[EI_CLASS]) + std::string(" is not ELFCLASS64: only x86-64 modules are analysed")));
  if (m.image_[EI_DATA] != ELFDATA2LSB) return fail(m.path, "ELF data encoding is not little-endian");

  // elf_version() sets libelf's global state: once, so that modules can be parsed on several threads.
  static const bool libelf_ready = elf_version(EV_CURRENT) != EV_NONE;
  if (!libelf_ready) return fail(m.path, "libelf initialisation failed: " + elfError());
  std::unique_ptr<Elf, ElfCloser> elf(elf_memory(reinterpret_cast<char*>(m.image_.data()), m.image_.size()));
  if (!elf) return fail(m.path, "libelf cannot open the image: " + elfError());
  GElf_Ehdr ehdr;
  if (!gelf_getehdr(elf.get(), &ehdr)) return fail(m.path + ":ELF header", "unreadable: " + elfError());
  if (ehdr.e_machine != EM_X86_64)
    return fail(m.path + ":e_machine", (std::string("machine ") + dec(ehdr.e_machine) + std::string(" is not x86-64 (62)")));
  if (ehdr.e_type != ET_REL)
    return fail(m.path + ":e_type", (std::string("type ") + dec(ehdr.e_type) + std::string(" is not a relocatable object (a .ko is ET_REL)")));
  std::size_t shnum = 0, shstrndx = 0;
  if (elf_getshdrnum(elf.get(), &shnum) != 0 || elf_getshdrstrndx(elf.get(), &shstrndx) != 0)
    return fail(m.path + ":section headers", "unreadable: " + elfError());
  if (shnum == 0) return fail(m.path, "no section headers");
  // libelf takes both as given; the kernel refuses such modules, and so do we.
  if (ehdr.e_shentsize != sizeof(Elf64_Shdr))
    return fail(m.path + ":e_shentsize", "section header size " + dec(ehdr.e_shentsize) + " is not " + dec(sizeof(Elf64_Shdr)) + " (Elf64_Shdr)");
  if (shstrndx >= shnum)
    return fail(m.path + ":e_shstrndx", "section name table index " + dec(shstrndx) + " out of range (" + dec(shnum) + " sections)");
  const std::uint64_t file_size = m.image_.size();

  m.sections.resize(shnum);
  std::uint32_t symtab_index = 0;
  for (std::size_t i = 0; i < shnum; ++i) {
    Elf_Scn* scn = elf_getscn(elf.get(), i);
    GElf_Shdr sh;
    if (!scn || !gelf_getshdr(scn, &sh))
      return fail((std::string(m.path) + std::string(":section ") + dec(i)), "unreadable header: " + elfError());
    Section& s = m.sections[i];
    s.index = std::uint32_t(i);
    s.type = sh.sh_type;
    s.flags = sh.sh_flags;
    s.size = sh.sh_size;
    s.link = sh.sh_link;
    s.info = sh.sh_info;
    const char* nm = elf_strptr(elf.get(), shstrndx, sh.sh_name);
    s.name = nm ? nm : (std::string("section#") + dec(i));
    if (sh.sh_type != SHT_NOBITS && sh.sh_type != SHT_NULL) {
      if (sh.sh_offset > file_size || sh.sh_size > file_size - sh.sh_offset)
        return fail((std::string(m.path) + std::string(":section ") + dec(i) + std::string(" (") + std::string(s.name) + std::string(")")),
                    (std::string("extends past the end of the file (offset ") + hex(sh.sh_offset) + std::string(" + size ") + hex(sh.sh_size) + std::string(" > ") + hex(file_size) + std::string(")")));
      s.bytes = std::span<const std::uint8_t>(m.image_.data() + sh.sh_offset, sh.sh_size);
    }
    if (sh.sh_type == SHT_SYMTAB) symtab_index = std::uint32_t(i);
  }
  if (symtab_index == 0)
    return fail(m.path, "no .symtab: the module is stripped, and the analyser needs its symbols");

  // Symbols.
  {
    const Section& st = m.sections[symtab_index];
    if (st.link >= shnum || m.sections[st.link].type != SHT_STRTAB)
      return fail(m.path + ":.symtab", (std::string("sh_link ") + dec(st.link) + std::string(" does not name a string table")));
    if (st.size % sizeof(Elf64_Sym) != 0)
      return fail(m.path + ":.symtab", "size " + hex(st.size) + " is not a whole number of " + dec(sizeof(Elf64_Sym)) + "-byte symbols");
    Elf_Data* data = elf_getdata(elf_getscn(elf.get(), symtab_index), nullptr);
    if (!data) return fail(m.path + ":.symtab", "unreadable: " + elfError());
    const std::size_t count = st.size / sizeof(Elf64_Sym);
    m.symbols.resize(count);
    for (std::size_t i = 0; i < count; ++i) {
      GElf_Sym sym;
      if (!gelf_getsym(data, int(i), &sym))
        return fail((std::string(m.path) + std::string(":.symtab[") + dec(i) + std::string("]")), "unreadable: " + elfError());
      Symbol& s = m.symbols[i];
      const char* nm = elf_strptr(elf.get(), st.link, sym.st_name);
      if (!nm && sym.st_name != 0)
        return fail((std::string(m.path) + std::string(":.symtab[") + dec(i) + std::string("]")), (std::string("name offset ") + hex(sym.st_name) + std::string(" outside the string table")));
      s.name = nm ? nm : "";
      s.value = sym.st_value;
      s.size = sym.st_size;
      s.section = sym.st_shndx;
      s.type = GELF_ST_TYPE(sym.st_info);
      s.bind = GELF_ST_BIND(sym.st_info);
      if (s.type == STT_SECTION && s.name.empty() && s.section < shnum) s.name = m.sections[s.section].name;
      if (s.defined() && s.section >= shnum)
        return fail((std::string(m.path) + std::string(":.symtab[") + dec(i) + std::string("] (") + std::string(s.name) + std::string(")")), (std::string("section index ") + dec(s.section) + std::string(" out of range")));
    }
  }
  m.symbols_by_section_.resize(shnum);
  for (std::uint32_t i = 0; i < m.symbols.size(); ++i) {
    const Symbol& s = m.symbols[i];
    if (s.defined() && (s.type == STT_FUNC || s.type == STT_OBJECT)) m.symbols_by_section_[s.section].push_back(i);
  }
  for (auto& list : m.symbols_by_section_)
    std::stable_sort(list.begin(), list.end(), [&](std::uint32_t a, std::uint32_t b) { return m.symbols[a].value < m.symbols[b].value; });

  // Relocations, grouped by the section they patch.
  m.relocations_.resize(shnum);
  for (std::size_t i = 0; i < shnum; ++i) {
    const Section& rs = m.sections[i];
    if (rs.type == SHT_REL)
      return fail((std::string(m.path) + std::string(":section ") + dec(i) + std::string(" (") + std::string(rs.name) + std::string(")")), "SHT_REL relocations (x86-64 modules use SHT_RELA)");
    if (rs.type != SHT_RELA) continue;
    if (rs.info >= shnum || rs.info == 0)
      return fail((std::string(m.path) + std::string(":section ") + dec(i) + std::string(" (") + std::string(rs.name) + std::string(")")), (std::string("sh_info ") + dec(rs.info) + std::string(" names no section")));
    if (rs.link != symtab_index)
      return fail((std::string(m.path) + std::string(":section ") + dec(i) + std::string(" (") + std::string(rs.name) + std::string(")")), (std::string("sh_link ") + dec(rs.link) + std::string(" is not the symbol table")));
    if (rs.size % sizeof(Elf64_Rela) != 0)
      return fail(m.path + ":section " + dec(i) + " (" + rs.name + ")",
                  "size " + hex(rs.size) + " is not a whole number of " + dec(sizeof(Elf64_Rela)) + "-byte relocations");
    Elf_Data* data = elf_getdata(elf_getscn(elf.get(), i), nullptr);
    if (!data) return fail((std::string(m.path) + std::string(":section ") + dec(i) + std::string(" (") + std::string(rs.name) + std::string(")")), "unreadable: " + elfError());
    const std::size_t count = rs.size / sizeof(Elf64_Rela);
    auto& out = m.relocations_[rs.info];
    out.reserve(out.size() + count);
    const std::uint64_t target_size = m.sections[rs.info].size;
    for (std::size_t r = 0; r < count; ++r) {
      GElf_Rela rela;
      if (!gelf_getrela(data, int(r), &rela))
        return fail((std::string(m.path) + std::string(":") + std::string(rs.name) + std::string("[") + dec(r) + std::string("]")), "unreadable: " + elfError());
      const std::uint32_t sym = std::uint32_t(GELF_R_SYM(rela.r_info));
      if (sym >= m.symbols.size())
        return fail((std::string(m.path) + std::string(":") + std::string(rs.name) + std::string("[") + dec(r) + std::string("]")), (std::string("symbol index ") + dec(sym) + std::string(" out of range (") + dec(m.symbols.size()) + std::string(" symbols)")));
      if (rela.r_offset >= target_size)
        return fail((std::string(m.path) + std::string(":") + std::string(rs.name) + std::string("[") + dec(r) + std::string("]")),
                    (std::string("offset ") + hex(rela.r_offset) + std::string(" outside ") + std::string(m.sections[rs.info].name) + std::string(" (size ") + hex(target_size) + std::string(")")));
      out.push_back(Relocation{rela.r_offset, std::uint32_t(GELF_R_TYPE(rela.r_info)), sym, rela.r_addend});
    }
  }
  for (auto& relocs : m.relocations_)
    std::stable_sort(relocs.begin(), relocs.end(), [](const Relocation& a, const Relocation& b) { return a.offset < b.offset; });

  // .modinfo: NUL-separated key=value strings.
  if (const Section* mi = m.findSection(".modinfo")) {
    std::string_view text(reinterpret_cast<const char*>(mi->bytes.data()), mi->bytes.size());
    while (!text.empty()) {
      auto end = text.find('\0');
      std::string_view entry = text.substr(0, end);
      if (auto eq = entry.find('='); eq != std::string_view::npos)
        m.modinfo.emplace_back(std::string(entry.substr(0, eq)), std::string(entry.substr(eq + 1)));
      if (end == std::string_view::npos) break;
      text.remove_prefix(end + 1);
    }
  }
  for (const auto& [k, v] : m.modinfo)
    if (k == "name" && !v.empty()) m.name = v;

  // The PCI id table: MODULE_DEVICE_TABLE(pci, x) emits the object __mod_pci__x_device_table.
  for (const Symbol& s : m.symbols) {
    if (!s.name.starts_with("__mod_pci__") || !s.name.ends_with("_device_table") || !s.defined()) continue;
    m.pci_table_symbol = s.name;
    const Section& sec = m.sections[s.section];
    if (sec.type == SHT_NOBITS || s.value > sec.bytes.size() || s.size > sec.bytes.size() - s.value)
      return fail((std::string(m.path) + std::string(":") + std::string(s.name)), (std::string("table (") + hex(s.size) + std::string(" bytes at ") + std::string(sec.name) + std::string("+") + hex(s.value) + std::string(") lies outside its section's data")));
    // Linux 5.14 added `u32 override_only`, making the entry 40 bytes; older kernels use 32. The table
    // ends with an all-zero entry, which tells the two apart when the size fits both.
    auto zeroTail = [&](std::size_t stride) {
      if (s.size < stride || s.size % stride != 0) return false;
      const std::uint8_t* end = sec.bytes.data() + s.value + s.size;
      return std::all_of(end - stride, end, [](std::uint8_t b) { return b == 0; });
    };
    const std::size_t stride = zeroTail(kPciIdSizeLinux514) ? kPciIdSizeLinux514 : zeroTail(kPciIdSize) ? kPciIdSize : 0;
    if (stride == 0)
      return fail((std::string(m.path) + std::string(":") + std::string(s.name)),
                  (std::string("size ") + dec(s.size) + std::string(" is not a whole number of struct pci_device_id (32 or 40 bytes) ending in an empty entry")));
    for (std::uint64_t off = 0; off < s.size; off += stride) {
      const std::uint8_t* p = sec.bytes.data() + s.value + off;
      PciId id{readLe32(p), readLe32(p + 4), readLe32(p + 8), readLe32(p + 12), readLe32(p + 16), readLe32(p + 20),
               std::uint64_t(readLe32(p + 24)) | std::uint64_t(readLe32(p + 28)) << 32};
      if (id == PciId{}) break;  // the terminating empty entry
      m.pci_ids.push_back(id);
    }
    break;
  }
  return m;
}

Result<Module> loadModule(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return fail(path, std::string("cannot open: ") + std::strerror(errno));
  std::vector<std::uint8_t> image((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) return fail(path, std::string("read error: ") + std::strerror(errno));
  return parseModule(std::move(image), path);
}

}  // namespace iof::analysis

namespace iof::analysis {

Module Module::synthetic(std::string name, std::vector<std::uint8_t> text, std::string function_name,
                         std::vector<Symbol> extra, std::vector<Relocation> text_relocations,
                         std::uint64_t data_size, std::uint64_t bss_size, std::vector<Relocation> data_relocations) {
  Module m;
  m.path = name + ".ko";
  m.name = std::move(name);
  const std::size_t text_size = text.size();
  m.image_ = std::move(text);
  m.image_.resize(text_size + data_size, 0);
  m.sections.resize(4);
  m.sections[1] = Section{".text", 1, SHT_PROGBITS, SHF_ALLOC | SHF_EXECINSTR, text_size, 0, 0,
                          std::span<const std::uint8_t>(m.image_.data(), text_size)};
  m.sections[2] = Section{".data", 2, SHT_PROGBITS, SHF_ALLOC | SHF_WRITE, data_size, 0, 0,
                          std::span<const std::uint8_t>(m.image_.data() + text_size, data_size)};
  m.sections[3] = Section{".bss", 3, SHT_NOBITS, SHF_ALLOC | SHF_WRITE, bss_size, 0, 0, {}};
  m.symbols.push_back(Symbol{});
  m.symbols.push_back(Symbol{std::move(function_name), 0, text_size, kTextSection, STT_FUNC, STB_GLOBAL});
  for (auto& s : extra) m.symbols.push_back(std::move(s));
  m.symbols_by_section_.resize(4);
  for (std::uint32_t i = 0; i < m.symbols.size(); ++i)
    if (m.symbols[i].defined() && m.symbols[i].section < 4 && (m.symbols[i].type == STT_FUNC || m.symbols[i].type == STT_OBJECT))
      m.symbols_by_section_[m.symbols[i].section].push_back(i);
  for (auto& list : m.symbols_by_section_)
    std::stable_sort(list.begin(), list.end(), [&](std::uint32_t a, std::uint32_t b) { return m.symbols[a].value < m.symbols[b].value; });
  m.relocations_.resize(4);
  m.relocations_[1] = std::move(text_relocations);
  m.relocations_[2] = std::move(data_relocations);
  for (auto& relocs : m.relocations_)
    std::stable_sort(relocs.begin(), relocs.end(), [](const Relocation& a, const Relocation& b) { return a.offset < b.offset; });
  return m;
}

}  // namespace iof::analysis
