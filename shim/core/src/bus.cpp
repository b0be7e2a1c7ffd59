#include "ioreq_filter/core/bus.h"

#include <algorithm>
#include <cstdio>

namespace iof {
namespace {

constexpr std::uint16_t kCommandIo = 1u << 0;
constexpr std::uint16_t kCommandMem = 1u << 1;
constexpr std::uint32_t kBar0 = 0x10;
constexpr std::uint32_t kCommandReg = 0x04;
constexpr std::uint16_t kCf8Port = 0xcf8;
constexpr std::uint16_t kCfcPort = 0xcfc;

// PCI IDE Controller Specification 1.0: class 0x01 subclass 0x01; prog-if bit 0 (primary) / bit 2
// (secondary) set means the channel runs in native mode through BARs 0-1 / 2-3, clear means it decodes
// the ISA-era ports below. A native control BAR is 4 ports wide with Device Control / Alternate Status at
// offset 2; in compatibility mode only that one port (0x3f6 / 0x376) is the channel's.
constexpr std::uint32_t kPciClassIde = 0x0101;
constexpr std::uint32_t kProgIfNativeBit[2] = {1u << 0, 1u << 2};
constexpr std::uint64_t kLegacyCommandBlock[2] = {0x1f0, 0x170};
constexpr std::uint64_t kLegacyControlPort[2] = {0x3f6, 0x376};
constexpr std::uint64_t kCommandBlockPorts = 8, kControlBlockPorts = 4, kControlRegisterOffset = 2;

bool cf8Enabled(std::uint32_t cf8) noexcept { return (cf8 & 0x80000000u) != 0; }

std::string hex(std::uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(v));
  return buf;
}

}  // namespace

std::optional<DeviceBus::LegacyWindow> DeviceBus::legacyIdeWindow(const DeviceInstance& instance, int bar) noexcept {
  if (!instance.pci || bar < 0 || bar > 3 || (instance.pci->class_code >> 8) != kPciClassIde) return std::nullopt;
  const unsigned channel = unsigned(bar) / 2;
  if ((instance.pci->class_code & kProgIfNativeBit[channel]) != 0) return std::nullopt;  // native: its BARs decode
  if (bar % 2 == 0) return LegacyWindow{kLegacyCommandBlock[channel], kCommandBlockPorts, kLegacyCommandBlock[channel], kCommandBlockPorts};
  return LegacyWindow{kLegacyControlPort[channel] - kControlRegisterOffset, kControlBlockPorts, kLegacyControlPort[channel], 1};
}

