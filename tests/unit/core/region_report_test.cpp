// describeRegions(): every region and BAR of a bound device with what the engine does with it, read back
// from the engine (its guards, tails and unbound regions), not from the policy file.
#include <gtest/gtest.h>

#include "ioreq_filter/core/region_report.h"
#include "test_policies.h"

namespace iof {
namespace {

using testing::makeEngine;
using testing::node;

// Three BARs: I/O BAR 0 (256 ports), MMIO BAR 1 (256 bytes), MMIO BAR 2 (8 KiB, think MSI-X), decoding.
DeviceInstance threeBars() {
  DeviceInstance d;
  d.name = "nic@00:04.0";
  d.kind = "nic";
  d.pci = PciIdentity{0x10ec, 0x8139, 0x020000, 0, 0};
  d.sbdf = Sbdf{0, 0, 4, 0};
  d.bars[0] = BarInfo{BarKind::Io, 0xc000, 0x100};
  d.bars[1] = BarInfo{BarKind::Mem32, 0xfebf1000, 0x100};
  d.bars[2] = BarInfo{BarKind::Mem32, 0xfebf4000, 0x2000};
  d.command = 0x3;
  return d;
}

// Region 0 filters half of BAR 1; region 1 declares BAR 2 pass; region 2 names a BAR the instance lacks.
DevicePolicy policy() {
  DevicePolicy p;
  p.name = "nic";
  p.match.pci_vendor = 0x10ec;
  p.match.pci_device = 0x8139;
  p.regions = {RegionSpec{"mmio1", RegionSpace::Mem, 1, 0, 0x80}, RegionSpec{"msix", RegionSpace::Mem, 2, 0, 0x2000},
               RegionSpec{"ghost", RegionSpace::Mem, 5, 0, 0x10}};
  p.regions[1].use = RegionUse::Pass;
  p.regions[1].pass_reason = "written by the PCI core";
  GraphSpec g;
  g.name = "drv";
  g.anywhere.push_back(node("status", 0x10, Dir::Read));
  p.graphs.push_back(g);
  return p;
}

TEST(RegionReport, EveryBarWithItsStatusInBarOrder) {
  auto e = makeEngine(policy(), threeBars());
  const auto report = describeRegions(*e);
  ASSERT_EQ(report.size(), 1u);
  const auto& rows = report[0].rows;
  std::vector<std::string> seen;
  for (const auto& r : rows) seen.push_back(r.name + " = " + toString(r.status));
  EXPECT_EQ(seen, (std::vector<std::string>{"BAR0 (uncovered) = refused: uncovered", "mmio1 = filtered", "BAR1 tail = refused: uncovered",
                                            "msix = pass", "ghost = unbound", "config space = filtered"}));
  EXPECT_EQ(rows[0].address, 0xc000u);
  EXPECT_EQ(rows[0].length, 0x100u);
  EXPECT_EQ(rows[0].reason, "no policy region names BAR0");
  EXPECT_EQ(rows[1].graphs, std::vector<std::string>{"drv"});
  EXPECT_EQ(rows[2].offset, 0x80u);
  EXPECT_EQ(rows[2].length, 0x80u);
  EXPECT_EQ(rows[2].address, 0xfebf1080u);
  EXPECT_EQ(rows[3].reason, "written by the PCI core");
  EXPECT_EQ(rows[4].reason, "BAR5 is not implemented by this device instance");
  EXPECT_EQ(rows[4].address, kNotDecoded);
  EXPECT_TRUE(rows[5].standard_config);
}

TEST(RegionReport, AFilteredRegionNoGraphReachesIsSaidToBe) {
  auto p = policy();
  p.graphs[0].anywhere[0].region = 1;  // the only node moves out of mmio1 - not allowed into a pass region
  p.regions[1].use = RegionUse::Filter;
  auto e = makeEngine(p, threeBars());
  const auto rows = describeRegions(*e)[0].rows;
  ASSERT_EQ(rows[1].name, "mmio1");
  EXPECT_TRUE(rows[1].graphs.empty());
  EXPECT_FALSE(rows[1].graphless);
}

TEST(RegionReport, DecodingOffLeavesAddressesUnknown) {
  auto d = threeBars();
  d.command = 0;
  auto e = makeEngine(policy(), d);
  const auto report = describeRegions(*e);
  for (const auto& r : report[0].rows) EXPECT_EQ(r.address, kNotDecoded) << r.name;
}

}  // namespace
}  // namespace iof
