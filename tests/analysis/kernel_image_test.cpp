// Kernel images (kernel_image.h) built in memory: a tiny vmlinux ELF (ET_EXEC, section headers, no
// symbols) with __ksymtab, .pci_fixup and a PCI fixup hook, plain or inside a bzImage with an xz
// payload. The hook is analysed as an entry point of a driver's graph (the quirk_e100_interrupt shape).
#include <elf.h>
#include <gtest/gtest.h>
#include <lzma.h>

#include <algorithm>
#include <cstring>
#include <set>
#include <string>
#include <vector>

#include "ioreq_filter/analysis/disassembly.h"
#include "ioreq_filter/analysis/elf_module.h"
#include "ioreq_filter/analysis/io_analysis.h"
#include "ioreq_filter/analysis/kernel_image.h"
#include "ioreq_filter/analysis/policy_builder.h"

namespace iof::analysis {
namespace {

constexpr std::uint64_t kText = 0xffffffff81000000, kData = 0xffffffff82000000;

void put16(std::vector<std::uint8_t>& b, std::size_t at, std::uint16_t v) { std::memcpy(b.data() + at, &v, 2); }
void put32(std::vector<std::uint8_t>& b, std::size_t at, std::uint32_t v) { std::memcpy(b.data() + at, &v, 4); }

struct FakeSection {
  std::string name;
  std::uint32_t type = SHT_PROGBITS;
  std::uint64_t flags = SHF_ALLOC;
  std::uint64_t address = 0;
  std::vector<std::uint8_t> bytes;
};

// ELF64 x86-64: header, section bytes, .shstrtab, section headers.
std::vector<std::uint8_t> elfImage(const std::vector<FakeSection>& sections, std::uint16_t type = ET_EXEC) {
  std::vector<std::uint8_t> out(sizeof(Elf64_Ehdr));
  std::string names(1, '\0');
  std::vector<Elf64_Shdr> headers(1);
  auto add = [&](const std::string& name, std::uint32_t t, std::uint64_t flags, std::uint64_t addr, const std::vector<std::uint8_t>& bytes) {
    Elf64_Shdr h{};
    h.sh_name = std::uint32_t(names.size());
    names += name + '\0';
    h.sh_type = t;
    h.sh_flags = flags;
    h.sh_addr = addr;
    h.sh_offset = out.size();
    h.sh_size = bytes.size();
    h.sh_addralign = 1;
    out.insert(out.end(), bytes.begin(), bytes.end());
    headers.push_back(h);
  };
  for (const auto& s : sections) add(s.name, s.type, s.flags, s.address, s.bytes);
  const std::uint32_t shstrndx = std::uint32_t(headers.size());
  std::vector<std::uint8_t> name_bytes;
  add(".shstrtab", SHT_STRTAB, 0, 0, name_bytes);  // placeholder, contents below
  headers.back().sh_offset = out.size();
  names += std::string(".shstrtab") + '\0';
  headers.back().sh_size = names.size();
  out.insert(out.end(), names.begin(), names.end());
  while (out.size() % 8) out.push_back(0);
  const std::uint64_t shoff = out.size();
  for (const auto& h : headers) {
    const auto* p = reinterpret_cast<const std::uint8_t*>(&h);
    out.insert(out.end(), p, p + sizeof h);
  }
  Elf64_Ehdr eh{};
  std::memcpy(eh.e_ident, ELFMAG, SELFMAG);
  eh.e_ident[EI_CLASS] = ELFCLASS64;
  eh.e_ident[EI_DATA] = ELFDATA2LSB;
  eh.e_ident[EI_VERSION] = EV_CURRENT;
  eh.e_type = type;
  eh.e_machine = EM_X86_64;
  eh.e_version = EV_CURRENT;
  eh.e_ehsize = sizeof(Elf64_Ehdr);
  eh.e_shentsize = sizeof(Elf64_Shdr);
  eh.e_shnum = std::uint16_t(headers.size());
  eh.e_shstrndx = std::uint16_t(shstrndx);
  eh.e_shoff = shoff;
  std::memcpy(out.data(), &eh, sizeof eh);
  return out;
}

// The hook (quirk_e100_interrupt's shape, assembled with GNU as): ioremap(dev->resource[0].start, 8),
// read SCB cmd_hi (base + 3); if it is 0, a cold fragment far from the body writes 1 there and jumps back.
const std::vector<std::uint8_t> kHookBody = {
    0xe8, 0xfb, 0x01, 0x00, 0x00,              // 0x00 call __fentry__ (0x200)
    0x55,                                      // 0x05 push %rbp
    0x53,                                      // 0x06 push %rbx
    0x48, 0x89, 0xfb,                          // 0x07 mov %rdi,%rbx
    0x48, 0x8b, 0xbb, 0xc8, 0x03, 0x00, 0x00,  // 0x0a mov 0x3c8(%rbx),%rdi   dev->resource[0].start
    0x48, 0x85, 0xff,                          // 0x11 test %rdi,%rdi
    0x74, 0x26,                                // 0x14 je 0x3c
    0xbe, 0x08, 0x00, 0x00, 0x00,              // 0x16 mov $0x8,%esi
    0xe8, 0xf0, 0x01, 0x00, 0x00,              // 0x1b call ioremap (0x210)
    0x48, 0x85, 0xc0,                          // 0x20 test %rax,%rax
    0x74, 0x17,                                // 0x23 je 0x3c
    0x48, 0x8d, 0x68, 0x03,                    // 0x25 lea 0x3(%rax),%rbp
    0x8a, 0x50, 0x03,                          // 0x29 mov 0x3(%rax),%dl          read SCB cmd_hi
    0x84, 0xd2,                                // 0x2c test %dl,%dl
    0x0f, 0x84, 0xcc, 0x00, 0x00, 0x00,        // 0x2e je 0x100 (cold)
    0x48, 0x89, 0xc7,                          // 0x34 back: mov %rax,%rdi
    0xe8, 0xe4, 0x01, 0x00, 0x00,              // 0x37 call iounmap (0x220)
    0x5b,                                      // 0x3c out: pop %rbx
    0x5d,                                      // 0x3d pop %rbp
    0xe9, 0xed, 0x01, 0x00, 0x00,              // 0x3e jmp __x86_return_thunk (0x230)
};
const std::vector<std::uint8_t> kHookCold = {
    0x48, 0x89, 0x04, 0x24,        // 0x100 mov %rax,(%rsp)
    0xba, 0x01, 0x00, 0x00, 0x00,  // 0x104 mov $0x1,%edx
    0x88, 0x55, 0x00,              // 0x109 mov %dl,0x0(%rbp)        write SCB cmd_hi = 1
    0x48, 0x8b, 0x04, 0x24,        // 0x10c mov (%rsp),%rax
    0xe9, 0x1f, 0xff, 0xff, 0xff,  // 0x110 jmp 0x34 (back)
};

struct FakeKernel {
  std::vector<std::uint8_t> text = std::vector<std::uint8_t>(0x260, 0xcc);
  std::vector<std::pair<std::uint64_t, std::string>> exports = {{kText + 0x200, "__fentry__"},
                                                                {kText + 0x210, "ioremap"},
                                                                {kText + 0x220, "iounmap"},
                                                                {kText + 0x230, "__x86_return_thunk"},
                                                                {kText + 0x240, "pci_iomap"},
                                                                {kText + 0x250, "iowrite8"}};
  struct Fixup {
    std::uint16_t vendor, device;
    std::uint32_t class_code, shift;
    std::uint64_t hook;
  };
  std::vector<Fixup> fixups = {{0x8086, 0xffff, 0x200, 8, kText}};
  bool with_fixups = true;