Result<DeviceBus> DeviceBus::create(std::vector<BusDevice> devices) {
  DeviceBus bus;
  std::size_t io_capacity = 0, mem_capacity = 0;
  for (std::size_t d = 0; d < devices.size(); ++d) {
    auto& dev = devices[d];
    const bool pci = dev.instance.pci.has_value();
    std::uint32_t config_region = kNoRegion;
    std::vector<RegionBinding> bindings(dev.regions.size());
    PciState state;
    for (std::size_t b = 0; b < 6; ++b) {
      const auto& bar = dev.instance.bars[b];
      // Keep the raw register form so partial config writes can be merged byte by byte.
      const std::uint64_t type_bits = bar.kind == BarKind::Io ? 1 : bar.kind == BarKind::Mem64 ? 4 : 0;
      state.bar_raw[b] = std::uint32_t(bar.address | type_bits);
      if (bar.kind == BarKind::Mem64 && b + 1 < 6) state.bar_raw[b + 1] = std::uint32_t(bar.address >> 32), ++b;
    }
    state.command = dev.instance.command;
    std::uint64_t lowest_fixed = ~0ull;
    for (const auto& reg : dev.regions)
      if (reg.bar < 0 && reg.space != RegionSpace::Config) lowest_fixed = std::min(lowest_fixed, reg.base);
    const std::uint64_t isa_shift =
        dev.instance.isa_ports.empty() || lowest_fixed == ~0ull ? 0 : dev.instance.isa_ports.front().base - lowest_fixed;
    for (std::size_t r = 0; r < dev.regions.size(); ++r) {
      auto& reg = dev.regions[r];
      const auto where = dev.instance.name + ": region '" + reg.name + "'";
      if (reg.space == RegionSpace::Config) {
        if (!pci) return fail(where, "config space on a device that is not PCI");
        config_region = std::uint32_t(r);
        bindings[r].kind = Binding::Config;
        continue;
      }
      // A fixed region may be split where the instance does not decode (see rebuildRanges()); a BAR
      // region may add the BAR's tail past it.
      (reg.space == RegionSpace::Io ? io_capacity : mem_capacity) += std::max<std::size_t>(1, dev.instance.isa_ports.size()) + (reg.bar >= 0 ? 1 : 0);
      if (reg.bar >= 0) {
        if (!pci) return fail(where, "BAR region on a device that is not PCI");
        const std::string bar_name = "BAR" + std::to_string(reg.bar);
        if (const auto legacy = legacyIdeWindow(dev.instance, reg.bar)) {
          const std::string block = std::string(reg.bar % 2 == 0 ? "command" : "control") + " block at " + hex(legacy->decode_start) +
                                    " (" + bar_name + " of a compatibility-mode IDE channel)";
          if (reg.space != RegionSpace::Io) return fail(where, "policy says memory but the device decodes it as the legacy I/O " + block);
          if (reg.length > legacy->length)
            return fail(where, "region length " + hex(reg.length) + " exceeds the " + std::to_string(legacy->length) +
                                   " ports of the legacy " + block);
          bindings[r] = RegionBinding{Binding::LegacyIde, *legacy};
          if (reg.length <= legacy->decode_start - legacy->base) {
            bindings[r].kind = Binding::Unbound;
            bus.unbound_.push_back({d, std::uint32_t(r), "region length " + hex(reg.length) + " ends before the port the legacy " + block + " decodes"});
          }
          continue;
        }
        const auto& bar = dev.instance.bars[std::size_t(reg.bar)];
        if (bar.kind == BarKind::None || bar.size == 0) {
          // The driver reaches it only on parts that have it (its graph says which paths need it).
          bindings[r].kind = Binding::Unbound;
          bus.unbound_.push_back({d, std::uint32_t(r), bar_name + " is not implemented by this device instance"});
          continue;
        }
        if ((bar.kind == BarKind::Io) != (reg.space == RegionSpace::Io))
          return fail(where, "policy says " + std::string(reg.space == RegionSpace::Io ? "I/O" : "memory") + " but " + bar_name +
                                 " of the device is " + (bar.kind == BarKind::Io ? "I/O" : "memory"));
        if (reg.length > bar.size)
          return fail(where, "region length " + hex(reg.length) + " exceeds " + bar_name + " size " + hex(bar.size));
        bindings[r].kind = Binding::Bar;
      } else if (!dev.instance.isa_ports.empty()) {
        // Fixed regions move with the instance: the policy's bases are the device kind's defaults, the
        // instance's first port range says where this machine put the lowest of them.
        reg.base += isa_shift;
      }
    }
    // A policy none of whose register regions binds would filter nothing on this instance: refuse the
    // attach (fail closed) rather than let every register access through as unclaimed.
    // The engine's guards for BARs the policy does not mention (RegionUse::Uncovered) filter nothing.
    const auto policy_region = [](const RegionSpec& r) { return r.space != RegionSpace::Config && r.use != RegionUse::Uncovered; };
    bool policy_region_binds = false;
    for (std::size_t r = 0; r < dev.regions.size(); ++r)
      policy_region_binds |= policy_region(dev.regions[r]) && bindings[r].kind != Binding::Unbound && bindings[r].kind != Binding::Config;
    const bool has_register_region = std::ranges::any_of(dev.regions, policy_region);
    if (has_register_region && !policy_region_binds) {
      std::string why;
      for (const auto& u : bus.unbound_)
        if (u.device == d) why += (why.empty() ? "" : "; ") + std::string("'") + dev.regions[u.region].name + "': " + u.reason;
      return fail(dev.instance.name, "no register region of the policy binds on this device instance, so it would filter nothing (" + why + ")");
    }
    bus.pci_.push_back(state);
    bus.config_region_.push_back(config_region);
    bus.binding_.push_back(std::move(bindings));
  }
  // Port-table entries are 16-bit range indices with two reserved values.
  if (io_capacity >= kPortConfigCycle - 1) return fail("bus", "too many port ranges (" + std::to_string(io_capacity) + ")");
  bus.devices_ = std::move(devices);
  bus.port_slot_.assign(std::size_t(kMaxPort) + 1, kPortFree);
  for (std::uint64_t p = kCf8Port; p < kCf8Port + 8; ++p) bus.port_slot_[p] = kPortConfigCycle;
  bus.io_.resize(io_capacity);
  bus.mem_.resize(mem_capacity);
  bus.rebuildRanges();
  if (bus.bar_conflicts_ != 0) {
    if (!bus.conflict_has_old_) return fail("bus", "overlapping device ranges");
    // Named from the ranges really claimed: a policy region may claim only part of its span.
    const auto& added = bus.conflict_new_;
    const auto& held = bus.conflict_old_;
    const auto& added_dev = bus.devices_[std::size_t(added.device)];
    const auto& held_dev = bus.devices_[std::size_t(held.device)];
    return fail(added_dev.instance.name + ": region '" + added_dev.regions[added.region].name + "'",
                "overlaps region '" + held_dev.regions[held.region].name + "' of " + held_dev.instance.name + " at " +
                    hex(std::max(added.start, held.start)));
  }
  return bus;
}

