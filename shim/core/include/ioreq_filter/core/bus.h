// The device bus: which filtered device instance, region and offset a request targets.
// Port and MMIO ranges are sorted and non-overlapping (rust-vmm style); PCI BARs follow the guest's
// own config writes (sizing, moves, decode enable/disable), which arrive either as CF8/CFC port
// accesses (qtest traces, the CF8 latch is kept here as Xen keeps it per domain) or already decoded
// as PCI_CONFIG requests (Xen ioreqs). Devices only ever see offsets relative to their region.
//
// How a policy region binds on an instance (create() decides once, see RegionBinding):
//  - fixed (ISA) regions at the instance's port ranges, BAR regions wherever the guest programs the BAR;
//  - a BAR 0-3 region of a PCI IDE function (class 0x0101) whose channel is in compatibility mode
//    (prog-if bit 0 primary, bit 2 secondary, clear) at that channel's legacy ports, as the PCI IDE
//    Controller Specification 1.0 places them: command block 0x1f0-0x1f7 / 0x170-0x177 for BAR 0 / 2,
//    control block 0x3f6 / 0x376 for BAR 1 / 3. A native-mode control BAR is 4 ports with the register
//    at offset 2 (libata: `iomap[1] | ATA_PCI_CTL_OFS`), so BAR 1 / 3 regions count offsets from
//    0x3f4 / 0x374 and claim only offset 2: 0x3f7 belongs to the floppy controller. QEMU and Xen route
//    these ports by number whatever the BARs and the command register hold, so they never move;
//  - a region whose BAR this instance does not implement (an ICH SATA-only SIDPR BAR 5 on a PIIX)
//    stays unbound: it claims nothing and is listed by unboundRegions(), the attach goes on;
//  - a BAR region shorter than its BAR also claims the rest of the BAR, as kBarTailRegion with offsets
//    from the BAR's base: the engine refuses those accesses (uncovered-region) rather than let the
//    unfiltered part of a filtered BAR through as unclaimed.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "ioreq_filter/core/device.h"
#include "ioreq_filter/core/error.h"
#include "ioreq_filter/core/io_request.h"
#include "ioreq_filter/core/policy.h"

namespace iof {

inline constexpr std::uint32_t kNoRegion = 0xffffffffu;
// The part of a BAR past the end of the policy region in it (BusTarget::region, IoRange::region).
inline constexpr std::uint32_t kBarTailRegion = 0xfffffffeu;

// Where a request lands.
struct BusTarget {
  std::int32_t device = -1;          // -1: no filtered device claims it
  std::uint32_t region = kNoRegion;  // region index in the device's policy (kNoRegion for config without a region)
  std::uint64_t offset = 0;          // within the region (config: the register)
  bool config = false;               // PCI config-space access
  bool crosses = false;              // the access runs past the end of its region
};

// A device as the bus sees it: instance facts plus the policy's regions.
struct BusDevice {
  DeviceInstance instance;
  std::vector<RegionSpec> regions;
  // The whole device is this entry's to judge: a BAR region shorter than its BAR also claims the rest
  // (kBarTailRegion). False for a device's entry in a further policy set (an intersect set judges only
  // the ranges it names; the device's first set guards the rest).
  bool whole_device = true;
};

class DeviceBus {
 public:
  // Control plane. Fixed regions are placed at the instance's ISA base (policy base is the default).
  // Overlapping ranges between devices, and regions larger than their BAR, are errors.
  static Result<DeviceBus> create(std::vector<BusDevice> devices);

  // Data plane: noexcept, allocation-free. May update the CF8 latch and BAR state (config writes),
  // so call it exactly once per request, in order. `request` must be well-formed (classify()).
  BusTarget route(const IoRequest& request) noexcept {
    // Ports are decoded by one load from the direct-mapped port table; 0xcf8..0xcff keep the full path
    // (CF8 latch, config cycles).
    if (request.type == IoType::Pio) {
      const std::uint16_t slot = port_slot_[std::size_t(request.addr)];
      if (slot == kPortFree) return {};
      if (slot != kPortConfigCycle) {
        const IoRange& hit = io_[slot - 1];
        return BusTarget{hit.device, hit.region, request.addr - hit.region_base, false, request.addr + request.size - 1 > hit.end};
      }
    }
    return routeFully(request);
  }

