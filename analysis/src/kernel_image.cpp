#include "ioreq_filter/analysis/kernel_image.h"

#include <elf.h>
#include <gelf.h>
#include <libelf.h>
#include <lzma.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <iterator>
#include <memory>

#include "text_util.h"

namespace iof::analysis {
namespace {

// The bzImage setup header (Documentation/x86/boot.rst): "HdrS" at 0x202, protocol version at 0x206,
// setup_sects at 0x1f1 (0 means 4), payload_offset/payload_length (protocol 2.08+) at 0x248/0x24c,
// relative to the protected-mode code, which starts after (setup_sects + 1) sectors of 512 bytes.
constexpr std::size_t kSetupSects = 0x1f1, kHeaderMagic = 0x202, kBootProtocol = 0x206, kPayloadOffset = 0x248,
                      kPayloadLength = 0x24c;
constexpr std::uint16_t kFirstProtocolWithPayload = 0x208;
// A decompressed kernel is tens of MB; more than this is a damaged or hostile stream.
constexpr std::uint64_t kMaxDecompressed = std::uint64_t(1) << 30;
constexpr std::size_t kKsymtabEntry = 12, kPciFixupEntry = 16;

std::uint16_t le16(const std::uint8_t* p) noexcept { return std::uint16_t(p[0] | p[1] << 8); }
std::uint32_t le32(const std::uint8_t* p) noexcept {
  return std::uint32_t(p[0]) | std::uint32_t(p[1]) << 8 | std::uint32_t(p[2]) << 16 | std::uint32_t(p[3]) << 24;
}
std::int32_t sle32(const std::uint8_t* p) noexcept { return std::int32_t(le32(p)); }

struct ElfCloser {
  void operator()(Elf* elf) const noexcept { elf_end(elf); }
};

std::string elfError() {
  const char* msg = elf_errmsg(-1);
  return msg ? msg : "unknown libelf error";
}

// The compressors the kernel's boot code can decompress, by the magic their streams start with.
std::string compressionOf(std::span<const std::uint8_t> p) {
  auto starts = [&](std::initializer_list<std::uint8_t> magic) {
    return p.size() >= magic.size() && std::equal(magic.begin(), magic.end(), p.begin());
  };
  if (starts({0xfd, '7', 'z', 'X', 'Z', 0x00})) return "xz";
  if (starts({0x1f, 0x8b})) return "gzip";
  if (starts({0x28, 0xb5, 0x2f, 0xfd})) return "zstd";
  if (starts({'B', 'Z', 'h'})) return "bzip2";
  if (starts({0x02, 0x21, 0x4c, 0x18})) return "lz4";
  if (starts({0x89, 'L', 'Z', 'O'})) return "lzo";
  if (starts({0x5d, 0x00, 0x00})) return "lzma";
  return "";
}

}  // namespace

bool KernelSection::executable() const noexcept { return type == SHT_PROGBITS && (flags & SHF_EXECINSTR) != 0; }

const KernelSection* KernelImage::sectionAt(std::uint64_t address) const noexcept {
  for (const KernelSection& s : sections)
    if ((s.flags & SHF_ALLOC) && s.contains(address)) return &s;
  return nullptr;
}

Result<std::vector<std::uint8_t>> decompressBzImage(std::span<const std::uint8_t> b, const std::string& path) {
  if (b.size() < kPayloadLength + 4 || std::memcmp(b.data() + kHeaderMagic, "HdrS", 4) != 0)
    return fail(path, "not a kernel image: neither an ELF file nor a bzImage (no \"HdrS\" setup header at 0x202)");
  const std::uint16_t protocol = le16(b.data() + kBootProtocol);
  if (protocol < kFirstProtocolWithPayload)
    return fail(path + ":0x206", "bzImage boot protocol " + hex(protocol) + " is older than 2.08: no payload_offset field");
  const std::uint64_t sects = b[kSetupSects] ? b[kSetupSects] : 4;
  const std::uint64_t start = (sects + 1) * 512 + le32(b.data() + kPayloadOffset), length = le32(b.data() + kPayloadLength);
  if (start > b.size() || length > b.size() - start)
    return fail(path + ":" + hex(kPayloadOffset), "the compressed payload (" + dec(length) + " bytes at file offset " + hex(start) +
                                                      ") runs past the end of the file (" + dec(b.size()) + " bytes): truncated image?");
  const auto payload = b.subspan(std::size_t(start), std::size_t(length));
  const std::string kind = compressionOf(payload);
  if (kind != "xz")
    return fail(path + ":" + hex(start), "the payload is " + (kind.empty() ? std::string("in an unknown format") : "compressed with " + kind) +
                                             "; only xz (CONFIG_KERNEL_XZ, Debian's choice) is supported");
  lzma_stream z = LZMA_STREAM_INIT;
  if (lzma_stream_decoder(&z, UINT64_MAX, 0) != LZMA_OK) return fail(path, "liblzma cannot start an xz decoder");
  std::unique_ptr<lzma_stream, void (*)(lzma_stream*)> guard(&z, lzma_end);
  // The kernel's build appends the decompressed size after the stream (size_append): a hint for the
  // buffer, so 66 MB are not reached by doubling; a wrong hint only costs reallocations.
  const std::uint64_t hinted = payload.size() >= 4 ? le32(payload.data() + payload.size() - 4) : 0;
  std::vector<std::uint8_t> out(std::size_t(std::clamp<std::uint64_t>(hinted + 1, 1 << 20, kMaxDecompressed)));
  z.next_in = payload.data();
  z.avail_in = payload.size();
  for (;;) {
    if (z.total_out == out.size()) {
      if (out.size() >= kMaxDecompressed) return fail(path + ":" + hex(start), "the xz payload decompresses to more than 1 GiB");
      out.resize(std::min<std::size_t>(out.size() * 2, kMaxDecompressed));
    }
    z.next_out = out.data() + z.total_out;
    z.avail_out = out.size() - z.total_out;
    // The payload ends with the decompressed size (4 bytes) after the stream: LZMA_FINISH at the end
    // of input would only matter for a stream that never ends.
    const lzma_ret r = lzma_code(&z, z.avail_in ? LZMA_RUN : LZMA_FINISH);
    if (r == LZMA_STREAM_END) break;
    if (r == LZMA_OK && (z.avail_in || z.avail_out == 0)) continue;
    if (r == LZMA_OK || r == LZMA_BUF_ERROR)
      return fail(path + ":" + hex(start), "the xz stream ends early after " + dec(z.total_in) + " of " + dec(length) +
                                               " payload bytes (" + dec(z.total_out) + " bytes out): truncated image?");
    return fail(path + ":" + hex(start + z.total_in), std::string("the xz payload is damaged (liblzma error ") + dec(unsigned(r)) + ")");
  }
  out.resize(z.total_out);
  return out;
}

Result<KernelImage> parseKernelImage(std::vector<std::uint8_t> bytes, std::string path) {
  KernelImage k;
  k.path = std::move(path);
  if (bytes.size() < EI_NIDENT || std::memcmp(bytes.data(), ELFMAG, SELFMAG) != 0) {
    auto elf = decompressBzImage(bytes, k.path);
    if (!elf) return std::unexpected(elf.error());
    bytes = std::move(*elf);
    k.path += " (decompressed vmlinux)";
    if (bytes.size() < EI_NIDENT || std::memcmp(bytes.data(), ELFMAG, SELFMAG) != 0)
      return fail(k.path, "the decompressed payload is not an ELF file");
  }
  k.elf_ = std::move(bytes);
  const auto& img = k.elf_;
  elf_version(EV_CURRENT);
  std::unique_ptr<Elf, ElfCloser> elf(elf_memory(reinterpret_cast<char*>(const_cast<std::uint8_t*>(img.data())), img.size()));
  if (!elf || elf_kind(elf.get()) != ELF_K_ELF) return fail(k.path, "not an ELF file: " + elfError());
  GElf_Ehdr eh;
  if (!gelf_getehdr(elf.get(), &eh)) return fail(k.path, "unreadable ELF header: " + elfError());
  if (eh.e_ident[EI_CLASS] != ELFCLASS64 || eh.e_machine != EM_X86_64)
    return fail(k.path, "not an x86-64 ELF64 kernel (class " + dec(eh.e_ident[EI_CLASS]) + ", machine " + dec(eh.e_machine) + ")");
  if (eh.e_type != ET_EXEC)
    return fail(k.path, "ELF type " + dec(eh.e_type) + " is not ET_EXEC: a kernel image is linked at fixed addresses (a .ko is not a kernel)");
  std::size_t shstrndx = 0;
  if (elf_getshdrstrndx(elf.get(), &shstrndx) != 0) return fail(k.path, "no section name table: " + elfError());
  for (Elf_Scn* scn = elf_nextscn(elf.get(), nullptr); scn; scn = elf_nextscn(elf.get(), scn)) {
    GElf_Shdr sh;
    if (!gelf_getshdr(scn, &sh)) return fail(k.path, "unreadable section header: " + elfError());
    const char* name = elf_strptr(elf.get(), shstrndx, sh.sh_name);
    KernelSection s;
    s.name = name ? name : "";
    s.address = sh.sh_addr;
    s.flags = sh.sh_flags;
    s.type = sh.sh_type;
    if (sh.sh_type != SHT_NOBITS) {
      if (sh.sh_offset > img.size() || sh.sh_size > img.size() - sh.sh_offset)
        return fail(k.path + ":" + s.name, "section data (" + dec(sh.sh_size) + " bytes at " + hex(sh.sh_offset) +
                                               ") runs past the end of the file: truncated image?");
      s.bytes = std::span<const std::uint8_t>(img.data() + sh.sh_offset, std::size_t(sh.sh_size));
    }
    k.sections.push_back(std::move(s));
  }
  auto find = [&](std::string_view n) -> const KernelSection* {
    for (const auto& s : k.sections)
      if (s.name == n) return &s;
    return nullptr;
  };
  // Exported names: struct kernel_symbol with PREL32 fields {value_offset, name_offset, namespace_offset}.
  auto stringAt = [&](std::uint64_t a) -> std::optional<std::string> {
    const KernelSection* s = k.sectionAt(a);
    if (!s || s->bytes.empty()) return std::nullopt;
    const auto* p = s->bytes.data() + (a - s->address);
    const auto* end = s->bytes.data() + s->bytes.size();
    const auto* nul = std::find(p, std::min(end, p + 256), std::uint8_t(0));
    if (nul == end || nul == p + 256) return std::nullopt;
    return std::string(p, nul);
  };
  bool any_ksymtab = false;
  for (std::string_view table : {"__ksymtab", "__ksymtab_gpl"}) {
    const KernelSection* s = find(table);
    if (!s) continue;
    any_ksymtab = true;
    if (s->bytes.size() % kKsymtabEntry)
      return fail(k.path + ":" + s->name, dec(s->bytes.size()) + " bytes is not a whole number of 12-byte kernel_symbol entries");
    for (std::size_t i = 0; i < s->bytes.size(); i += kKsymtabEntry) {
      const std::uint64_t at = s->address + i;
      const std::uint64_t value = at + std::uint64_t(std::int64_t(sle32(s->bytes.data() + i)));
      const std::uint64_t name_at = at + 4 + std::uint64_t(std::int64_t(sle32(s->bytes.data() + i + 4)));
      auto name = stringAt(name_at);
      if (!name || name->empty())
        return fail(k.path + ":" + s->name + "[" + dec(i / kKsymtabEntry) + "] at " + hex(at),
                    "the name offset points at " + hex(name_at) + ", which holds no NUL-terminated name in the image");
      k.exports.emplace(value, std::move(*name));
    }
  }
  if (!any_ksymtab)
    return fail(k.path, "no __ksymtab/__ksymtab_gpl section: the kernel's exported names (ioremap, pci_read_config_word...) are needed");
  const KernelSection* fixups = find(".pci_fixup");
  if (!fixups) return fail(k.path, "no .pci_fixup section: a kernel built without PCI (or not a Linux kernel) has no PCI quirks to analyse");
  if (fixups->bytes.size() % kPciFixupEntry)
    return fail(k.path + ":.pci_fixup", dec(fixups->bytes.size()) + " bytes is not a whole number of 16-byte pci_fixup entries");
  for (std::size_t i = 0; i < fixups->bytes.size(); i += kPciFixupEntry) {
    const std::uint8_t* e = fixups->bytes.data() + i;
    PciFixup f;
    f.entry = fixups->address + i;
    f.vendor = le16(e);
    f.device = le16(e + 2);
    f.class_code = le32(e + 4);
    f.class_shift = le32(e + 8);
    f.hook = f.entry + 12 + std::uint64_t(std::int64_t(sle32(e + 12)));
    const KernelSection* code = k.sectionAt(f.hook);
    if (!code || !code->executable())
      return fail(k.path + ":.pci_fixup[" + dec(i / kPciFixupEntry) + "] at " + hex(f.entry),
                  "hook " + hex(f.hook) + " is outside the kernel's code" + (code ? " (in " + code->name + ")" : ""));
    k.pci_fixups.push_back(f);
  }
  return k;
}

Result<KernelImage> loadKernelImage(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return fail(path, "cannot open the kernel image");
  std::vector<std::uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) return fail(path, "read error");
  return parseKernelImage(std::move(bytes), path);
}

