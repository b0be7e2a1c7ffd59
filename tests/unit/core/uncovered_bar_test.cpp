// Fail closed on whole devices: a BAR of a filtered device that its policy has no region for is
// refused (reason uncovered-region, counted), unless the policy declares a region there pass.
// QEMU's rtl8139 serves the same registers through I/O BAR 0 and MMIO BAR 1; a policy drawn from a
// driver that uses BAR 1 must not leave BAR 0 open as a side door.
#include <gtest/gtest.h>

#include "ioreq_filter/core/engine.h"
#include "test_policies.h"

namespace iof {
namespace {

using testing::makeEngine;
using testing::node;
using testing::pio;

constexpr std::uint64_t kIoBase = 0xc000, kMmioBase = 0xfebf1000;

// The rtl8139 layout: BAR 0 256 I/O ports, BAR 1 256 bytes of MMIO, both decoding from the start.
DeviceInstance rtl8139Like() {
  DeviceInstance d;
  d.name = "rtl8139@00:04.0";
  d.kind = "rtl8139";
  d.pci = PciIdentity{0x10ec, 0x8139, 0x020000, 0, 0};
  d.sbdf = Sbdf{0, 0, 4, 0};
  d.bars[0] = BarInfo{BarKind::Io, kIoBase, 256};
  d.bars[1] = BarInfo{BarKind::Mem32, kMmioBase, 256};
  d.command = 0x3;  // I/O and memory decode on
  return d;
}

// A policy with only the MMIO BAR: any read of the command register (0x37) is fine there.
DevicePolicy mmioOnlyPolicy() {
  DevicePolicy p;
  p.name = "rtl8139";
  p.match.pci_vendor = 0x10ec;
  p.match.pci_device = 0x8139;
  p.regions = {RegionSpec{"mmio1", RegionSpace::Mem, 1, 0, 256}};
  GraphSpec g;
  g.name = "8139cp";
  g.anywhere.push_back(node("cmd-read", 0x37, Dir::Read));
  p.graphs.push_back(g);
  return p;
}

IoRequest mmio(std::uint64_t addr, Dir dir, std::uint64_t data = 0) {
  IoRequest r;
  r.type = IoType::Copy;
  r.addr = addr;
  r.dir = dir;
  r.data = data;
  r.size = 1;
  return r;
}

TEST(UncoveredBar, ABarThePolicyDoesNotNameIsRefusedAndCounted) {
  auto e = makeEngine(mmioOnlyPolicy(), rtl8139Like());
  EXPECT_TRUE(e->onRequest(mmio(kMmioBase + 0x37, Dir::Read)).forwarded());
  // The same register through the I/O BAR: the side door is shut.
  const Verdict v = e->onRequest(pio(kIoBase + 0x37, Dir::Read));
  EXPECT_EQ(v.action, Action::Refuse);
  EXPECT_EQ(v.reason, Reason::Uncovered);
  EXPECT_STREQ(toString(v.reason), "uncovered-region");
  EXPECT_EQ(v.device, 0);
  const Verdict w = e->onRequest(pio(kIoBase + 0x37, Dir::Write, 0x10));
  EXPECT_EQ(w.reason, Reason::Uncovered);
  EXPECT_EQ(e->counters(0).refused_uncovered, 2u);
  EXPECT_EQ(e->counters(0).forwarded, 1u);
  EXPECT_EQ(e->counters().unclaimed, 0u);
  // The guard is a region of the bound device, named for messages, and not a policy region.
  const auto& regions = e->device(0).policy.regions;
  ASSERT_EQ(regions.size(), 2u);
  EXPECT_EQ(regions[1].name, "BAR0 (uncovered)");
  EXPECT_EQ(regions[1].use, RegionUse::Uncovered);
}

// The rest of a BAR past the policy's region in it is refused too, not let through as unclaimed.
TEST(UncoveredBar, ThePartOfABarPastItsRegionIsRefused) {
  auto p = mmioOnlyPolicy();
  p.regions[0].length = 0x80;  // BAR 1 is 256 bytes
  auto e = makeEngine(p, rtl8139Like());
  EXPECT_TRUE(e->onRequest(mmio(kMmioBase + 0x37, Dir::Read)).forwarded());
  const Verdict tail = e->onRequest(mmio(kMmioBase + 0x80, Dir::Write, 1));
  EXPECT_EQ(tail.action, Action::Refuse);
  EXPECT_EQ(tail.reason, Reason::Uncovered);
  EXPECT_EQ(e->onRequest(mmio(kMmioBase + 0xff, Dir::Read)).reason, Reason::Uncovered);
  EXPECT_EQ(e->onRequest(mmio(kMmioBase + 0x100, Dir::Read)).reason, Reason::Unclaimed);  // past the BAR
  EXPECT_EQ(e->counters(0).refused_uncovered, 2u);
  // An access running from the region into the tail is malformed, as at any region's end.
  IoRequest across = mmio(kMmioBase + 0x7e, Dir::Read);
  across.size = 4;
  EXPECT_EQ(e->onRequest(across).reason, Reason::Malformed);
  // The same through ports: an I/O BAR region of 0x20 in a 256-port BAR.
  DevicePolicy q = mmioOnlyPolicy();
  q.regions = {RegionSpec{"io0", RegionSpace::Io, 0, 0, 0x20}, RegionSpec{"mmio1", RegionSpace::Mem, 1, 0, 256}};
  q.graphs[0].anywhere[0].region = 1;
  auto f = makeEngine(q, rtl8139Like());
  EXPECT_EQ(f->onRequest(pio(kIoBase + 0x37, Dir::Read)).reason, Reason::Uncovered);
  EXPECT_EQ(f->onRequest(pio(kIoBase + 0x1f, Dir::Read)).reason, Reason::Order);  // in the region: the graph decides
  EXPECT_TRUE(f->bus().portTableMatchesRanges());
}

TEST(UncoveredBar, TheGuardFollowsTheBarWhenTheGuestMovesIt) {
  auto e = makeEngine(mmioOnlyPolicy(), rtl8139Like());
  // CF8/CFC: BAR 0 (config 0x10) of 00:04.0 moved to 0xd000.
  EXPECT_TRUE(e->onRequest(pio(0xcf8, Dir::Write, 0x80002010, 0, 4)).forwarded());
  EXPECT_TRUE(e->onRequest(pio(0xcfc, Dir::Write, 0xd001, 0, 4)).forwarded());
  EXPECT_EQ(e->onRequest(pio(0xd000, Dir::Write, 1)).reason, Reason::Uncovered);
  EXPECT_EQ(e->onRequest(pio(kIoBase, Dir::Write, 1)).reason, Reason::Unclaimed);  // nobody decodes there now
}

TEST(UncoveredBar, MonitorModeForwardsAndCountsIt) {
  EngineOptions o;
  o.mode = Mode::Monitor;
  auto e = makeEngine(mmioOnlyPolicy(), rtl8139Like(), o);
  const Verdict v = e->onRequest(pio(kIoBase + 0x37, Dir::Write, 0x10));
  EXPECT_TRUE(v.forwarded());
  EXPECT_TRUE(v.monitored);
  EXPECT_EQ(v.reason, Reason::Uncovered);
  EXPECT_EQ(e->counters(0).refused_uncovered, 1u);
  EXPECT_EQ(e->counters(0).monitored, 1u);
}

TEST(UncoveredBar, ARegionDeclaredPassIsForwardedUnfilteredAndCounted) {
  auto p = mmioOnlyPolicy();
  RegionSpec io{"io0", RegionSpace::Io, 0, 0, 256};
  io.use = RegionUse::Pass;
  io.pass_reason = "test: the I/O BAR is declared open";
  p.regions.push_back(io);
  auto e = makeEngine(p, rtl8139Like());
  const Verdict v = e->onRequest(pio(kIoBase + 0x37, Dir::Write, 0x10));
  EXPECT_TRUE(v.forwarded());
  EXPECT_EQ(v.reason, Reason::None);
  EXPECT_EQ(e->counters(0).passed, 1u);
  EXPECT_EQ(e->counters(0).refused_uncovered, 0u);
  EXPECT_EQ(e->device(0).policy.regions.size(), 2u);  // no guard: the policy covers both BARs
  // Running out of the pass region is still malformed.
  EXPECT_EQ(e->onRequest(pio(kIoBase + 0xff, Dir::Read, 0, 0, 2)).reason, Reason::Malformed);
}

TEST(UncoveredBar, AGuardDoesNotCountAsThePolicyBinding) {
  // A policy whose only register region is on a BAR the instance lacks still filters nothing of its own:
  // the attach fails as before, whatever guards the other BARs get.
  auto p = mmioOnlyPolicy();
  p.regions[0].bar = 5;
  std::vector<BoundDevice> devices{BoundDevice{rtl8139Like(), p}};
  auto e = Engine::create(std::move(devices));
  ASSERT_FALSE(e);
  EXPECT_NE(e.error().what.find("no register region of the policy binds"), std::string::npos) << e.error().message();
}

TEST(UncoveredBar, AnEngineMadeGuardIsNotAcceptedFromAPolicy) {
  auto p = mmioOnlyPolicy();
  RegionSpec io{"io0", RegionSpace::Io, 0, 0, 256};
  io.use = RegionUse::Uncovered;
  p.regions.push_back(io);
  EXPECT_FALSE(validate(p).empty());
  RegionSpec pass{"io0", RegionSpace::Io, 0, 0, 256};
  pass.use = RegionUse::Pass;  // and no reason
  p.regions.back() = pass;
  const auto problems = validate(p);
  ASSERT_FALSE(problems.empty());
  EXPECT_EQ(problems.front().what, "a pass region needs a reason: why may its accesses go unfiltered?");
}

}  // namespace
}  // namespace iof
