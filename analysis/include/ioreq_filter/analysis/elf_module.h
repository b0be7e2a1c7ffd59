// A Linux kernel module (.ko: ELF64 relocatable, x86-64) as the analyser sees it: sections,
// symbols, relocations by target section, .modinfo and the PCI id table. Loaded with libelf;
// everything is copied out so the module owns its bytes and no libelf handle outlives loading.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "ioreq_filter/core/error.h"

namespace iof::analysis {

// A code location: section index and offset within it, packed so it sorts and hashes cheaply.
using CodeAddr = std::uint64_t;
constexpr CodeAddr codeAddr(std::uint32_t section, std::uint64_t offset) noexcept {
  return (CodeAddr(section) << 40) | offset;
}
constexpr std::uint32_t sectionOf(CodeAddr a) noexcept { return std::uint32_t(a >> 40); }
constexpr std::uint64_t offsetOf(CodeAddr a) noexcept { return a & ((CodeAddr(1) << 40) - 1); }

struct Section {
  std::string name;
  std::uint32_t index = 0;
  std::uint32_t type = 0;    // SHT_*
  std::uint64_t flags = 0;   // SHF_*
  std::uint64_t size = 0;
  std::uint32_t link = 0, info = 0;
  std::span<const std::uint8_t> bytes;  // empty for SHT_NOBITS (.bss)
  // Where the section is linked, for code from an image linked at fixed addresses (a kernel's vmlinux,
  // see kernel_image.h); 0 for a module's relocatable sections.
  std::uint64_t address = 0;

  bool executable() const noexcept;
};

struct Symbol {
  std::string name;
  std::uint64_t value = 0;  // offset within its section
  std::uint64_t size = 0;
  std::uint32_t section = 0;  // SHN_UNDEF (0) for imports
  std::uint8_t type = 0;      // STT_*
  std::uint8_t bind = 0;      // STB_*

  bool defined() const noexcept { return section != 0 && section < 0xff00; }
};

struct Relocation {
  std::uint64_t offset = 0;  // within the target section
  std::uint32_t type = 0;    // R_X86_64_*
  std::uint32_t symbol = 0;  // index into Module::symbols
  std::int64_t addend = 0;
};

// struct pci_device_id (include/linux/mod_devicetable.h): 6 x u32 then kernel_ulong_t driver_data.
inline constexpr std::uint32_t kPciAnyId = 0xffffffffu;
struct PciId {
  std::uint32_t vendor = 0, device = 0, subvendor = 0, subdevice = 0, class_code = 0, class_mask = 0;
  std::uint64_t driver_data = 0;
  friend bool operator==(const PciId&, const PciId&) = default;
};

class Module {
 public:
  std::string path;     // for messages
  std::string name;     // .modinfo "name=" (falls back to the file name without .ko)
  std::vector<Section> sections;
  std::vector<Symbol> symbols;
  std::vector<std::pair<std::string, std::string>> modinfo;  // key=value in file order
  std::vector<PciId> pci_ids;                                // empty for non-PCI drivers
  std::string pci_table_symbol;                              // "__mod_pci__<x>_device_table"
  // After linkModules: per section index, the dependency it came from ("" = this module's own).
  std::vector<std::string> section_origin;
  // Code linked at fixed addresses has no relocations (a kernel image, linkKernelFixups): its direct
  // branches whose target is an exported function name that function through an import symbol
  // (index into `symbols`), as a module's relocation would.
  std::map<CodeAddr, std::uint32_t> code_names;
  // Functions that have no symbol (or no size): decoded by following control flow from the entry, cold
  // fragments included, with the direct callees that are not named followed the same way.
  std::vector<std::pair<CodeAddr, std::string>> recovered_entries;

  // Relocations that patch section `target`, sorted by offset.
  const std::vector<Relocation>& relocations(std::uint32_t target) const noexcept;
  // The relocation whose patched field starts at `offset` in `section`, if any.
  const Relocation* relocationAt(std::uint32_t section, std::uint64_t offset) const noexcept;
  // First relocation with offset in [begin, end).
  const Relocation* relocationIn(std::uint32_t section, std::uint64_t begin, std::uint64_t end) const noexcept;
  // Defined symbol of `type` (STT_FUNC/STT_OBJECT, 0 = any) covering section+offset.
  const Symbol* symbolCovering(std::uint32_t section, std::uint64_t offset, std::uint8_t type = 0) const noexcept;
  const Symbol* findSymbol(std::string_view name) const noexcept;
  const Section* findSection(std::string_view name) const noexcept;
  std::vector<std::string_view> modinfoValues(std::string_view key) const;
  // "floppy.ko .text+0x1804"-style location for messages and provenance.
  std::string describe(std::uint32_t section, std::uint64_t offset) const;

  // A module built in memory for snippet tests: sections [0]=NULL, [1]=.text (the bytes, one
  // STT_FUNC `function_name` covering them), [2]=.data (data_size zero bytes), [3]=.bss.
  // `extra` symbols are appended after the function symbol (index 1), so their indices start at 2.
  static Module synthetic(std::string name, std::vector<std::uint8_t> text, std::string function_name,
                          std::vector<Symbol> extra, std::vector<Relocation> text_relocations,
                          std::uint64_t data_size = 0x100, std::uint64_t bss_size = 0x100,
                          std::vector<Relocation> data_relocations = {});
  static constexpr std::uint32_t kTextSection = 1, kDataSection = 2, kBssSection = 3;

  Module() = default;
  Module(Module&&) noexcept = default;
  Module& operator=(Module&&) noexcept = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

 private:
  friend Result<Module> parseModule(std::vector<std::uint8_t> image, std::string path);
  friend Result<Module> linkModules(Module driver, std::vector<Module> dependencies);
  friend class KernelLinker;
  std::vector<std::uint8_t> image_;
  std::vector<std::vector<std::uint8_t>> linked_images_;  // dependencies' bytes (their sections point here)
  std::vector<std::vector<Relocation>> relocations_;          // by target section index
  std::vector<std::vector<std::uint32_t>> symbols_by_section_;  // defined symbols sorted by value
};

// Parses an in-memory module image (the whole file, signature included). `path` names it in errors.
Result<Module> parseModule(std::vector<std::uint8_t> image, std::string path);
// The driver with its dependencies' sections and symbols appended, and each symbol the driver (or a
// dependency) imports bound to the dependency that exports it, the way the kernel's module loader
// resolves them: calls into 8390's ei_* from ne2k-pci become direct calls the analysis follows.
// Identity (.modinfo, PCI ids, name) stays the driver's. A symbol exported twice is an error.
Result<Module> linkModules(Module driver, std::vector<Module> dependencies);
// Reads and parses a .ko file.
Result<Module> loadModule(const std::string& path);

// The appended module signature ("~Module signature appended~\n" trailer), if present: its size.
std::optional<std::size_t> moduleSignatureSize(std::span<const std::uint8_t> image) noexcept;

}  // namespace iof::analysis