std::vector<PciFixup> fixupsFor(const KernelImage& kernel, const PciDeviceIdentity& id) {
  constexpr std::uint32_t kAnyClass = 0xffffffffu;
  constexpr std::uint16_t kAnyId = 0xffff;
  std::vector<PciFixup> out;
  for (const PciFixup& f : kernel.pci_fixups) {
    if (f.vendor != kAnyId && f.vendor != id.vendor) continue;
    if (f.device != kAnyId && f.device != id.device) continue;
    if (f.class_code != kAnyClass) {
      // dev->class is 24 bits; class >> shift == f.class fixes the bits from `shift` up to f.class,
      // and the device's class must agree with them wherever the identity knows its bits.
      if (f.class_shift >= 24 || (std::uint64_t(f.class_code) << f.class_shift) >> 24) continue;
      const std::uint32_t fixed = (f.class_code << f.class_shift) & 0xffffffu;
      const std::uint32_t above = ~((1u << f.class_shift) - 1) & 0xffffffu;
      if ((fixed ^ id.class_code) & id.class_mask & above) continue;
    }
    out.push_back(f);
  }
  return out;
}

class KernelLinker {
 public:
  static Result<std::vector<KernelEntry>> link(Module& m, KernelImage kernel, std::span<const PciFixup> fixups) {
    constexpr const char* kOrigin = "vmlinux";
    m.section_origin.resize(m.sections.size());
    m.symbols_by_section_.resize(m.sections.size());
    m.relocations_.resize(m.sections.size());
    // Only code is appended: the kernel's code carries no relocations, so nothing in it refers to the
    // kernel's data as a section the analysis could follow.
    std::vector<std::pair<const KernelSection*, std::uint32_t>> appended;
    for (const KernelSection& ks : kernel.sections) {
      if (!ks.executable() || ks.bytes.empty()) continue;
      Section s;
      s.name = ks.name;
      s.index = std::uint32_t(m.sections.size());
      s.type = ks.type;
      s.flags = ks.flags;
      s.size = ks.bytes.size();
      s.bytes = ks.bytes;
      s.address = ks.address;
      appended.emplace_back(&ks, s.index);
      m.sections.push_back(std::move(s));
      m.section_origin.push_back(kOrigin);
    }
    m.symbols_by_section_.resize(m.sections.size());
    m.relocations_.resize(m.sections.size());
    auto codeOf = [&](std::uint64_t address) -> std::optional<CodeAddr> {
      for (auto [ks, index] : appended)
        if (ks->contains(address)) return codeAddr(index, address - ks->address);
      return std::nullopt;
    };
    // Exported functions become imports the code refers to by address, as a module's calls through
    // relocations name them; what a kernel API does is then the analyser's rule for that name.
    for (const auto& [address, name] : kernel.exports) {
      auto at = codeOf(address);
      if (!at) continue;
      Symbol s;
      s.name = name;
      s.type = STT_NOTYPE;
      s.bind = STB_GLOBAL;
      m.code_names.emplace(*at, std::uint32_t(m.symbols.size()));
      m.symbols.push_back(std::move(s));
    }
    std::vector<KernelEntry> entries;
    for (const PciFixup& f : fixups) {
      auto at = codeOf(f.hook);
      if (!at)
        return fail(kernel.path + ":.pci_fixup at " + hex(f.entry), "hook " + hex(f.hook) + " is outside the kernel's code");
      auto id = [](std::uint16_t v) {
        char b[8];
        std::snprintf(b, sizeof b, "%04x", unsigned(v));
        return std::string(b);
      };
      const std::string why = "vmlinux pci fixup " + id(f.vendor) + ":" + id(f.device) + " @" + hex(f.hook);
      if (std::any_of(entries.begin(), entries.end(), [&](const KernelEntry& e) { return e.entry == *at; })) continue;
      entries.push_back(KernelEntry{*at, why});
      m.recovered_entries.emplace_back(*at, why);
    }
    m.linked_images_.push_back(std::move(kernel.elf_));
    return entries;
  }
};

Result<std::vector<KernelEntry>> linkKernelFixups(Module& driver, KernelImage kernel, std::span<const PciFixup> fixups) {
  return KernelLinker::link(driver, std::move(kernel), fixups);
}

}  // namespace iof::analysis