  FakeKernel() {
    std::copy(kHookBody.begin(), kHookBody.end(), text.begin());
    std::copy(kHookCold.begin(), kHookCold.end(), text.begin() + 0x100);
    for (std::size_t stub = 0x200; stub < 0x260; stub += 0x10) text[stub] = 0xc3;  // ret
  }
  std::vector<std::uint8_t> image() const {
    // Layout in the data area: __ksymtab, then __ksymtab_strings, then .pci_fixup.
    const std::uint64_t ksymtab = kData, strings = kData + 0x1000, fixup_at = kData + 0x2000;
    std::vector<std::uint8_t> tab(exports.size() * 12), str, fix(fixups.size() * 16);
    for (std::size_t i = 0; i < exports.size(); ++i) {
      const std::uint64_t entry = ksymtab + i * 12;
      put32(tab, i * 12, std::uint32_t(exports[i].first - entry));
      put32(tab, i * 12 + 4, std::uint32_t(strings + str.size() - (entry + 4)));
      str.insert(str.end(), exports[i].second.begin(), exports[i].second.end());
      str.push_back(0);
    }
    for (std::size_t i = 0; i < fixups.size(); ++i) {
      const std::uint64_t entry = fixup_at + i * 16;
      put16(fix, i * 16, fixups[i].vendor);
      put16(fix, i * 16 + 2, fixups[i].device);
      put32(fix, i * 16 + 4, fixups[i].class_code);
      put32(fix, i * 16 + 8, fixups[i].shift);
      put32(fix, i * 16 + 12, std::uint32_t(fixups[i].hook - (entry + 12)));
    }
    std::vector<FakeSection> secs = {{".text", SHT_PROGBITS, SHF_ALLOC | SHF_EXECINSTR, kText, text},
                                     {"__ksymtab", SHT_PROGBITS, SHF_ALLOC, ksymtab, tab},
                                     {"__ksymtab_strings", SHT_PROGBITS, SHF_ALLOC, strings, str}};
    if (with_fixups) secs.push_back({".pci_fixup", SHT_PROGBITS, SHF_ALLOC, fixup_at, fix});
    return elfImage(secs);
  }
};

// A bzImage: setup header (boot protocol 2.15) in sector 0, one setup sector, then the payload.
std::vector<std::uint8_t> bzImage(const std::vector<std::uint8_t>& payload) {
  // Sized once: GCC 12 at -O3 misreads an insert() at the end of a 1024-byte vector as out of bounds.
  std::vector<std::uint8_t> b(1024 + payload.size(), 0);
  b[0x1f1] = 1;
  std::memcpy(b.data() + 0x202, "HdrS", 4);
  put16(b, 0x206, 0x20f);
  put32(b, 0x248, 0);
  put32(b, 0x24c, std::uint32_t(payload.size()));
  std::copy(payload.begin(), payload.end(), b.begin() + 1024);
  return b;
}

std::vector<std::uint8_t> xz(const std::vector<std::uint8_t>& data) {
  std::vector<std::uint8_t> out(data.size() + data.size() / 2 + 4096);
  std::size_t n = 0;
  EXPECT_EQ(lzma_easy_buffer_encode(6, LZMA_CHECK_CRC32, nullptr, data.data(), data.size(), out.data(), &n, out.size()), LZMA_OK);
  out.resize(n);
  for (int i = 0; i < 4; ++i) out.push_back(std::uint8_t(data.size() >> (8 * i)));  // the kernel's size trailer
  return out;
}

std::string errorOf(std::vector<std::uint8_t> bytes) {
  auto k = parseKernelImage(std::move(bytes), "vmlinuz-test");
  return k ? std::string("(parsed)") : k.error().message();
}

TEST(KernelImage, NamesExportsAndDecodesPciFixups) {
  auto k = parseKernelImage(FakeKernel().image(), "vmlinux-test");
  ASSERT_TRUE(k) << k.error().message();
  EXPECT_EQ(k->exports.size(), 6u);
  EXPECT_EQ(k->exports.at(kText + 0x210), "ioremap");
  ASSERT_EQ(k->pci_fixups.size(), 1u);
  EXPECT_EQ(k->pci_fixups[0].vendor, 0x8086);
  EXPECT_EQ(k->pci_fixups[0].device, 0xffff);
  EXPECT_EQ(k->pci_fixups[0].class_code, 0x200u);
  EXPECT_EQ(k->pci_fixups[0].class_shift, 8u);
  EXPECT_EQ(k->pci_fixups[0].hook, kText);
}

TEST(KernelImage, BzImageWithAnXzPayloadIsTheSameKernel) {
  auto k = parseKernelImage(bzImage(xz(FakeKernel().image())), "vmlinuz-test");
  ASSERT_TRUE(k) << k.error().message();
  EXPECT_EQ(k->exports.at(kText + 0x200), "__fentry__");
  ASSERT_EQ(k->pci_fixups.size(), 1u);
  EXPECT_NE(k->path.find("decompressed"), std::string::npos);
}

TEST(KernelImage, BadImagesSayWhatIsWrong) {
  EXPECT_NE(errorOf({'h', 'e', 'l', 'l', 'o'}).find("neither an ELF file nor a bzImage"), std::string::npos);
  auto payload = xz(FakeKernel().image());
  auto truncated = bzImage(payload);
  truncated.resize(truncated.size() - payload.size() / 2);
  EXPECT_NE(errorOf(truncated).find("runs past the end of the file"), std::string::npos) << errorOf(truncated);
  // The header agrees with the file, but the stream itself stops halfway.
  std::vector<std::uint8_t> half(payload.begin(), payload.begin() + std::ptrdiff_t(payload.size() / 2));
  EXPECT_NE(errorOf(bzImage(half)).find("xz stream ends early"), std::string::npos) << errorOf(bzImage(half));
  EXPECT_NE(errorOf(bzImage({0x1f, 0x8b, 0x08, 0, 0, 0})).find("compressed with gzip; only xz"), std::string::npos);
  auto damaged = payload;
  damaged[damaged.size() / 2] ^= 0xff;
  EXPECT_NE(errorOf(bzImage(damaged)).find("xz payload is damaged"), std::string::npos) << errorOf(bzImage(damaged));
  FakeKernel no_fixups;
  no_fixups.with_fixups = false;
  EXPECT_NE(errorOf(no_fixups.image()).find("no .pci_fixup section"), std::string::npos);
  FakeKernel outside;
  outside.fixups[0].hook = kData + 0x1000;
  EXPECT_NE(errorOf(outside.image()).find(".pci_fixup[0] at 0xffffffff82002000: hook 0xffffffff82001000 is outside the kernel's code (in __ksymtab_strings)"),
            std::string::npos)
      << errorOf(outside.image());
  auto relocatable = elfImage({{".text", SHT_PROGBITS, SHF_ALLOC | SHF_EXECINSTR, 0, {0xc3}}}, ET_REL);
  EXPECT_NE(errorOf(relocatable).find("is not ET_EXEC"), std::string::npos);
  auto ragged = FakeKernel().image();
  // __ksymtab is the second section: make its size 13 bytes in its header.
  Elf64_Ehdr eh;
  std::memcpy(&eh, ragged.data(), sizeof eh);
  Elf64_Shdr sh;
  std::memcpy(&sh, ragged.data() + eh.e_shoff + 2 * sizeof(Elf64_Shdr), sizeof sh);
  sh.sh_size = 13;
  std::memcpy(ragged.data() + eh.e_shoff + 2 * sizeof(Elf64_Shdr), &sh, sizeof sh);
  EXPECT_NE(errorOf(ragged).find("__ksymtab: 13 bytes is not a whole number of 12-byte kernel_symbol entries"), std::string::npos)
      << errorOf(ragged);
}

TEST(KernelImage, FixupsAreSelectedByIdAndByTheClassBitsTheDriverFixes) {
  FakeKernel fk;
  fk.fixups = {{0x8086, 0xffff, 0x200, 8, kText},        // Intel ethernet (class 0x02 00 xx)
               {0x8086, 0xffff, 0x604, 8, kText},        // Intel PCI bridges
               {0xffff, 0xffff, 0x2, 16, kText},         // any network controller
               {0x8086, 0x1229, 0xffffffff, 0, kText},   // this device, any class
               {0x8086, 0x100e, 0xffffffff, 0, kText},   // another device
               {0x10ec, 0xffff, 0xffffffff, 0, kText}};  // another vendor
  auto k = parseKernelImage(fk.image(), "vmlinux-test");
  ASSERT_TRUE(k) << k.error().message();
  auto count = [&](PciDeviceIdentity id) { return fixupsFor(*k, id).size(); };
  // e100's id table: class PCI_CLASS_NETWORK_ETHERNET << 8 under mask 0xffff00.
  EXPECT_EQ(count({0x8086, 0x1229, 0x020000, 0xffff00}), 3u);
  // Unknown class: every class-specific fixup of the vendor/device might run.
  EXPECT_EQ(count({0x8086, 0x1229, 0, 0}), 4u);
  EXPECT_EQ(count({0x8086, 0x100e, 0x020000, 0xffff00}), 3u);
}

TEST(KernelImage, PciFixupHookIsAnEntryPointWhoseColdFragmentWritesTheMappedBar) {
  auto k = parseKernelImage(FakeKernel().image(), "vmlinux-test");
  ASSERT_TRUE(k) << k.error().message();
  Module m = Module::synthetic("e100", {0xc3}, "driver_fn", {}, {});
  const auto fixups = fixupsFor(*k, {0x8086, 0x1229, 0x020000, 0xffff00});
  auto entries = linkKernelFixups(m, std::move(*k), fixups);
  ASSERT_TRUE(entries) << entries.error().message();
  ASSERT_EQ(entries->size(), 1u);
  EXPECT_EQ((*entries)[0].why, "vmlinux pci fixup 8086:ffff @0xffffffff81000000");
  auto dis = disassemble(m);
  ASSERT_TRUE(dis) << dis.error().message();
  const int hook = dis->functionAt((*entries)[0].entry);
  ASSERT_GE(hook, 0);
  const Function& f = dis->functions()[std::size_t(hook)];
  EXPECT_TRUE(f.recovered);
  ASSERT_EQ(f.ranges.size(), 2u) << "the body and the cold fragment";
  EXPECT_EQ(dis->functionCovering((*entries)[0].entry + 0x109), hook) << "the cold fragment belongs to the hook";
  AnalysisOptions options;
  for (const auto& e : *entries) options.pci_fixup_roots.emplace_back(e.entry, e.why);
  ModuleAnalysis a = analyzeModule(*dis, options);
  const Access* read = nullptr;
  const Access* write = nullptr;
  for (const Access& x : a.accesses) {
    if (x.where != Access::Where::BaseOffset || x.offset != 3 || x.size != 1) continue;
    (x.dir == Dir::Read ? read : write) = &x;
  }
  ASSERT_TRUE(read) << formatCoverage(a);
  ASSERT_TRUE(write) << formatCoverage(a);
  EXPECT_EQ(write->value, std::optional<std::uint64_t>(1));
  EXPECT_TRUE(write->position);
  EXPECT_EQ(a.bases[write->base].kind, DeviceBase::PciIoremapBar);
  EXPECT_EQ(a.bases[write->base].bar, 0);
  EXPECT_TRUE(a.bases[write->base].memory());
  EXPECT_EQ(a.where(write->insn), "vmlinux 0xffffffff81000109 (vmlinux pci fixup 8086:ffff @0xffffffff81000000)");
  // The hook is a root whose only write both begins and ends its sequence.
  const auto root = std::find_if(a.roots.begin(), a.roots.end(), [&](const RootSummary& r) { return int(r.function) == hook; });
  ASSERT_NE(root, a.roots.end());
  EXPECT_EQ(root->why, "vmlinux pci fixup 8086:ffff @0xffffffff81000000");
  const auto w = std::uint32_t(write - a.accesses.data());
  EXPECT_EQ(root->first, std::vector<std::uint32_t>{w});
  EXPECT_EQ(root->last, std::vector<std::uint32_t>{w});
}

// A second hook maps the same BAR the driver's way: pci_iomap(dev, 0, 0) after testing that BAR 0 is
// memory (IORESOURCE_MEM), then clears SCB cmd_hi with iowrite8. Two mappings of one BAR are one region, and the two
// hooks' writes to its register share one channel.
const std::vector<std::uint8_t> kIomapHook = {
    0xe8, 0x7b, 0x00, 0x00, 0x00,              // 0x180 call __fentry__ (0x200)
    0xf6, 0x87, 0xe1, 0x03, 0x00, 0x00, 0x02,  // 0x185 testb $0x2,0x3e1(%rdi)   pci_resource_flags(dev, 0) & IORESOURCE_MEM
    0x74, 0x14,                                // 0x18c je 0x1a2
    0x31, 0xf6,                                // 0x18e xor %esi,%esi
    0x31, 0xd2,                                // 0x190 xor %edx,%edx
    0xe8, 0xa9, 0x00, 0x00, 0x00,              // 0x192 call pci_iomap (0x240)
    0x48, 0x8d, 0x70, 0x03,                    // 0x197 lea 0x3(%rax),%rsi
    0x31, 0xff,                                // 0x19b xor %edi,%edi
    0xe8, 0xae, 0x00, 0x00, 0x00,              // 0x19d call iowrite8 (0x250)     iowrite8(0, cmd_hi)
    0xe9, 0x89, 0x00, 0x00, 0x00,              // 0x1a2 jmp __x86_return_thunk (0x230)
};

TEST(KernelImage, TwoMappingsOfOneBarAreOneRegionAndTheirWritesShareAChannel) {
  FakeKernel fk;
  std::copy(kIomapHook.begin(), kIomapHook.end(), fk.text.begin() + 0x180);
  fk.fixups = {{0x8086, 0xffff, 0x200, 8, kText}, {0x8086, 0x1229, 0xffffffff, 0, kText + 0x180}};
  auto k = parseKernelImage(fk.image(), "vmlinux-test");
  ASSERT_TRUE(k) << k.error().message();
  Module m = Module::synthetic("e100", {0xc3}, "driver_fn", {}, {});
  const auto fixups = fixupsFor(*k, {0x8086, 0x1229, 0x020000, 0xffff00});
  ASSERT_EQ(fixups.size(), 2u);
  auto entries = linkKernelFixups(m, std::move(*k), fixups);
  ASSERT_TRUE(entries) << entries.error().message();
  auto dis = disassemble(m);
  ASSERT_TRUE(dis) << dis.error().message();
  AnalysisOptions options;
  for (const auto& e : *entries) options.pci_fixup_roots.emplace_back(e.entry, e.why);
  ModuleAnalysis a = analyzeModule(*dis, options);
  ASSERT_EQ(a.bases.size(), 3u) << formatCoverage(a);  // pci_resource_start(0), ioremap(bar 0), pci_iomap(bar 0)
  PolicyOptions po;
  po.pci_vendor = 0x8086;
  po.pci_device = 0x1229;
  auto policy = buildPolicy(a, po);
  ASSERT_TRUE(policy) << policy.error().message();
  ASSERT_EQ(policy->regions.size(), 1u);
  EXPECT_EQ(policy->regions[0].space, RegionSpace::Mem);
  EXPECT_EQ(policy->regions[0].bar, 0);
  ASSERT_EQ(policy->graphs[0].channels.size(), 1u);
  const ChannelSpec& ch = policy->graphs[0].channels[0];
  std::set<std::uint64_t> values;
  for (std::uint32_t i = 0; i < ch.nodes.size(); ++i) {
    const NodeSpec& n = ch.nodes[i];
    if (n.dir != Dir::Write) continue;
    EXPECT_EQ(n.offset, 3u);
    values.insert(n.value.a);
    EXPECT_TRUE(std::count(ch.entries.begin(), ch.entries.end(), i)) << n.provenance.function;
    EXPECT_TRUE(std::count(ch.exits.begin(), ch.exits.end(), i)) << n.provenance.function;
  }
  EXPECT_EQ(values, (std::set<std::uint64_t>{0, 1})) << [&] { std::string s; for (const Access& x : a.accesses) s += a.describeAccess(x) + "\n"; return s + formatCoverage(a); }();
}

}  // namespace
}  // namespace iof::analysis