  // A contiguous run of ports or addresses one device region claims.
  struct IoRange {
    std::uint64_t start = 0, end = 0;  // inclusive
    std::int32_t device = -1;
    std::uint32_t region = 0;
    std::uint64_t region_base = 0;     // offsets are relative to this (a range may be part of a region)
  };
  // Data plane, for callers that fuse routing with their own lookups (the engine's fast path): the
  // port table's entry for `port` (<= 0xffff): kPortFree, kPortConfigCycle (use route()), or an index
  // for ioRange(). Reading it has no side effects.
  static constexpr std::uint16_t kPortFree = 0, kPortConfigCycle = 0xffff;
  std::uint16_t portSlot(std::uint64_t port) const noexcept { return port_slot_[std::size_t(port)]; }
  const IoRange& ioRange(std::uint16_t slot) const noexcept { return io_[slot - 1]; }
  // Changes whenever the ranges do (BAR moves, decode enables): a caller's copy of routing facts taken
  // under one generation stays true until this changes.
  std::uint64_t generation() const noexcept { return generation_; }
  // Tests: the port table agrees with a binary search over the sorted ranges, for every port.
  bool portTableMatchesRanges() const noexcept;

  // Decodes a CF8/CFC port access into Xen's PCI_CONFIG form using the current latch. Returns false if
  // the access is not a config data cycle.
  bool decodeConfigCycle(const IoRequest& pio, IoRequest& config) const noexcept;

  std::size_t deviceCount() const noexcept { return devices_.size(); }
  const BusDevice& device(std::size_t i) const noexcept { return devices_[i]; }
  // Current base of a region (after BAR moves), or nullopt-like ~0 when not decoded.
  std::uint64_t regionBase(std::size_t device, std::uint32_t region) const noexcept;
  // The range that claims `addr` in `space` (Io or Mem) right now, or nullptr (control plane: reports).
  const IoRange* claimant(RegionSpace space, std::uint64_t addr) const noexcept {
    return space == RegionSpace::Io ? find(io_.data(), io_count_, addr) : find(mem_.data(), mem_count_, addr);
  }
  std::uint32_t cf8() const noexcept { return cf8_; }
  std::uint64_t barConflicts() const noexcept { return bar_conflicts_; }

  // A policy region that claims nothing on this machine, and why (control plane: for attach reports).
  struct UnboundRegion {
    std::size_t device = 0;
    std::uint32_t region = 0;
    std::string reason;  // "BAR5 is not implemented by this device instance"
  };
  const std::vector<UnboundRegion>& unboundRegions() const noexcept { return unbound_; }
  // The legacy window a compatibility-mode IDE channel decodes for a BAR 0-3 region, if `instance` has
  // one there: offsets count from `base`, a region may be at most `length` (the native BAR's size) and
  // claims the ports [decode_start, decode_start + decode_length). nullopt for any other device or BAR.
  struct LegacyWindow {
    std::uint64_t base = 0, length = 0, decode_start = 0, decode_length = 0;
  };
  static std::optional<LegacyWindow> legacyIdeWindow(const DeviceInstance& instance, int bar) noexcept;

 private:
  using Range = IoRange;
  // Fixed: ISA port ranges or fixed addresses. Bar: follows the guest's config writes. LegacyIde: a
  // compatibility-mode IDE channel's ports (LegacyWindow). Unbound and Config claim no range.
  enum class Binding : std::uint8_t { Fixed, Bar, LegacyIde, Unbound, Config };
  struct RegionBinding {
    Binding kind = Binding::Fixed;
    LegacyWindow legacy;
  };
  bool insertRange(std::vector<Range>& table, std::size_t& count, const Range& range) noexcept;
  struct PciState {
    std::array<std::uint32_t, 6> bar_raw{};
    std::uint16_t command = 0;
  };
  void rebuildRanges() noexcept;
  void fillPortSlots(bool claim) noexcept;
  const Range* find(const Range* begin, std::size_t count, std::uint64_t addr) const noexcept;
  void trackConfigWrite(std::size_t device, std::uint32_t reg, std::uint8_t size, std::uint64_t value) noexcept;
  BusTarget routeConfig(std::uint32_t sbdf, std::uint32_t reg, const IoRequest& request) noexcept;
  BusTarget routeFully(const IoRequest& request) noexcept;

  std::vector<BusDevice> devices_;
  std::vector<PciState> pci_;            // per device (unused for ISA)
  std::vector<std::uint32_t> config_region_;  // per device: region index of its config space or kNoRegion
  std::vector<std::vector<RegionBinding>> binding_;  // per device, per policy region
  std::vector<UnboundRegion> unbound_;
  std::vector<Range> io_, mem_;          // capacity fixed at create(); sizes vary
  std::size_t io_count_ = 0, mem_count_ = 0;
  // Per port: kPortFree, kPortConfigCycle, or io_ index + 1. Rewritten with the ranges it mirrors.
  std::vector<std::uint16_t> port_slot_;
  std::uint32_t cf8_ = 0;
  std::uint64_t bar_conflicts_ = 0;
  std::uint64_t generation_ = 0;
  // The first range insertRange() refused and the one it ran into (none: the table was full), so
  // create() can name the pair from what was really claimed.
  bool conflict_seen_ = false;
  Range conflict_new_{}, conflict_old_{};
  bool conflict_has_old_ = false;
};

}  // namespace iof