std::uint64_t DeviceBus::regionBase(std::size_t d, std::uint32_t r) const noexcept {
  const auto& reg = devices_[d].regions[r];
  const auto& binding = binding_[d][r];
  switch (binding.kind) {
    case Binding::Config:
    case Binding::Unbound: return ~0ull;
    case Binding::Fixed: return reg.base;
    case Binding::LegacyIde: return binding.legacy.base;
    case Binding::Bar: break;
  }
  const auto& bar = devices_[d].instance.bars[std::size_t(reg.bar)];
  const auto& st = pci_[d];
  const std::uint16_t enable = bar.kind == BarKind::Io ? kCommandIo : kCommandMem;
  if ((st.command & enable) == 0) return ~0ull;
  std::uint64_t raw = st.bar_raw[std::size_t(reg.bar)];
  if (bar.kind == BarKind::Mem64 && reg.bar < 5) raw |= std::uint64_t(st.bar_raw[std::size_t(reg.bar) + 1]) << 32;
  const std::uint64_t type_mask = bar.kind == BarKind::Io ? 3 : 15;
  const std::uint64_t base = raw & ~type_mask & ~(bar.size - 1);
  if (base == 0) return ~0ull;  // unassigned
  if (bar.kind == BarKind::Io && base + reg.length - 1 > kMaxPort) return ~0ull;
  if (bar.kind != BarKind::Mem64 && base + reg.length - 1 > 0xffffffffull) return ~0ull;  // sizing pattern
  return base;
}

