// The request model: one guest I/O request as Xen hands it to a device model.
// Field meanings mirror Xen 4.17's ioreq_t (xen/include/public/hvm/ioreq.h).
#pragma once

#include <cstdint>
#include <string>
#include <type_traits>

namespace iof {

// Numeric values are Xen's IOREQ_TYPE_* so a backend can cast without a table.
enum class IoType : std::uint8_t {
  Pio = 0,         // IOREQ_TYPE_PIO: port I/O, addr is the port
  Copy = 1,        // IOREQ_TYPE_COPY: MMIO, addr is the guest-physical address
  PciConfig = 2,   // IOREQ_TYPE_PCI_CONFIG: addr = SBDF << 32 | register
  TimeOffset = 7,  // IOREQ_TYPE_TIMEOFFSET (buffered broadcast)
  Invalidate = 8,  // IOREQ_TYPE_INVALIDATE (mapcache broadcast)
};

// Xen: IOREQ_WRITE = 0, IOREQ_READ = 1.
enum class Dir : std::uint8_t { Write = 0, Read = 1 };

struct IoRequest {
  std::uint64_t addr = 0;
  std::uint64_t data = 0;    // value for writes; guest-physical address when data_is_ptr
  std::uint32_t count = 1;   // repetitions (REP prefixes)
  std::uint8_t size = 1;     // bytes per repetition
  Dir dir = Dir::Write;
  bool df = false;           // direction flag: reps walk addresses downwards
  bool data_is_ptr = false;  // data is a guest-physical buffer, not a value
  IoType type = IoType::Pio;
  std::uint16_t vcpu = 0;
};
static_assert(std::is_trivially_copyable_v<IoRequest>);

// Limits a well-formed request respects. Xen's own limits are looser in places; the filter is
// deliberately stricter (a larger REP burst is split by Xen anyway).
inline constexpr std::uint32_t kMaxRepCount = 0x10000;
inline constexpr std::uint64_t kMaxPort = 0xffff;
inline constexpr std::uint64_t kMaxConfigRegister = 0xfff;

enum class Malformation : std::uint8_t {
  None,
  BadSize,          // size not 1, 2, 4 or 8
  ZeroCount,        // count == 0
  HugeCount,        // count > kMaxRepCount
  AddressWrap,      // addr + size * count wraps the address space (or the port space)
  PortOutOfRange,   // PIO above 0xffff
  ConfigOutOfRange, // PCI_CONFIG register above 0xfff or access crossing a dword
  UnknownType,      // type not PIO, COPY, PCI_CONFIG, TIMEOFFSET or INVALIDATE
  BadDirection,     // dir not 0/1 (raw field from the ioreq page)
  CrossesRegion,    // starts inside a filtered device's region and runs past its end
};

// noexcept, allocation-free: safe on the data plane. Inline: it runs first on every request.
inline Malformation classify(const IoRequest& r) noexcept {
  switch (r.type) {
    case IoType::Pio:
    case IoType::Copy:
    case IoType::PciConfig:
    case IoType::TimeOffset:
    case IoType::Invalidate:
      break;
    default:
      return Malformation::UnknownType;
  }
  if (r.dir != Dir::Write && r.dir != Dir::Read) return Malformation::BadDirection;
  // Broadcasts carry no address or size worth checking.
  if (r.type == IoType::TimeOffset || r.type == IoType::Invalidate) return Malformation::None;
  if (r.size != 1 && r.size != 2 && r.size != 4 && r.size != 8) return Malformation::BadSize;
  if (r.count == 0) return Malformation::ZeroCount;
  if (r.count > kMaxRepCount) return Malformation::HugeCount;
  // The span a REP walks; only PIO keeps a fixed port for every repetition.
  const std::uint64_t span = r.type == IoType::Pio ? r.size : std::uint64_t(r.size) * r.count;
  switch (r.type) {
    case IoType::Pio:
      if (r.addr > kMaxPort) return Malformation::PortOutOfRange;
      if (r.addr + r.size - 1 > kMaxPort) return Malformation::AddressWrap;
      break;
    case IoType::PciConfig: {
      const std::uint64_t reg = r.addr & 0xffffffffu;
      if (reg > kMaxConfigRegister || r.count != 1 || r.size > 4 || (reg & 3) + r.size > 4)
        return Malformation::ConfigOutOfRange;
      break;
    }
    default:
      if (r.df ? r.addr + r.size < span : r.addr > ~std::uint64_t(0) - span + 1) return Malformation::AddressWrap;
      break;
  }
  return Malformation::None;
}
const char* toString(Malformation m) noexcept;
const char* toString(IoType t) noexcept;
const char* toString(Dir d) noexcept;

// "PIO write 0x3f5 size 1 data 0x0a vcpu 0" — for logs and check output (control plane).
std::string describe(const IoRequest& request);

// PCI_CONFIG address helpers (Xen: addr = SBDF << 32 | reg).
struct Sbdf {
  std::uint16_t segment = 0;
  std::uint8_t bus = 0;
  std::uint8_t dev = 0;  // 0..31
  std::uint8_t fn = 0;   // 0..7
  constexpr std::uint32_t raw() const noexcept {
    return (std::uint32_t(segment) << 16) | (std::uint32_t(bus) << 8) | (std::uint32_t(dev) << 3) | fn;
  }
  static constexpr Sbdf fromRaw(std::uint32_t v) noexcept {
    return Sbdf{std::uint16_t(v >> 16), std::uint8_t(v >> 8), std::uint8_t((v >> 3) & 31), std::uint8_t(v & 7)};
  }
  friend constexpr bool operator==(Sbdf, Sbdf) = default;
};
std::string toString(Sbdf sbdf);  // "0000:00:04.0"

constexpr std::uint64_t pciConfigAddress(Sbdf sbdf, std::uint32_t reg) noexcept {
  return (std::uint64_t(sbdf.raw()) << 32) | reg;
}

}  // namespace iof
