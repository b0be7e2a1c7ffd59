// The bus's direct-mapped port table (what route() and the engine's fast path read) must always say
// what the sorted ranges say, whatever the guest does to its BARs, and never hide the CF8/CFC ports.
#include <gtest/gtest.h>

#include <random>

#include "ioreq_filter/core/bus.h"
#include "test_policies.h"

namespace iof {
namespace {

using testing::pio;

// A PCI device with up to two I/O BARs of random power-of-two sizes.
BusDevice randomPciDevice(std::mt19937& rng, int index) {
  auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  BusDevice d;
  d.instance.name = "pci" + std::to_string(index);
  d.instance.kind = "toy-pci";
  d.instance.pci = PciIdentity{0x1234, std::uint16_t(index), 0x020000, 0, 0};
  d.instance.sbdf = Sbdf{0, 0, std::uint8_t(3 + index), 0};
  const int bars = pick(1, 2);
  for (int b = 0; b < bars; ++b) {
    const std::uint64_t size = std::uint64_t(4) << pick(0, 6);
    d.instance.bars[std::size_t(b)] = BarInfo{BarKind::Io, 0, size};
    d.regions.push_back(RegionSpec{"bar" + std::to_string(b), RegionSpace::Io, b, 0, size / std::uint64_t(pick(1, 2))});
  }
  d.regions.push_back(RegionSpec{"config", RegionSpace::Config, -1, 0, 256});
  return d;
}

IoRequest config(std::uint32_t cf8_value) { return pio(0xcf8, Dir::Write, cf8_value, 0, 4); }

TEST(PortTable, AgreesWithTheRangesThroughRandomBarMovesAndConfigCycles) {
  std::uint64_t claimed = 0;
  for (std::uint32_t seed = 1; seed <= 16; ++seed) {
    std::mt19937 rng(seed);
    auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
    std::vector<BusDevice> devices;
    // An ISA device, sometimes straddling the CF8/CFC ports so that route() must prefer the decode.
    BusDevice isa;
    const std::uint64_t isa_base = pick(0, 3) == 0 ? 0xcf0 : std::uint64_t(pick(0x100, 0x3f0)) & ~7ull;
    isa.instance = testing::isaInstance("toy", isa_base, 16);
    isa.regions.push_back(RegionSpec{"io", RegionSpace::Io, -1, isa_base, 16});
    devices.push_back(isa);
    const int pci = pick(1, 3);
    for (int i = 0; i < pci; ++i) devices.push_back(randomPciDevice(rng, i));
    auto created = DeviceBus::create(devices);
    ASSERT_TRUE(created.has_value()) << created.error().message();
    DeviceBus& bus = *created;
    ASSERT_TRUE(bus.portTableMatchesRanges()) << "seed " << seed;
    for (int step = 0; step < 120; ++step) {
      const std::size_t d = std::size_t(pick(1, pci));
      const auto sbdf = bus.device(d).instance.sbdf.raw();
      const std::uint32_t reg = pick(0, 3) == 0 ? 0x04 : 0x10 + 4 * std::uint32_t(pick(0, 1));
      std::uint64_t value = 0;
      switch (pick(0, 4)) {
        case 0: value = 0xffffffff; break;                                        // sizing
        case 1: value = std::uint64_t(pick(0, 3)); break;                         // decode on/off
        case 2: value = (std::uint64_t(pick(0x10, 0xff)) << 8) | 1; break;        // a move
        case 3: value = (std::uint64_t(pick(0x1, 0xf)) << 4 | 0xc00) | 1; break;  // near 0xcf8
        default: value = std::uint64_t(bus.regionBase(std::size_t(pick(0, pci)), 0)) | 1; break;  // onto another
      }
      if (reg == 0x04) value &= 3;
      if (pick(0, 1) == 0) {
        // As a CF8/CFC cycle, sometimes byte-wise.
        bus.route(config(0x80000000u | sbdf << 8 | reg));
        if (pick(0, 1) == 0) {
          bus.route(pio(0xcfc, Dir::Write, value, 0, 4));
        } else {
          for (std::uint32_t b = 0; b < 4; ++b) bus.route(pio(0xcfc + b, Dir::Write, (value >> (8 * b)) & 0xff, 0, 1));
        }
      } else {
        IoRequest w;
        w.type = IoType::PciConfig;
        w.addr = (std::uint64_t(sbdf) << 32) | reg;
        w.dir = Dir::Write;
        w.size = 4;
        w.data = value;
        bus.route(w);
      }
      ASSERT_TRUE(bus.portTableMatchesRanges()) << "seed " << seed << " step " << step;
      // Whatever the table says, a port access lands where the device's current region base says.
      for (std::size_t dev = 0; dev < bus.deviceCount(); ++dev)
        for (std::uint32_t r = 0; r < bus.device(dev).regions.size(); ++r) {
          const auto base = bus.regionBase(dev, r);
          if (base == ~0ull || bus.device(dev).regions[r].space != RegionSpace::Io) continue;
          const std::uint64_t port = base + bus.device(dev).regions[r].length - 1;
          if (port >= 0xcf8 && port < 0xd00) continue;
          const BusTarget t = bus.route(pio(port, Dir::Read));
          if (t.device == std::int32_t(dev) && t.region == r) {
            EXPECT_EQ(t.offset, port - base);
            ++claimed;
          } else {
            EXPECT_GT(bus.barConflicts(), 0u) << "seed " << seed << ": only a conflict may take a port away";
          }
        }
    }
  }
  EXPECT_GT(claimed, 500u);  // the moves left BARs decoded often enough to matter
}

TEST(PortTable, ConfigCyclePortsAreDecodedEvenUnderADeviceRange) {
  BusDevice isa;
  isa.instance = testing::isaInstance("toy", 0xcf0, 16);
  isa.regions.push_back(RegionSpec{"io", RegionSpace::Io, -1, 0xcf0, 16});
  auto bus = DeviceBus::create({isa});
  ASSERT_TRUE(bus.has_value());
  EXPECT_EQ(bus->portSlot(0xcf8), DeviceBus::kPortConfigCycle);
  EXPECT_EQ(bus->route(pio(0xcf0, Dir::Read)).device, 0);
  EXPECT_EQ(bus->route(pio(0xcf8, Dir::Write, 0x80000000, 0, 4)).device, -1);  // the CF8 latch, not the device
  EXPECT_EQ(bus->cf8(), 0x80000000u);
  EXPECT_EQ(bus->route(pio(0xcf9, Dir::Read)).device, 0);  // not a latch access: the range's port
}

}  // namespace
}  // namespace iof
