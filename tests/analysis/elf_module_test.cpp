// The module loader on hand-built ELF images: what it reads, and the errors damaged input gets.
#include <elf.h>
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "ioreq_filter/analysis/elf_module.h"

namespace iof::analysis {
namespace {

// A minimal x86-64 relocatable module: .text, .modinfo, .rodata (a 2-entry PCI id table + terminator),
// .symtab, .strtab, .shstrtab.
struct ElfImage {
  std::vector<std::uint8_t> bytes;
  std::size_t shoff = 0;
  static constexpr int kShnum = 7;

  template <typename T>
  void put(std::size_t at, const T& v) {
    if (bytes.size() < at + sizeof v) bytes.resize(at + sizeof v);
    std::memcpy(bytes.data() + at, &v, sizeof v);
  }
  std::size_t append(const void* data, std::size_t n) {
    std::size_t at = (bytes.size() + 7) & ~std::size_t(7);
    bytes.resize(at + n);
    std::memcpy(bytes.data() + at, data, n);
    return at;
  }

  static ElfImage make() {
    ElfImage e;
    e.bytes.resize(sizeof(Elf64_Ehdr));
    const std::uint8_t text[] = {0x31, 0xc0, 0xc3};  // xor eax,eax ; ret
    const char modinfo[] = "license=GPL\0name=testdrv\0alias=pci:v00008086d0000100Esv*sd*bc*sc*i*";
    std::uint32_t ids[24] = {0x8086, 0x100e, ~0u, ~0u, 0, 0, 0, 0, 0x10ec, 0x8139, ~0u, ~0u, 0, 0, 0, 0};
    const char strtab[] = "\0probe\0__mod_pci__testdrv_device_table";
    const char shstrtab[] = "\0.text\0.modinfo\0.rodata\0.symtab\0.strtab\0.shstrtab";
    Elf64_Sym syms[3] = {};
    syms[1].st_name = 1;
    syms[1].st_info = ELF64_ST_INFO(STB_GLOBAL, STT_FUNC);
    syms[1].st_shndx = 1;
    syms[1].st_size = sizeof text;
    syms[2].st_name = 7;
    syms[2].st_info = ELF64_ST_INFO(STB_GLOBAL, STT_OBJECT);
    syms[2].st_shndx = 3;
    syms[2].st_size = sizeof ids;
    const std::size_t o_text = e.append(text, sizeof text);
    const std::size_t o_modinfo = e.append(modinfo, sizeof modinfo);
    const std::size_t o_rodata = e.append(ids, sizeof ids);
    const std::size_t o_symtab = e.append(syms, sizeof syms);
    const std::size_t o_strtab = e.append(strtab, sizeof strtab);
    const std::size_t o_shstr = e.append(shstrtab, sizeof shstrtab);
    Elf64_Shdr sh[kShnum] = {};
    auto section = [&](int i, std::uint32_t name, std::uint32_t type, std::uint64_t flags, std::size_t off, std::size_t size) {
      sh[i].sh_name = name;
      sh[i].sh_type = type;
      sh[i].sh_flags = flags;
      sh[i].sh_offset = off;
      sh[i].sh_size = size;
    };
    section(1, 1, SHT_PROGBITS, SHF_ALLOC | SHF_EXECINSTR, o_text, sizeof text);
    section(2, 7, SHT_PROGBITS, SHF_ALLOC, o_modinfo, sizeof modinfo);
    section(3, 16, SHT_PROGBITS, SHF_ALLOC, o_rodata, sizeof ids);
    section(4, 24, SHT_SYMTAB, 0, o_symtab, sizeof syms);
    sh[4].sh_link = 5;
    sh[4].sh_info = 1;
    sh[4].sh_entsize = sizeof(Elf64_Sym);
    section(5, 32, SHT_STRTAB, 0, o_strtab, sizeof strtab);
    section(6, 40, SHT_STRTAB, 0, o_shstr, sizeof shstrtab);
    e.shoff = e.append(sh, sizeof sh);
    Elf64_Ehdr h = {};
    std::memcpy(h.e_ident, ELFMAG, SELFMAG);
    h.e_ident[EI_CLASS] = ELFCLASS64;
    h.e_ident[EI_DATA] = ELFDATA2LSB;
    h.e_ident[EI_VERSION] = EV_CURRENT;
    h.e_type = ET_REL;
    h.e_machine = EM_X86_64;
    h.e_version = EV_CURRENT;
    h.e_ehsize = sizeof(Elf64_Ehdr);
    h.e_shentsize = sizeof(Elf64_Shdr);
    h.e_shnum = kShnum;
    h.e_shstrndx = 6;
    h.e_shoff = e.shoff;
    e.put(0, h);
    return e;
  }
  Elf64_Shdr& shdr(int i) { return *reinterpret_cast<Elf64_Shdr*>(bytes.data() + shoff + i * sizeof(Elf64_Shdr)); }
  Elf64_Ehdr& ehdr() { return *reinterpret_cast<Elf64_Ehdr*>(bytes.data()); }
};

TEST(ModuleLoader, ReadsSectionsSymbolsModinfoAndPciTable) {
  auto m = parseModule(ElfImage::make().bytes, "testdrv.ko");
  ASSERT_TRUE(m) << m.error().message();
  EXPECT_EQ(m->name, "testdrv");
  ASSERT_NE(m->findSection(".text"), nullptr);
  EXPECT_TRUE(m->findSection(".text")->executable());
  ASSERT_NE(m->findSymbol("probe"), nullptr);
  EXPECT_EQ(m->findSymbol("probe")->size, 3u);
  EXPECT_EQ(m->modinfoValues("license").front(), "GPL");
  ASSERT_EQ(m->pci_ids.size(), 2u);  // the all-zero terminator ends the table
  EXPECT_EQ(m->pci_ids[0].vendor, 0x8086u);
  EXPECT_EQ(m->pci_ids[0].device, 0x100eu);
  EXPECT_EQ(m->pci_ids[1].device, 0x8139u);
  EXPECT_EQ(m->pci_ids[1].subvendor, kPciAnyId);
}

TEST(ModuleLoader, StripsAnAppendedModuleSignature) {
  auto img = ElfImage::make().bytes;
  const std::size_t elf_size = img.size();
  std::vector<std::uint8_t> sig(40, 0xab);  // PKCS#7 blob stand-in
  img.insert(img.end(), sig.begin(), sig.end());
  const std::uint8_t info[12] = {0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 40};  // id_type PKCS7, sig_len 40 (big-endian)
  img.insert(img.end(), info, info + 12);
  const std::string magic = "~Module signature appended~\n";
  img.insert(img.end(), magic.begin(), magic.end());
  EXPECT_EQ(moduleSignatureSize(img), img.size() - elf_size);
  auto m = parseModule(img, "signed.ko");
  ASSERT_TRUE(m) << m.error().message();
  EXPECT_EQ(m->pci_ids.size(), 2u);
}

TEST(ModuleLoader, RejectsWhatIsNotAnElfFile) {
  std::vector<std::uint8_t> text = {'h', 'e', 'l', 'l', 'o', ' ', 'w', 'o', 'r', 'l', 'd', '!', '!', '!', '!', '!'};
  auto m = parseModule(text, "hello.ko");
  ASSERT_FALSE(m);
  EXPECT_NE(m.error().message().find("hello.ko"), std::string::npos);
  EXPECT_NE(m.error().what.find("not an ELF file"), std::string::npos);
}

TEST(ModuleLoader, Rejects32BitAndOtherMachines) {
  auto e = ElfImage::make();
  e.bytes[EI_CLASS] = ELFCLASS32;
  auto m32 = parseModule(e.bytes, "m.ko");
  ASSERT_FALSE(m32);
  EXPECT_NE(m32.error().what.find("ELFCLASS64"), std::string::npos);

  auto a = ElfImage::make();
  a.ehdr().e_machine = EM_AARCH64;
  auto arm = parseModule(a.bytes, "m.ko");
  ASSERT_FALSE(arm);
  EXPECT_NE(arm.error().where.find("e_machine"), std::string::npos);
  EXPECT_NE(arm.error().what.find("not x86-64"), std::string::npos);

  auto x = ElfImage::make();
  x.ehdr().e_type = ET_EXEC;
  auto exec = parseModule(x.bytes, "m.ko");
  ASSERT_FALSE(exec);
  EXPECT_NE(exec.error().what.find("relocatable"), std::string::npos);
}

TEST(ModuleLoader, RejectsASectionPastTheEndOfTheFile) {
  auto e = ElfImage::make();
  e.shdr(2).sh_size = 0x100000;
  auto m = parseModule(e.bytes, "m.ko");
  ASSERT_FALSE(m);
  EXPECT_NE(m.error().where.find(".modinfo"), std::string::npos) << m.error().message();
  EXPECT_NE(m.error().what.find("past the end"), std::string::npos);
}

TEST(ModuleLoader, RejectsAStrippedModule) {
  auto e = ElfImage::make();
  e.shdr(4).sh_type = SHT_PROGBITS;  // what `strip` leaves: no SHT_SYMTAB
  auto m = parseModule(e.bytes, "m.ko");
  ASSERT_FALSE(m);
  EXPECT_NE(m.error().what.find("stripped"), std::string::npos);
}

TEST(ModuleLoader, RejectsAPciTableOfTheWrongSize) {
  auto e = ElfImage::make();
  reinterpret_cast<Elf64_Sym*>(e.bytes.data() + e.shdr(4).sh_offset)[2].st_size = 40;
  auto m = parseModule(e.bytes, "m.ko");
  ASSERT_FALSE(m);
  EXPECT_NE(m.error().where.find("__mod_pci__testdrv_device_table"), std::string::npos);
  EXPECT_NE(m.error().what.find("struct pci_device_id"), std::string::npos);
}

TEST(ModuleLoader, TruncatedImagesFailCleanly) {
  const auto full = ElfImage::make().bytes;
  for (std::size_t n = 0; n < full.size(); n += 7) {
    std::vector<std::uint8_t> cut(full.begin(), full.begin() + std::ptrdiff_t(n));
    auto m = parseModule(cut, "cut.ko");
    EXPECT_FALSE(m) << "a module cut to " << n << " bytes parsed";
  }
}

TEST(ModuleLoader, MissingFileNamesThePath) {
  auto m = loadModule("/nonexistent/dir/none.ko");
  ASSERT_FALSE(m);
  EXPECT_EQ(m.error().where, "/nonexistent/dir/none.ko");
}

}  // namespace
}  // namespace iof::analysis
