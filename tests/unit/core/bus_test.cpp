// The device bus: ranges, BAR tracking from the guest's own config writes, CF8/CFC decoding.
#include <gtest/gtest.h>

#include "ioreq_filter/core/bus.h"
#include "ioreq_filter/core/engine.h"
#include "test_policies.h"

namespace iof {
namespace {

using namespace iof::testing;

const Sbdf kSlot{0, 0, 4, 0};

// An ne2k-pci-like device: BAR0 is 256 I/O ports, register 0x1f resets, 0x10 is the data port.
DevicePolicy nicPolicy() {
  DevicePolicy p;
  p.name = "nic";
  p.match.pci_vendor = 0x10ec;
  p.match.pci_device = 0x8029;
  p.regions.push_back(RegionSpec{"io", RegionSpace::Io, 0, 0, 256});
  GraphSpec g;
  g.name = "nic";
  g.anywhere.push_back(node("cr-read", 0, Dir::Read));
  g.anywhere.push_back(node("data-read", 0x10, Dir::Read));
  g.anywhere.push_back(node("reset-read", 0x1f, Dir::Read));
  p.graphs.push_back(g);
  return p;
}

DeviceInstance nicInstance() {
  DeviceInstance d;
  d.name = "nic";
  d.kind = "ne2k_pci";
  d.pci = PciIdentity{0x10ec, 0x8029, 0x020000, 0, 0};
  d.sbdf = kSlot;
  d.bars[0] = BarInfo{BarKind::Io, 0, 256};
  return d;
}

IoRequest cfg(std::uint32_t reg, Dir dir, std::uint64_t data = 0, std::uint8_t size = 4) {
  IoRequest r;
  r.type = IoType::PciConfig;
  r.addr = pciConfigAddress(kSlot, reg);
  r.dir = dir;
  r.data = data;
  r.size = size;
  return r;
}

std::unique_ptr<Engine> nic() { return makeEngine(nicPolicy(), nicInstance()); }

TEST(Bus, BarIsDecodedOnlyOnceProgrammedAndEnabled) {
  auto e = nic();
  EXPECT_EQ(e->onRequest(pio(0xc01f, Dir::Read)).reason, Reason::Unclaimed);
  ASSERT_TRUE(e->onRequest(cfg(0x10, Dir::Write, 0xc001)).forwarded());
  EXPECT_EQ(e->onRequest(pio(0xc01f, Dir::Read)).reason, Reason::Unclaimed);  // I/O decode still off
  ASSERT_TRUE(e->onRequest(cfg(0x04, Dir::Write, 0x1, 2)).forwarded());
  const auto v = e->onRequest(pio(0xc01f, Dir::Read));
  EXPECT_EQ(v.reason, Reason::None);
  EXPECT_EQ(v.device, 0);
  EXPECT_EQ(e->bus().regionBase(0, 0), 0xc000u);
}

TEST(Bus, CF8CFCCyclesDecodeLikeXen) {
  auto e = nic();
  // outl 0xcf8 0x80002010; outl 0xcfc 0xc001 — BAR0 of 00:04.0; then the command register, byte-wise.
  ASSERT_TRUE(e->onRequest(pio(0xcf8, Dir::Write, 0x80002010, 0, 4)).forwarded());
  ASSERT_TRUE(e->onRequest(pio(0xcfc, Dir::Write, 0xc101, 0, 4)).forwarded());
  ASSERT_TRUE(e->onRequest(pio(0xcf8, Dir::Write, 0x80002004, 0, 4)).forwarded());
  ASSERT_TRUE(e->onRequest(pio(0xcfc, Dir::Write, 0x01, 0, 1)).forwarded());
  EXPECT_EQ(e->bus().regionBase(0, 0), 0xc100u);
  IoRequest decoded;
  ASSERT_TRUE(e->bus().decodeConfigCycle(pio(0xcfe, Dir::Read, 0, 0, 2), decoded));
  EXPECT_EQ(decoded.type, IoType::PciConfig);
  EXPECT_EQ(decoded.addr, pciConfigAddress(kSlot, 0x06));
  // CF8 disabled (bit 31 clear): CFC is an ordinary port nobody filtered claims.
  ASSERT_TRUE(e->onRequest(pio(0xcf8, Dir::Write, 0x00002000, 0, 4)).forwarded());
  EXPECT_FALSE(e->bus().decodeConfigCycle(pio(0xcfc, Dir::Read, 0, 0, 4), decoded));
}

TEST(Bus, SizingMovingAndDisablingFollowTheGuest) {
  auto e = nic();
  ASSERT_TRUE(e->onRequest(cfg(0x04, Dir::Write, 0x1, 2)).forwarded());
  ASSERT_TRUE(e->onRequest(cfg(0x10, Dir::Write, 0xffffffff)).forwarded());  // sizing
  EXPECT_EQ(e->bus().regionBase(0, 0), ~0ull);                                // not a port address
  ASSERT_TRUE(e->onRequest(cfg(0x10, Dir::Write, 0xc001)).forwarded());
  EXPECT_TRUE(e->onRequest(pio(0xc000, Dir::Read)).device == 0);
  ASSERT_TRUE(e->onRequest(cfg(0x10, Dir::Write, 0xd001)).forwarded());  // moved
  EXPECT_EQ(e->onRequest(pio(0xc000, Dir::Read)).reason, Reason::Unclaimed);
  EXPECT_EQ(e->onRequest(pio(0xd000, Dir::Read)).device, 0);
  ASSERT_TRUE(e->onRequest(cfg(0x04, Dir::Write, 0x0, 2)).forwarded());  // decode off
  EXPECT_EQ(e->onRequest(pio(0xd000, Dir::Read)).reason, Reason::Unclaimed);
}

TEST(Bus, StandardConfigPolicyAllowsTheWalkNotTheSideDoors) {
  auto e = nic();
  for (std::uint32_t reg = 0; reg < 256; reg += 4) EXPECT_TRUE(e->onRequest(cfg(reg, Dir::Read)).forwarded()) << reg;
  EXPECT_TRUE(e->onRequest(cfg(0x3c, Dir::Write, 11, 1)).forwarded());   // interrupt line
  EXPECT_TRUE(e->onRequest(cfg(0x50, Dir::Write, 0x1, 2)).forwarded());  // a capability
  const auto bist = e->onRequest(cfg(0x0f, Dir::Write, 0x40, 1));        // start BIST
  EXPECT_EQ(bist.action, Action::Refuse);
  EXPECT_EQ(bist.device, 0);
  EXPECT_FALSE(e->onRequest(cfg(0x00, Dir::Write, 0xdeadbeef)).forwarded());
}

TEST(Bus, GuestMovingABarOntoAnotherDeviceIsNotTrusted) {
  auto p2 = fifoDevice();
  std::vector<BoundDevice> devices{BoundDevice{nicInstance(), nicPolicy()}, BoundDevice{isaInstance("toy", 0x100, 8), p2}};
  auto e = Engine::create(devices);
  ASSERT_TRUE(e.has_value()) << e.error().message();
  auto& engine = **e;
  ASSERT_TRUE(engine.onRequest(cfg(0x04, Dir::Write, 0x1, 2)).forwarded());
  ASSERT_TRUE(engine.onRequest(cfg(0x10, Dir::Write, 0x101)).forwarded());  // BAR over the toy's ports
  EXPECT_GE(engine.bus().barConflicts(), 1u);
  EXPECT_EQ(engine.onRequest(pio(0x105, Dir::Write, 0x0a)).device, 1);  // still the toy device
}

TEST(Bus, OverlappingFixedRangesAreANamedError) {
  std::vector<BoundDevice> devices{BoundDevice{isaInstance("toy", 0x100, 8), fifoDevice()},
                                   BoundDevice{isaInstance("toy", 0x104, 8), fifoDevice()}};
  devices[1].instance.name = "toy2";
  auto e = Engine::create(devices);
  ASSERT_FALSE(e.has_value());
  EXPECT_NE(e.error().message().find("overlaps"), std::string::npos) << e.error().message();
}

TEST(Bus, IsaRegionsFollowTheInstanceBase) {
  auto e = makeEngine(fifoDevice(), isaInstance("toy", 0x300, 8));  // policy default is 0x100
  EXPECT_EQ(e->onRequest(pio(0x105, Dir::Write, 0x0a)).reason, Reason::Unclaimed);
  EXPECT_TRUE(e->onRequest(pio(0x305, Dir::Write, 0x0a)).forwarded());
}

TEST(Bus, BarRegionMismatchIsANamedError) {
  auto inst = nicInstance();
  inst.bars[0] = BarInfo{BarKind::Mem32, 0, 4096};
  std::vector<BoundDevice> devices{BoundDevice{inst, nicPolicy()}};
  auto e = Engine::create(devices);
  ASSERT_FALSE(e.has_value());
  EXPECT_NE(e.error().message().find("BAR0"), std::string::npos) << e.error().message();
}

TEST(Bus, MmioRepMustStayInsideTheRegion) {
  DevicePolicy p;
  p.name = "mmio";
  p.match.pci_vendor = 0x8086;
  p.match.pci_device = 0x100e;
  p.regions.push_back(RegionSpec{"mmio", RegionSpace::Mem, 0, 0, 0x20000});
  GraphSpec g;
  g.name = "g";
  NodeSpec any = node("ctrl", 0, Dir::Write);
  any.size = 4;
  g.anywhere.push_back(any);
  p.graphs.push_back(g);
  DeviceInstance d = nicInstance();
  d.pci = PciIdentity{0x8086, 0x100e, 0x020000, 0, 0};
  d.bars[0] = BarInfo{BarKind::Mem32, 0xfebc0000, 0x20000};
  d.command = 0x2;
  auto e = makeEngine(p, d);
  IoRequest w;
  w.type = IoType::Copy;
  w.addr = 0xfebc0000;
  w.size = 4;
  w.dir = Dir::Write;
  EXPECT_TRUE(e->onRequest(w).forwarded());
  w.addr = 0xfebdfffc;
  w.count = 2;  // REP STOSD past the BAR's end
  EXPECT_EQ(e->onRequest(w).malformation, Malformation::CrossesRegion);
}

}  // namespace
}  // namespace iof

namespace iof {
namespace {

TEST(Bus, FixedRegionsClaimOnlyThePortsTheInstanceDecodes) {
  // A policy drawing the floppy controller as 0x3f0+8 must not take 0x3f6 (IDE's control port):
  // QEMU's isa-fdc decodes 0x3f0-0x3f5 and 0x3f7 only.
  auto p = testing::fifoDevice();
  p.regions[0] = RegionSpec{"io", RegionSpace::Io, -1, 0x3f0, 8};
  DeviceInstance d = testing::isaInstance("toy", 0x3f0, 6);
  d.isa_ports.push_back(PortRange{0x3f7, 1});
  auto e = testing::makeEngine(p, d);
  EXPECT_EQ(e->onRequest(testing::pio(0x3f6, Dir::Write, 0)).reason, Reason::Unclaimed);
  EXPECT_EQ(e->onRequest(testing::pio(0x3f4, Dir::Read)).device, 0);
  EXPECT_EQ(e->onRequest(testing::pio(0x3f7, Dir::Read)).device, 0);  // offset 7 of the same region
  EXPECT_EQ(e->onRequest(testing::pio(0x3f5, Dir::Read, 0, 0, 2)).malformation, Malformation::CrossesRegion);
}

}  // namespace
}  // namespace iof
