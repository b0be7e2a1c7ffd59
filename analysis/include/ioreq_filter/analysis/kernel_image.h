// The running kernel's own code as the analyser sees it: a Linux x86-64 kernel image (a bzImage whose
// payload is xz, or the vmlinux ELF inside it) without symbols or relocations. What it offers a device's
// graph: the names of exported functions (__ksymtab, __ksymtab_gpl), enough to recognise the kernel APIs
// the analyser knows (ioremap, pci_read_config_word, __fentry__ ...), and the PCI fixups (.pci_fixup)
// the PCI core runs for a device before any driver binds it (drivers/pci/quirks.c), which touch the
// device's BARs too: quirk_e100_interrupt writes the i8255x's SCB interrupt mask.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "ioreq_filter/analysis/elf_module.h"
#include "ioreq_filter/core/error.h"

namespace iof::analysis {

struct KernelSection {
  std::string name;
  std::uint64_t address = 0;  // sh_addr: where it is linked
  std::uint64_t flags = 0;    // SHF_*
  std::uint32_t type = 0;     // SHT_*
  std::span<const std::uint8_t> bytes;  // empty for SHT_NOBITS

  bool executable() const noexcept;
  bool contains(std::uint64_t a) const noexcept { return a >= address && a - address < bytes.size(); }
};

// struct pci_fixup (include/linux/pci.h, x86-64 with CONFIG_HAVE_ARCH_PREL32_RELOCATIONS): u16 vendor,
// u16 device, u32 class, unsigned int class_shift, int hook_offset; the hook is &hook_offset + offset.
// Every fixup phase (early, header, final, enable, resume...) shares the one section in this build.
struct PciFixup {
  std::uint16_t vendor = 0, device = 0;  // 0xffff: any
  std::uint32_t class_code = 0;          // 0xffffffff: any; else compared with the device's class >> shift
  std::uint32_t class_shift = 0;
  std::uint64_t hook = 0;                // the hook's address
  std::uint64_t entry = 0;               // the entry's own address (for messages)
};

class KernelImage {
 public:
  std::string path;
  std::vector<KernelSection> sections;
  std::map<std::uint64_t, std::string> exports;  // address -> exported name
  std::vector<PciFixup> pci_fixups;              // in section order

  // The section holding `address`, or nullptr.
  const KernelSection* sectionAt(std::uint64_t address) const noexcept;

  KernelImage() = default;
  KernelImage(KernelImage&&) noexcept = default;
  KernelImage& operator=(KernelImage&&) noexcept = default;
  KernelImage(const KernelImage&) = delete;
  KernelImage& operator=(const KernelImage&) = delete;

 private:
  friend Result<KernelImage> parseKernelImage(std::vector<std::uint8_t> bytes, std::string path);
  friend class KernelLinker;
  std::vector<std::uint8_t> elf_;  // the (decompressed) vmlinux the sections point into
};

// A bzImage (setup header "HdrS", payload xz-compressed) or a vmlinux ELF64 x86-64 ET_EXEC, whole file in
// memory. `path` names it in errors.
Result<KernelImage> parseKernelImage(std::vector<std::uint8_t> bytes, std::string path);
Result<KernelImage> loadKernelImage(const std::string& path);

// The bzImage's compressed payload decompressed (the vmlinux ELF): only xz is supported.
Result<std::vector<std::uint8_t>> decompressBzImage(std::span<const std::uint8_t> bzimage, const std::string& path);

// Which device the fixups are selected for. The class is what the driver's id table requires
// (class_code under class_mask, 24 bits: base class, subclass, prog-if); mask 0 = unknown class.
struct PciDeviceIdentity {
  std::uint16_t vendor = 0, device = 0;
  std::uint32_t class_code = 0, class_mask = 0;
};

// The fixups the PCI core may run for such a device (pci_do_fixups: vendor and device equal or
// PCI_ANY_ID, and class == dev->class >> class_shift or PCI_ANY_ID). Class bits the identity does not
// fix can be anything, so a fixup is kept when some class with the known bits matches: with an
// unknown class every class-specific fixup of the vendor/device is kept (an over-approximation).
std::vector<PciFixup> fixupsFor(const KernelImage& kernel, const PciDeviceIdentity& id);

// A fixup hook as an entry point of the device's graph: its function is decoded from the hook's
// address (no symbol size: control flow from the entry), its first argument is the struct pci_dev.
struct KernelEntry {
  CodeAddr entry = 0;
  std::string why;  // "vmlinux pci fixup 8086:ffff @0xffffffff815c4260"
};

// Appends the kernel's executable sections to the (linked) driver module so that the hooks are decoded,
// and analysed, in the driver's own disassembly: calls to exported functions become calls to those
// names; other direct calls are followed by address. Returns the entries to analyse.
// The module keeps the kernel's bytes.
Result<std::vector<KernelEntry>> linkKernelFixups(Module& driver, KernelImage kernel, std::span<const PciFixup> fixups);

}  // namespace iof::analysis