void DeviceBus::rebuildRanges() noexcept {
  fillPortSlots(false);
  ++generation_;
  io_count_ = mem_count_ = 0;
  // Fixed (ISA) ranges first: they cannot move, so a BAR the guest programs over one loses.
  for (int pass = 0; pass < 2; ++pass)
  for (std::size_t d = 0; d < devices_.size(); ++d) {
    for (std::uint32_t r = 0; r < devices_[d].regions.size(); ++r) {
      const auto& reg = devices_[d].regions[r];
      const auto& binding = binding_[d][r];
      if (binding.kind == Binding::Config || binding.kind == Binding::Unbound || (pass == 0) != (binding.kind != Binding::Bar)) continue;
      const std::uint64_t base = regionBase(d, r);
      if (base == ~0ull) continue;
      auto& table = reg.space == RegionSpace::Io ? io_ : mem_;
      auto& count = reg.space == RegionSpace::Io ? io_count_ : mem_count_;
      if (binding.kind == Binding::LegacyIde) {
        const auto& w = binding.legacy;
        const std::uint64_t lo = std::max(base, w.decode_start), hi = std::min(base + reg.length, w.decode_start + w.decode_length);
        if (lo < hi) insertRange(table, count, Range{lo, hi - 1, std::int32_t(d), r, base});
        continue;
      }
      const auto& ports = devices_[d].instance.isa_ports;
      if (reg.bar < 0 && reg.space == RegionSpace::Io && !ports.empty()) {
        // Claim only the ports the instance really decodes: a policy region drawn wider than the device
        // (0x3f0+8 for a floppy controller) must not take the IDE control port 0x3f6 from its owner.
        for (const auto& p : ports) {
          const std::uint64_t lo = std::max(base, p.base), hi = std::min(base + reg.length, p.base + p.length);
          if (lo < hi) insertRange(table, count, Range{lo, hi - 1, std::int32_t(d), r, base});
        }
        continue;
      }
      insertRange(table, count, Range{base, base + reg.length - 1, std::int32_t(d), r, base});
      if (binding.kind == Binding::Bar && devices_[d].whole_device) {
        const std::uint64_t bar_size = devices_[d].instance.bars[std::size_t(reg.bar)].size;
        const std::uint64_t tail_end = base + bar_size - 1;
        const bool fits = reg.space == RegionSpace::Io ? tail_end <= kMaxPort : tail_end >= base;
        if (reg.length < bar_size && fits) insertRange(table, count, Range{base + reg.length, tail_end, std::int32_t(d), kBarTailRegion, base});
      }
    }
  }
  fillPortSlots(true);
}

// Writes each current range's own index over its ports (claim), or kPortFree (before the ranges change). The CF8/CFC
// ports keep kPortConfigCycle even under a range: route() then decodes them fully, range included.
void DeviceBus::fillPortSlots(bool claim) noexcept {
  for (std::size_t i = 0; i < io_count_; ++i) {
    const std::uint16_t slot = claim ? std::uint16_t(i + 1) : kPortFree;
    for (std::uint64_t p = io_[i].start; p <= io_[i].end && p <= kMaxPort; ++p)
      if (port_slot_[p] != kPortConfigCycle) port_slot_[p] = slot;
  }
}

bool DeviceBus::portTableMatchesRanges() const noexcept {
  // One sweep along the sorted ranges rather than a search per port: tests call this after every step.
  std::size_t i = 0;
  for (std::uint64_t p = 0; p <= kMaxPort; ++p) {
    while (i < io_count_ && io_[i].end < p) ++i;
    const bool hit = i < io_count_ && io_[i].start <= p;
    const std::uint16_t slot = port_slot_[p];
    if (p >= kCf8Port && p < kCf8Port + 8) {
      if (slot != kPortConfigCycle) return false;
    } else if (hit ? slot != std::uint16_t(i + 1) : slot != kPortFree) {
      return false;
    }
  }
  return true;
}

// Insertion into a sorted array; a range that would overlap one already placed is not decoded (the
// guest moved a BAR onto another device) and counted, never trusted.
bool DeviceBus::insertRange(std::vector<Range>& table, std::size_t& count, const Range& range) noexcept {
  std::size_t pos = 0;
  while (pos < count && table[pos].start < range.start) ++pos;
  const bool overlaps_prev = pos > 0 && table[pos - 1].end >= range.start;
  const bool overlaps_next = pos < count && table[pos].start <= range.end;
  if (overlaps_prev || overlaps_next || count >= table.size()) {
    if (!conflict_seen_) {
      conflict_seen_ = true;
      conflict_new_ = range;
      conflict_has_old_ = overlaps_prev || overlaps_next;
      if (conflict_has_old_) conflict_old_ = overlaps_prev ? table[pos - 1] : table[pos];
    }
    ++bar_conflicts_;
    return false;
  }
  for (std::size_t i = count; i > pos; --i) table[i] = table[i - 1];
  table[pos] = range;
  ++count;
  return true;
}

const DeviceBus::Range* DeviceBus::find(const Range* begin, std::size_t count, std::uint64_t addr) const noexcept {
  std::size_t lo = 0, hi = count;
  while (lo < hi) {
    const std::size_t mid = (lo + hi) / 2;
    if (begin[mid].end < addr)
      lo = mid + 1;
    else
      hi = mid;
  }
  if (lo < count && begin[lo].start <= addr) return &begin[lo];
  return nullptr;
}

