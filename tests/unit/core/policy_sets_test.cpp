// Policy sets in the engine (docs/policy-format.md, "Policy sets"): the union of one driver's graphs
// accepts what any of them accepts; independent models intersect, each on its own bus.
#include <gtest/gtest.h>

#include "test_policies.h"

namespace iof {
namespace {

using namespace iof::testing;

ValueConstraint oneOf(std::vector<std::uint64_t> values) { return ValueConstraint{ValueKind::Set, 0, 0, std::move(values)}; }

// fifoDevice()'s protocol as a second build of the driver would write it: the window is called 'fifo'
// and the command byte is 0x4a (fifoDevice() sends 0x0a).
DevicePolicy otherBuild() {
  DevicePolicy p = fifoDevice();
  p.source = "linux-6.6/toy.json";
  p.regions[0].name = "fifo";
  p.graphs[0].name = "toy-6.6";
  p.graphs[0].channels[0].nodes[0].value = exact(0x4a);
  return p;
}

// An independent model of the same chip that divides it differently (the command block 0x100..0x105
// and a register at 0x107, as the 82077AA datasheet does; fifoDevice() has one 8-port window) and
// allows parameters 0..3 and 0x10, where fifoDevice() allows 0..7.
DevicePolicy datasheetModel() {
  DevicePolicy p;
  p.name = "toy-fifo";
  p.source = "datasheet/toy.json";
  p.match.isa_kind = "toy";
  p.combine = Combine::Intersect;
  p.regions.push_back(RegionSpec{"command", RegionSpace::Io, -1, 0x100, 6});
  p.regions.push_back(RegionSpec{"dir", RegionSpace::Io, -1, 0x107, 1});
  GraphSpec g;
  g.name = "toy-datasheet";
  ChannelSpec c;
  c.name = "cmd";
  c.nodes = {node("cmd", 5, Dir::Write, exact(0x0a)), node("param", 5, Dir::Write, oneOf({0, 1, 2, 3, 0x10})),
             node("r1", 5, Dir::Read), node("r2", 5, Dir::Read)};
  c.edges = {{0, 1}, {1, 2}, {2, 3}};
  c.entries = {0};
  c.exits = {3};
  g.channels.push_back(c);
  g.anywhere.push_back(node("status", 4, Dir::Read));
  p.graphs.push_back(g);
  return p;
}

std::unique_ptr<Engine> engineOf(std::vector<BoundDevice> devices) {
  auto e = Engine::create(std::move(devices));
  if (!e) throw std::runtime_error(e.error().message());
  return std::move(*e);
}

TEST(PolicySets, UnionAcceptsWhatEitherBuildsGraphAccepts) {
  auto merged = mergePolicies({fifoDevice(), otherBuild()});  // 'io' and 'fifo' are the same ports
  ASSERT_TRUE(merged) << merged.error().message();
  ASSERT_EQ(merged->regions.size(), 1u);
  // The guest runs one build: a graph that does not follow its sequence drops out, so each build's
  // sequence is tried on an engine of its own.
  for (const std::uint64_t command : {0x0a, 0x4a}) {
    auto e = makeEngine(*merged, isaInstance("toy", 0x100, 8));
    EXPECT_TRUE(e->onRequest(pio(0x105, Dir::Write, command)).forwarded()) << command;
    EXPECT_TRUE(e->onRequest(pio(0x105, Dir::Write, 0x01)).forwarded());
    EXPECT_TRUE(e->onRequest(pio(0x105, Dir::Read)).forwarded());
    EXPECT_TRUE(e->onRequest(pio(0x105, Dir::Read)).forwarded());
  }
  auto e = makeEngine(*merged, isaInstance("toy", 0x100, 8));
  EXPECT_FALSE(e->onRequest(pio(0x105, Dir::Write, 0x8a)).forwarded());  // neither build sends it
}

TEST(PolicySets, IntersectionRefusesWhatEitherSetRefusesAndNamesIt) {
  std::vector<BoundDevice> devices;
  devices.push_back(BoundDevice{isaInstance("toy", 0x100, 8), fifoDevice()});
  devices.push_back(BoundDevice{isaInstance("toy", 0x100, 8), datasheetModel(), 1, "datasheet"});
  auto e = engineOf(std::move(devices));
  ASSERT_EQ(e->setCount(), 2u);
  EXPECT_TRUE(e->onRequest(pio(0x105, Dir::Write, 0x0a)).forwarded());

  // 0x10: the datasheet allows it, the driver never writes it.
  Verdict v = e->onRequest(pio(0x105, Dir::Write, 0x10));
  EXPECT_EQ(v.action, Action::Refuse);
  EXPECT_EQ(v.reason, Reason::Value);
  ASSERT_GE(v.device, 0);
  EXPECT_EQ(e->device(std::size_t(v.device)).set_name, "union");
  // 0x05: the driver writes it, the datasheet does not allow it.
  v = e->onRequest(pio(0x105, Dir::Write, 0x05));
  EXPECT_EQ(v.action, Action::Refuse);
  ASSERT_GE(v.device, 0);
  EXPECT_EQ(e->device(std::size_t(v.device)).set_name, "datasheet");
  EXPECT_EQ(e->device(std::size_t(v.device)).policy.source, "datasheet/toy.json");

  // Neither refusal moved either set: both still expect the parameter, and accept one both allow.
  EXPECT_TRUE(e->onRequest(pio(0x105, Dir::Write, 0x01)).forwarded());
  EXPECT_TRUE(e->onRequest(pio(0x105, Dir::Read)).forwarded());
  EXPECT_TRUE(e->onRequest(pio(0x105, Dir::Read)).forwarded());
  EXPECT_EQ(e->counters(0).forwarded, 4u);  // a refused request is not counted as forwarded by the set that accepted it
  EXPECT_EQ(e->counters(1).forwarded, 4u);

  // Port 0x106 is the driver set's alone: the datasheet set does not claim it, so it does not refuse it.
  // (The datasheet's status read at 0x104 is claimed by both and both accept it.)
  EXPECT_TRUE(e->onRequest(pio(0x104, Dir::Read)).forwarded());
  v = e->onRequest(pio(0x106, Dir::Read));
  EXPECT_EQ(v.action, Action::Refuse);  // the driver's graphs never read it
  EXPECT_EQ(e->device(std::size_t(v.device)).set_name, "union");
  EXPECT_EQ(e->onRequest(pio(0x80, Dir::Write, 1)).reason, Reason::Unclaimed);  // nobody's
  EXPECT_EQ(e->counters().unclaimed, 1u);
}

TEST(PolicySets, MonitorModeReportsTheRefusingSetAndForwards) {
  std::vector<BoundDevice> devices;
  devices.push_back(BoundDevice{isaInstance("toy", 0x100, 8), fifoDevice()});
  devices.push_back(BoundDevice{isaInstance("toy", 0x100, 8), datasheetModel(), 1, "datasheet"});
  EngineOptions o;
  o.mode = Mode::Monitor;
  auto e = Engine::create(std::move(devices), o);
  ASSERT_TRUE(e) << e.error().message();
  EXPECT_TRUE((*e)->onRequest(pio(0x105, Dir::Write, 0x0a)).forwarded());
  const Verdict v = (*e)->onRequest(pio(0x105, Dir::Write, 0x05));
  EXPECT_TRUE(v.forwarded());
  EXPECT_TRUE(v.monitored);
  EXPECT_EQ((*e)->device(std::size_t(v.device)).set_name, "datasheet");
}

}  // namespace
}  // namespace iof
