// The bus's binding rules for PCI IDE functions in compatibility mode (legacy ports) and for policy
// regions whose BAR the instance lacks. QEMU's PIIX3 IDE (8086:7010, class 0x010180) is the model:
// BARs 0-3 unimplemented, BAR 4 (bus master) 16 I/O ports, and the channels at 0x1f0/0x3f6, 0x170/0x376.
#include <gtest/gtest.h>

#include "ioreq_filter/core/bus.h"
#include "ioreq_filter/core/engine.h"
#include "test_policies.h"

namespace iof {
namespace {

using namespace iof::testing;

const Sbdf kIdeSlot{0, 0, 1, 1};
enum IdeRegion : std::uint32_t { kCmd0, kCtl0, kCmd1, kCtl1, kBusMaster, kSidpr };

// The regions the analyser derives from ata_piix.ko + libata.ko: one per BAR, 5 being ICH SATA's SIDPR.
std::vector<RegionSpec> ideRegions() {
  return {RegionSpec{"bar0", RegionSpace::Io, 0, 0, 8},  RegionSpec{"bar1", RegionSpace::Io, 1, 0, 4},
          RegionSpec{"bar2", RegionSpace::Io, 2, 0, 8},  RegionSpec{"bar3", RegionSpace::Io, 3, 0, 4},
          RegionSpec{"bar4", RegionSpace::Io, 4, 0, 16}, RegionSpec{"bar5", RegionSpace::Io, 5, 0, 16}};
}

DeviceInstance piix3Ide(std::uint8_t prog_if = 0x80) {
  DeviceInstance d;
  d.name = "piix3-ide@00:01.1";
  d.kind = "piix3-ide";
  d.pci = PciIdentity{0x8086, 0x7010, 0x010100u | prog_if, 0, 0};
  d.sbdf = kIdeSlot;
  d.bars[4] = BarInfo{BarKind::Io, 0, 16};
  return d;
}

// QEMU's isa-fdc: 0x3f0-0x3f5 and 0x3f7 (the policy draws 0x3f0+8).
BusDevice floppy() {
  DeviceInstance d = isaInstance("isa-fdc", 0x3f0, 6);
  d.name = "isa-fdc@0x3f0";
  d.isa_ports.push_back(PortRange{0x3f7, 1});
  return BusDevice{d, {RegionSpec{"fdc", RegionSpace::Io, -1, 0x3f0, 8}}};
}

DeviceBus ideBus(DeviceInstance instance = piix3Ide(), std::vector<RegionSpec> regions = ideRegions()) {
  auto bus = DeviceBus::create({BusDevice{std::move(instance), std::move(regions)}});
  if (!bus) ADD_FAILURE() << bus.error().message();
  return bus ? std::move(*bus) : DeviceBus{};
}

IoRequest config(std::uint32_t reg, std::uint64_t data, std::uint8_t size = 4) {
  IoRequest r;
  r.type = IoType::PciConfig;
  r.addr = pciConfigAddress(kIdeSlot, reg);
  r.dir = Dir::Write;
  r.data = data;
  r.size = size;
  return r;
}

void expectRoutes(DeviceBus& bus, std::uint64_t port, std::uint32_t region, std::uint64_t offset) {
  const BusTarget t = bus.route(pio(port, Dir::Read));
  EXPECT_EQ(t.device, 0) << std::hex << "port 0x" << port;
  EXPECT_EQ(t.region, region) << std::hex << "port 0x" << port;
  EXPECT_EQ(t.offset, offset) << std::hex << "port 0x" << port;
}

void expectUnclaimed(DeviceBus& bus, std::uint64_t port) {
  EXPECT_EQ(bus.route(pio(port, Dir::Read)).device, -1) << std::hex << "port 0x" << port;
}

TEST(LegacyIdeBus, CompatibilityChannelsBindTheirBarRegionsAtTheLegacyPorts) {
  auto bus = ideBus();
  for (std::uint64_t off = 0; off < 8; ++off) {
    expectRoutes(bus, 0x1f0 + off, kCmd0, off);
    expectRoutes(bus, 0x170 + off, kCmd1, off);
  }
  // libata addresses the control register as BAR 1/3 | 2: the region counts from 0x3f4/0x374.
  expectRoutes(bus, 0x3f6, kCtl0, 2);
  expectRoutes(bus, 0x376, kCtl1, 2);
  EXPECT_EQ(bus.regionBase(0, kCtl0), 0x3f4u);
  EXPECT_EQ(bus.regionBase(0, kCmd1), 0x170u);
  // The rest of the 4-port control span is not the channel's (0x3f7: floppy; 0x3f4/0x3f5 too).
  for (std::uint64_t port : {0x3f4, 0x3f5, 0x3f7, 0x374, 0x375, 0x377, 0x1f8, 0x1ef, 0x16f, 0x178}) expectUnclaimed(bus, port);
  EXPECT_TRUE(bus.route(pio(0x3f6, Dir::Read, 0, 0, 2)).crosses);
  EXPECT_TRUE(bus.portTableMatchesRanges());
}

TEST(LegacyIdeBus, LegacyPortsStayBoundWhateverTheGuestWritesToConfigSpace) {
  // Both encodings of the same config writes: Xen's decoded PCI_CONFIG and qtest's CF8/CFC cycles.
  for (const bool through_cf8 : {false, true}) {
    SCOPED_TRACE(through_cf8 ? "CF8/CFC" : "PCI_CONFIG");
    auto bus = ideBus();
    auto write = [&](std::uint32_t reg, std::uint64_t value, std::uint8_t size) {
      if (!through_cf8) return (void)bus.route(config(reg, value, size));
      bus.route(pio(0xcf8, Dir::Write, 0x80000000u | (kIdeSlot.raw() << 8) | (reg & 0xfc), 0, 4));
      bus.route(pio(0xcfc + (reg & 3), Dir::Write, value, 0, size));
    };
    expectUnclaimed(bus, 0xc000);  // bus master BAR: not programmed, I/O decode off
    write(0x10, 0xc101, 4);        // BAR 0 is read-only zero on the device, a guest may still write it
    write(0x14, 0xc111, 4);
    write(0x20, 0xc001, 4);        // BAR 4
    write(0x04, 0x1, 2);           // I/O decode on
    expectRoutes(bus, 0xc002, kBusMaster, 2);
    expectRoutes(bus, 0x1f7, kCmd0, 7);
    expectRoutes(bus, 0x3f6, kCtl0, 2);
    expectUnclaimed(bus, 0xc101);
    write(0x04, 0x0, 2);  // I/O decode off: QEMU and Xen still route the legacy ports by number
    expectUnclaimed(bus, 0xc002);
    expectRoutes(bus, 0x1f7, kCmd0, 7);
    expectRoutes(bus, 0x376, kCtl1, 2);
    EXPECT_TRUE(bus.portTableMatchesRanges());
  }
}

TEST(LegacyIdeBus, NativeChannelsUseTheirBarsAndOnlyCompatibilityChannelsTheLegacyPorts) {
  // prog-if 0x84: primary compatibility, secondary native through BARs 2/3.
  DeviceInstance d = piix3Ide(0x84);
  d.bars[2] = BarInfo{BarKind::Io, 0xc040, 8};
  d.bars[3] = BarInfo{BarKind::Io, 0xc04c, 4};
  d.command = 0x1;
  auto bus = ideBus(d);
  expectRoutes(bus, 0x1f7, kCmd0, 7);
  expectRoutes(bus, 0x3f6, kCtl0, 2);
  expectUnclaimed(bus, 0x177);
  expectUnclaimed(bus, 0x376);
  expectRoutes(bus, 0xc047, kCmd1, 7);
  expectRoutes(bus, 0xc04e, kCtl1, 2);
  EXPECT_FALSE(DeviceBus::legacyIdeWindow(d, 2).has_value());
  ASSERT_TRUE(DeviceBus::legacyIdeWindow(d, 1).has_value());
  EXPECT_EQ(DeviceBus::legacyIdeWindow(d, 1)->decode_start, 0x3f6u);
}

TEST(LegacyIdeBus, OnlyIdeFunctionsBarsZeroToThreeHaveALegacyWindow) {
  DeviceInstance ahci = piix3Ide(0x01);
  ahci.pci->class_code = 0x010601;  // SATA AHCI: BARs only
  EXPECT_FALSE(DeviceBus::legacyIdeWindow(ahci, 0).has_value());
  EXPECT_FALSE(DeviceBus::legacyIdeWindow(piix3Ide(), 4).has_value());
  EXPECT_FALSE(DeviceBus::legacyIdeWindow(piix3Ide(), 5).has_value());
  EXPECT_FALSE(DeviceBus::legacyIdeWindow(piix3Ide(), -1).has_value());
  DeviceInstance isa = isaInstance("isa-ide", 0x1f0, 8);
  EXPECT_FALSE(DeviceBus::legacyIdeWindow(isa, 0).has_value());
}

TEST(LegacyIdeBus, FloppyControllerKeeps0x3f7BesideTheIdeControlPort) {
  auto bus = DeviceBus::create({BusDevice{piix3Ide(), ideRegions()}, floppy()});
  ASSERT_TRUE(bus.has_value()) << bus.error().message();
  expectRoutes(*bus, 0x3f6, kCtl0, 2);
  const BusTarget fdc = bus->route(pio(0x3f7, Dir::Read));
  EXPECT_EQ(fdc.device, 1);
  EXPECT_EQ(fdc.offset, 7u);
  EXPECT_EQ(bus->route(pio(0x3f5, Dir::Read)).device, 1);
  EXPECT_EQ(bus->barConflicts(), 0u);
}

TEST(LegacyIdeBus, AnotherDeviceOnALegacyPortIsANamedErrorAtThePortReallyClaimed) {
  // A device decoding all of 0x3f0-0x3f7 collides with the IDE control port, not with 0x3f4/0x3f5.
  BusDevice wide{isaInstance("isa-fdc", 0x3f0, 8), {RegionSpec{"fdc", RegionSpace::Io, -1, 0x3f0, 8}}};
  wide.instance.name = "wide-fdc";
  auto bus = DeviceBus::create({BusDevice{piix3Ide(), ideRegions()}, wide});
  ASSERT_FALSE(bus.has_value());
  EXPECT_EQ(bus.error().message(), "wide-fdc: region 'fdc': overlaps region 'bar1' of piix3-ide@00:01.1 at 0x3f6");
}

TEST(LegacyIdeBus, AMemoryRegionOnALegacyChannelIsANamedError) {
  auto regions = ideRegions();
  regions[kCmd1].space = RegionSpace::Mem;
  auto bus = DeviceBus::create({BusDevice{piix3Ide(), regions}});
  ASSERT_FALSE(bus.has_value());
  EXPECT_EQ(bus.error().message(),
            "piix3-ide@00:01.1: region 'bar2': policy says memory but the device decodes it as the legacy I/O command block "
            "at 0x170 (BAR2 of a compatibility-mode IDE channel)");
}

TEST(LegacyIdeBus, ARegionWiderThanItsNativeBarIsANamedError) {
  auto regions = ideRegions();
  regions[kCmd0].length = 16;
  auto bus = DeviceBus::create({BusDevice{piix3Ide(), regions}});
  ASSERT_FALSE(bus.has_value());
  EXPECT_EQ(bus.error().message(),
            "piix3-ide@00:01.1: region 'bar0': region length 0x10 exceeds the 8 ports of the legacy command block at 0x1f0 "
            "(BAR0 of a compatibility-mode IDE channel)");
  regions = ideRegions();
  regions[kCtl1].length = 8;
  bus = DeviceBus::create({BusDevice{piix3Ide(), regions}});
  ASSERT_FALSE(bus.has_value());
  EXPECT_NE(bus.error().message().find("region 'bar3': region length 0x8 exceeds the 4 ports of the legacy control block at 0x376"),
            std::string::npos)
      << bus.error().message();
}

TEST(LegacyIdeBus, AControlRegionEndingBeforeTheControlPortStaysUnboundAndIsReported) {
  auto regions = ideRegions();
  regions[kCtl0].length = 2;  // offsets 0-1 of the 4-port block: the channel decodes only offset 2
  auto bus = ideBus(piix3Ide(), regions);
  expectUnclaimed(bus, 0x3f6);
  EXPECT_EQ(bus.regionBase(0, kCtl0), ~0ull);
  ASSERT_EQ(bus.unboundRegions().size(), 2u);  // and BAR 5
  EXPECT_EQ(bus.unboundRegions()[0].region, std::uint32_t(kCtl0));
  EXPECT_EQ(bus.unboundRegions()[0].reason,
            "region length 0x2 ends before the port the legacy control block at 0x3f6 (BAR1 of a compatibility-mode IDE channel) decodes");
}

TEST(LegacyIdeBus, ARegionForABarTheInstanceLacksStaysUnboundAndIsReported) {
  auto bus = ideBus();
  ASSERT_EQ(bus.unboundRegions().size(), 1u);
  EXPECT_EQ(bus.unboundRegions()[0].device, 0u);
  EXPECT_EQ(bus.unboundRegions()[0].region, std::uint32_t(kSidpr));
  EXPECT_EQ(bus.unboundRegions()[0].reason, "BAR5 is not implemented by this device instance");
  EXPECT_EQ(bus.regionBase(0, kSidpr), ~0ull);
  // Writing the absent BAR's register claims nothing either.
  bus.route(config(0x04, 0x1, 2));
  bus.route(config(0x24, 0xc081));
  for (std::uint64_t port = 0xc080; port < 0xc090; ++port) expectUnclaimed(bus, port);
  EXPECT_TRUE(bus.portTableMatchesRanges());
}

TEST(LegacyIdeBus, NativeChannelWithoutItsBarsLeavesItsRegionsUnbound) {
  // prog-if 0x85: both channels native, yet the instance implements no BAR 0-3: nothing to bind to.
  auto bus = ideBus(piix3Ide(0x85));
  ASSERT_EQ(bus.unboundRegions().size(), 5u);
  for (std::uint32_t r = 0; r < 4; ++r) {
    EXPECT_EQ(bus.unboundRegions()[r].region, r);
    EXPECT_EQ(bus.unboundRegions()[r].reason, "BAR" + std::to_string(r) + " is not implemented by this device instance");
  }
  for (std::uint64_t port : {0x1f0, 0x1f7, 0x3f6, 0x170, 0x376}) expectUnclaimed(bus, port);
}

TEST(LegacyIdeBus, APolicyNoRegisterRegionOfWhichBindsFailsTheAttach) {
  // Native channels and no BAR at all (a device list that carries no BARs): the policy would filter
  // nothing, so the attach fails closed and says why for each region.
  DeviceInstance bare = piix3Ide(0x85);
  bare.bars[4] = BarInfo{};
  auto bus = DeviceBus::create({BusDevice{bare, {RegionSpec{"bar0", RegionSpace::Io, 0, 0, 8}, RegionSpec{"bar4", RegionSpace::Io, 4, 0, 16}}}});
  ASSERT_FALSE(bus);
  EXPECT_EQ(bus.error().message(),
            "piix3-ide@00:01.1: no register region of the policy binds on this device instance, so it would filter nothing "
            "('bar0': BAR0 is not implemented by this device instance; 'bar4': BAR4 is not implemented by this device instance)");
}

TEST(LegacyIdeBus, EngineAttachesAPolicyWithAnAbsentBarAndFiltersTheRest) {
  DevicePolicy p;
  p.name = "ide";
  p.match.pci_vendor = 0x8086;
  p.match.pci_device = 0x7010;
  p.regions = ideRegions();
  GraphSpec g;
  g.name = "ata";
  g.anywhere.push_back(node("status", 7, Dir::Read, {}, kCmd0));
  g.anywhere.push_back(node("altstatus", 2, Dir::Read, {}, kCtl0));
  g.anywhere.push_back(node("sidpr-select", 0, Dir::Write, {}, kSidpr));
  p.graphs.push_back(g);
  auto e = makeEngine(p, piix3Ide());
  ASSERT_NE(e, nullptr);
  EXPECT_TRUE(e->onRequest(pio(0x1f7, Dir::Read)).forwarded());
  EXPECT_TRUE(e->onRequest(pio(0x3f6, Dir::Read)).forwarded());
  const Verdict refused = e->onRequest(pio(0x1f6, Dir::Write, 0xa0));  // no node for the device select
  EXPECT_EQ(refused.device, 0);
  EXPECT_FALSE(refused.forwarded());
  EXPECT_EQ(e->onRequest(pio(0x3f7, Dir::Read)).reason, Reason::Unclaimed);
  ASSERT_EQ(e->bus().unboundRegions().size(), 1u);
}

}  // namespace
}  // namespace iof