bool DeviceBus::decodeConfigCycle(const IoRequest& pio, IoRequest& config) const noexcept {
  if (pio.type != IoType::Pio || (pio.addr & ~std::uint64_t(3)) != kCfcPort || !cf8Enabled(cf8_)) return false;
  // Xen 4.17: hvm_pci_decode_addr() — bus/dev/fn from CF8[23:8], register CF8[7:2] plus the port's low bits.
  // AMD's extended-register bits (CF8[27:24]) are ignored: Xen honours them only on family 10h–16h.
  const std::uint32_t bdf = (cf8_ >> 8) & 0xffff;
  const std::uint32_t reg = (cf8_ & 0xfc) | std::uint32_t(pio.addr & 3);
  config = pio;
  config.type = IoType::PciConfig;
  config.addr = pciConfigAddress(Sbdf::fromRaw(bdf), reg);
  return true;
}

void DeviceBus::trackConfigWrite(std::size_t d, std::uint32_t reg, std::uint8_t size, std::uint64_t value) noexcept {
  auto& st = pci_[d];
  bool changed = false;
  for (std::uint8_t i = 0; i < size; ++i) {
    const std::uint32_t r = reg + i;
    const std::uint8_t byte = std::uint8_t(value >> (8 * i));
    if (r >= kCommandReg && r < kCommandReg + 2) {
      const unsigned shift = 8 * (r - kCommandReg);
      const std::uint16_t next = std::uint16_t((st.command & ~(0xffu << shift)) | (std::uint16_t(byte) << shift));
      changed |= next != st.command;
      st.command = next;
    } else if (r >= kBar0 && r < kBar0 + 24) {
      const std::size_t b = (r - kBar0) / 4;
      const unsigned shift = 8 * ((r - kBar0) % 4);
      const std::uint32_t next = (st.bar_raw[b] & ~(0xffu << shift)) | (std::uint32_t(byte) << shift);
      changed |= next != st.bar_raw[b];
      st.bar_raw[b] = next;
    }
  }
  if (changed) rebuildRanges();
}

BusTarget DeviceBus::routeConfig(std::uint32_t sbdf, std::uint32_t reg, const IoRequest& request) noexcept {
  for (std::size_t d = 0; d < devices_.size(); ++d) {
    const auto& inst = devices_[d].instance;
    if (!inst.pci || inst.sbdf.raw() != sbdf) continue;
    if (request.dir == Dir::Write && !request.data_is_ptr) trackConfigWrite(d, reg, request.size, request.data);
    return BusTarget{std::int32_t(d), config_region_[d], reg, true, false};
  }
  return {};
}

BusTarget DeviceBus::routeFully(const IoRequest& request) noexcept {
  switch (request.type) {
    case IoType::Pio: {
      if (request.addr == kCf8Port && request.size == 4) {
        if (request.dir == Dir::Write && !request.data_is_ptr) cf8_ = std::uint32_t(request.data);
        return {};
      }
      IoRequest config;
      if (decodeConfigCycle(request, config))
        return routeConfig(std::uint32_t(config.addr >> 32), std::uint32_t(config.addr), config);
      const Range* hit = find(io_.data(), io_count_, request.addr);
      if (!hit) return {};
      return BusTarget{hit->device, hit->region, request.addr - hit->region_base, false, request.addr + request.size - 1 > hit->end};
    }
    case IoType::Copy: {
      const Range* hit = find(mem_.data(), mem_count_, request.addr);
      if (!hit) return {};
      // REP MOVS/STOS walk count*size bytes (downwards with DF); the whole span must stay in the region.
      const std::uint64_t span = std::uint64_t(request.size) * request.count;
      const bool crosses = request.df ? request.addr + request.size < hit->start + span
                                      : request.addr + span - 1 > hit->end;
      return BusTarget{hit->device, hit->region, request.addr - hit->region_base, false, crosses};
    }
    case IoType::PciConfig:
      return routeConfig(std::uint32_t(request.addr >> 32), std::uint32_t(request.addr & 0xffffffffu), request);
    default:
      return {};
  }
}

}  // namespace iof
