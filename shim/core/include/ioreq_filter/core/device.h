// Device instances as discovered on a machine (QMP, xenstore, --bind) and matched to policies.
// Control-plane data: strings and vectors are fine here.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "ioreq_filter/core/io_request.h"

namespace iof {

enum class BarKind : std::uint8_t { None, Io, Mem32, Mem64 };

struct BarInfo {
  BarKind kind = BarKind::None;
  std::uint64_t address = 0;  // as currently programmed (0 / unknown if not yet assigned)
  std::uint64_t size = 0;     // power of two, 0 if the BAR is not implemented
};

struct PciIdentity {
  std::uint16_t vendor = 0;
  std::uint16_t device = 0;
  std::uint32_t class_code = 0;  // 24-bit class/subclass/prog-if
  std::uint16_t subsystem_vendor = 0;
  std::uint16_t subsystem = 0;
};

struct PortRange {
  std::uint64_t base = 0;
  std::uint64_t length = 0;
};

// One emulated device instance of a machine.
struct DeviceInstance {
  std::string name;  // unique on the machine: "fdc", "ne2k_pci@00:04.0"
  std::string kind;  // QOM type, e.g. "isa-fdc", "ne2k_pci", "e1000"
  std::optional<PciIdentity> pci;
  Sbdf sbdf{};                        // PCI only
  std::array<BarInfo, 6> bars{};      // PCI only
  std::uint16_t command = 0;          // PCI command register as discovered
  std::vector<PortRange> isa_ports;   // ISA only: fixed port ranges
};

}  // namespace iof
