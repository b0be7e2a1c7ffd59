// Engine semantics, one rule per test (docs/architecture.md, "Semantics").
#include <gtest/gtest.h>

#include "ioreq_filter/core/engine.h"
#include "test_policies.h"

namespace iof {
namespace {

using namespace iof::testing;

constexpr std::uint64_t kBase = 0x100;
constexpr std::uint64_t kFifo = kBase + 5, kStatus = kBase + 4, kControl = kBase + 2;

std::unique_ptr<Engine> toy(EngineOptions o = {}) { return makeEngine(fifoDevice(), isaInstance("toy", kBase, 8), o); }

// refuse-and-pause was advertised but never honoured (no pause DMOP: the relay only counted it), so a
// policy asking for it is refused rather than silently getting less.
TEST(Engine, RefuseAndPauseIsRefusedWithTheReason) {
  auto p = fifoDevice();
  p.on_violation = ViolationAction::RefuseAndPause;
  std::vector<BoundDevice> devices{BoundDevice{isaInstance("toy", 0x100, 8), p}};
  auto e = Engine::create(std::move(devices));
  ASSERT_FALSE(e);
  EXPECT_NE(e.error().what.find("on_violation: refuse-and-pause is not available"), std::string::npos) << e.error().message();
}

TEST(Engine, ForwardsTheDriversSequence) {
  auto e = toy();
  for (const auto& r : {pio(kFifo, Dir::Write, 0x0a), pio(kStatus, Dir::Read), pio(kFifo, Dir::Write, 0x01),
                        pio(kFifo, Dir::Read), pio(kFifo, Dir::Read), pio(kFifo, Dir::Write, 0x0a)}) {
    const auto v = e->onRequest(r);
    EXPECT_TRUE(v.forwarded()) << describe(r) << ": " << toString(v.reason);
    EXPECT_EQ(v.device, 0);
  }
  EXPECT_EQ(e->counters(0).forwarded, 6u);
}

TEST(Engine, RefusesOutOfOrderAccess) {
  auto e = toy();
  const auto v = e->onRequest(pio(kFifo, Dir::Read));  // a result read with no command
  EXPECT_EQ(v.action, Action::Refuse);
  EXPECT_EQ(v.reason, Reason::Order);
  EXPECT_EQ(e->counters(0).refused_order, 1u);
}

TEST(Engine, RefusesWrongValue) {
  auto e = toy();
  EXPECT_EQ(e->onRequest(pio(kFifo, Dir::Write, 0x0b)).reason, Reason::Value);
  ASSERT_TRUE(e->onRequest(pio(kFifo, Dir::Write, 0x0a)).forwarded());
  EXPECT_EQ(e->onRequest(pio(kFifo, Dir::Write, 0x42)).reason, Reason::Value);  // parameter with bits 7:3 set
}

TEST(Engine, RefusalLeavesTheCursorWhereItWas) {
  auto e = toy();
  ASSERT_TRUE(e->onRequest(pio(kFifo, Dir::Write, 0x0a)).forwarded());
  EXPECT_FALSE(e->onRequest(pio(kFifo, Dir::Read)).forwarded());  // result before the parameter
  EXPECT_TRUE(e->onRequest(pio(kFifo, Dir::Write, 0x01)).forwarded());
  EXPECT_NE(e->expectedNext(0).find("r1"), std::string::npos);
}

TEST(Engine, VenomFloodSplitAcrossTwoVcpusIsRefused) {
  auto e = toy();
  ASSERT_TRUE(e->onRequest(pio(kFifo, Dir::Write, 0x0a, 0)).forwarded());
  ASSERT_TRUE(e->onRequest(pio(kFifo, Dir::Write, 0x00, 1)).forwarded());  // the one parameter, from vCPU 1
  // Every further FIFO write, whichever vCPU sends it, meets the same device cursor.
  for (int i = 0; i < 64; ++i) {
    const auto v = e->onRequest(pio(kFifo, Dir::Write, 0x00, std::uint16_t(i % 2)));
    ASSERT_EQ(v.action, Action::Refuse) << "push " << i;
    EXPECT_EQ(v.reason, Reason::Order);
  }
}

TEST(Engine, StatelessAccessesDoNotMoveTheCursor) {
  auto e = toy();
  ASSERT_TRUE(e->onRequest(pio(kFifo, Dir::Write, 0x0a)).forwarded());
  for (int i = 0; i < 1000; ++i) ASSERT_TRUE(e->onRequest(pio(kStatus, Dir::Read, 0, 1)).forwarded());
  ASSERT_TRUE(e->onRequest(pio(kControl, Dir::Write, 0x0c)).forwarded());  // motor on, not a reset
  EXPECT_TRUE(e->onRequest(pio(kFifo, Dir::Write, 0x01)).forwarded());   // still expects the parameter
}

TEST(Engine, ResetRestartsTheSequenceFromAnyState) {
  auto e = toy();
  ASSERT_TRUE(e->onRequest(pio(kFifo, Dir::Write, 0x0a)).forwarded());
  const auto v = e->onRequest(pio(kControl, Dir::Write, 0x00));  // DOR-style reset, mid-command
  ASSERT_TRUE(v.forwarded());
  EXPECT_EQ(e->counters(0).resyncs, 1u);
  EXPECT_FALSE(e->onRequest(pio(kFifo, Dir::Write, 0x01)).forwarded());  // the old parameter is gone
  EXPECT_TRUE(e->onRequest(pio(kFifo, Dir::Write, 0x0a)).forwarded());   // a new command starts
}

TEST(Engine, MidStreamAttachNarrowsFromEveryNode) {
  // Attached while the driver is between the parameter and the results.
  auto e = toy(EngineOptions{Mode::Enforce, StartState::Unsynchronised});
  EXPECT_TRUE(e->onRequest(pio(kFifo, Dir::Read)).forwarded());   // r1 (or r2)
  EXPECT_TRUE(e->onRequest(pio(kFifo, Dir::Read)).forwarded());   // r2
  EXPECT_FALSE(e->onRequest(pio(kFifo, Dir::Read)).forwarded());  // nothing reads three results
  EXPECT_FALSE(e->onRequest(pio(kFifo, Dir::Write, 0x01)).forwarded());  // a parameter needs a command first
  EXPECT_TRUE(e->onRequest(pio(kFifo, Dir::Write, 0x0a)).forwarded());
}

TEST(Engine, MidStreamAttachStillBoundsAFlood) {
  auto e = toy(EngineOptions{Mode::Enforce, StartState::Unsynchronised});
  EXPECT_TRUE(e->onRequest(pio(kFifo, Dir::Write, 0x01)).forwarded());   // could be the parameter
  EXPECT_FALSE(e->onRequest(pio(kFifo, Dir::Write, 0x01)).forwarded());  // but not twice
}

TEST(Engine, RepetitionBoundRefusesTheFlood) {
  auto e = makeEngine(loopDevice(3), isaInstance("toy", kBase, 8));
  ASSERT_TRUE(e->onRequest(pio(kFifo, Dir::Write, 0x0a)).forwarded());
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(e->onRequest(pio(kFifo, Dir::Write, 0x01, std::uint16_t(i))).forwarded()) << i;
  const auto v = e->onRequest(pio(kFifo, Dir::Write, 0x01, 1));
  EXPECT_EQ(v.action, Action::Refuse);
  EXPECT_EQ(v.reason, Reason::Count);
  EXPECT_EQ(e->counters(0).refused_count, 1u);
  EXPECT_TRUE(e->onRequest(pio(kFifo, Dir::Read)).forwarded());  // the results still may follow
}

TEST(Engine, LoopCounterRestartsWhenTheLoopIsEnteredAgain) {
  auto e = makeEngine(loopDevice(2), isaInstance("toy", kBase, 8));
  for (int round = 0; round < 3; ++round) {
    ASSERT_TRUE(e->onRequest(pio(kFifo, Dir::Write, 0x0a)).forwarded());
    ASSERT_TRUE(e->onRequest(pio(kFifo, Dir::Write, 0x01)).forwarded());
    ASSERT_TRUE(e->onRequest(pio(kFifo, Dir::Write, 0x01)).forwarded());
    ASSERT_TRUE(e->onRequest(pio(kFifo, Dir::Read)).forwarded());
    ASSERT_TRUE(e->onRequest(pio(kFifo, Dir::Read)).forwarded());
  }
}

TEST(Engine, RepRequestIsCountedRepByRepAndRolledBackWhole) {
  auto e = makeEngine(loopDevice(3), isaInstance("toy", kBase, 8));
  ASSERT_TRUE(e->onRequest(pio(kFifo, Dir::Write, 0x0a)).forwarded());
  auto rep = pio(kFifo, Dir::Write, 0x01);
  rep.count = 4;  // rep outsb of 4 parameters: one too many
  EXPECT_EQ(e->onRequest(rep).reason, Reason::Count);
  rep.count = 3;
  EXPECT_TRUE(e->onRequest(rep).forwarded());  // the refused REP moved nothing
}

TEST(Engine, PointerDataWithValueConstraintNeedsTheData) {
  auto e = toy();
  auto r = pio(kFifo, Dir::Write, 0x12345000);
  r.data_is_ptr = true;
  r.count = 2;
  EXPECT_EQ(e->onRequest(r).reason, Reason::NeedsData);
  EXPECT_EQ(e->counters(0).needs_data, 1u);
}

TEST(Engine, MalformedAndUnclaimedRequests) {
  auto e = toy();
  auto bad = pio(kFifo, Dir::Write);
  bad.size = 3;
  const auto v = e->onRequest(bad);
  EXPECT_EQ(v.reason, Reason::Malformed);
  EXPECT_EQ(v.malformation, Malformation::BadSize);
  EXPECT_EQ(e->counters().malformed, 1u);
  const auto u = e->onRequest(pio(0x80, Dir::Write, 0));
  EXPECT_TRUE(u.forwarded());
  EXPECT_EQ(u.reason, Reason::Unclaimed);
  auto crossing = pio(kBase + 7, Dir::Read, 0, 0, 2);  // last port + one past the region
  EXPECT_EQ(e->onRequest(crossing).malformation, Malformation::CrossesRegion);
}

TEST(Engine, MonitorModeForwardsAndResynchronises) {
  auto e = toy(EngineOptions{Mode::Monitor});
  const auto v = e->onRequest(pio(kFifo, Dir::Read));
  EXPECT_TRUE(v.forwarded());
  EXPECT_TRUE(v.monitored);
  EXPECT_EQ(v.reason, Reason::Order);
  EXPECT_EQ(e->counters(0).monitored, 1u);
  e->setMode(Mode::Enforce);
  EXPECT_EQ(e->mode(), Mode::Enforce);
  EXPECT_TRUE(e->onRequest(pio(kFifo, Dir::Read)).forwarded());  // unsynchronised: could be r2
}

TEST(Engine, LearnModeRecordsMissingTransitions) {
  auto e = toy(EngineOptions{Mode::Learn});
  ASSERT_TRUE(e->onRequest(pio(kFifo, Dir::Write, 0x0a)).forwarded());
  ASSERT_TRUE(e->onRequest(pio(kFifo, Dir::Write, 0x0b)).forwarded());  // value the graph lacks
  const auto events = e->takeLearnEvents();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].offset, 5u);
  EXPECT_EQ(events[0].value, 0x0bu);
  EXPECT_EQ(events[0].previous_node, 0);  // stood at "cmd"
  EXPECT_TRUE(e->takeLearnEvents().empty());
}

TEST(Engine, StopGapRuleCountsAfterTrigger) {
  DevicePolicy p;
  p.name = "rules-only";
  p.match.isa_kind = "toy";
  p.regions.push_back(RegionSpec{"io", RegionSpace::Io, -1, 0x100, 8});
  StopGapRule r;
  r.id = "no-flood-after-0a";
  r.after = AccessPattern{0, 5, 5, 1, Dir::Write, exact(0x0a)};
  r.then = AccessPattern{0, 5, 5, 1, Dir::Write, {}};
  r.until = AccessPattern{0, 5, 5, 1, Dir::Read, {}};
  r.max = 1;
  p.rules.push_back(r);
  StopGapRule deny;
  deny.id = "no-port-0";
  deny.deny = AccessPattern{0, 0, 0, 0, std::nullopt, {}};
  p.rules.push_back(deny);
  auto e = makeEngine(p, isaInstance("toy", kBase, 8));
  EXPECT_TRUE(e->onRequest(pio(kFifo, Dir::Write, 0x33)).forwarded());  // not armed
  EXPECT_TRUE(e->onRequest(pio(kFifo, Dir::Write, 0x0a)).forwarded());
  EXPECT_TRUE(e->onRequest(pio(kFifo, Dir::Write, 0x42)).forwarded());
  const auto v = e->onRequest(pio(kFifo, Dir::Write, 0x42));
  EXPECT_EQ(v.reason, Reason::StopGap);
  EXPECT_EQ(v.rule, 0);
  EXPECT_TRUE(e->onRequest(pio(kFifo, Dir::Read)).forwarded());  // disarms
  EXPECT_TRUE(e->onRequest(pio(kFifo, Dir::Write, 0x42)).forwarded());
  EXPECT_EQ(e->onRequest(pio(kBase, Dir::Read)).rule, 1);
}

TEST(Engine, EscalationFollowsThePolicy) {
  auto p = fifoDevice();
  p.on_violation = ViolationAction::RefuseAndCrash;
  auto e = makeEngine(p, isaInstance("toy", kBase, 8));
  EXPECT_EQ(e->onRequest(pio(kFifo, Dir::Read)).escalation, Escalation::Crash);
}

// Two independent channels (e.g. a NIC's TX path and its interrupt path) interleave freely.
TEST(Engine, IndependentChannelsInterleave) {
  auto p = fifoDevice();
  ChannelSpec irq;
  irq.name = "irq";
  irq.nodes = {node("isr-read", 6, Dir::Read), node("isr-ack", 6, Dir::Write)};
  irq.edges = {{0, 1}};
  irq.entries = {0};
  irq.exits = {1};
  p.graphs[0].channels.push_back(irq);
  auto e = makeEngine(p, isaInstance("toy", kBase, 8));
  ASSERT_TRUE(e->onRequest(pio(kFifo, Dir::Write, 0x0a, 0)).forwarded());
  ASSERT_TRUE(e->onRequest(pio(kBase + 6, Dir::Read, 0, 1)).forwarded());
  ASSERT_TRUE(e->onRequest(pio(kFifo, Dir::Write, 0x01, 0)).forwarded());
  ASSERT_TRUE(e->onRequest(pio(kBase + 6, Dir::Write, 0xff, 1)).forwarded());
  EXPECT_FALSE(e->onRequest(pio(kBase + 6, Dir::Write, 0xff, 1)).forwarded());  // ack twice
  EXPECT_TRUE(e->onRequest(pio(kFifo, Dir::Read, 0, 0)).forwarded());
}

TEST(Engine, RegisterInTwoChannelsIsRejected) {
  auto p = fifoDevice();
  ChannelSpec other;
  other.name = "other";
  other.nodes = {node("steal-fifo", 5, Dir::Write)};
  other.entries = {0};
  p.graphs[0].channels.push_back(other);
  std::vector<BoundDevice> devices{BoundDevice{isaInstance("toy", kBase, 8), p}};
  auto e = Engine::create(devices);
  ASSERT_FALSE(e.has_value());
  EXPECT_NE(e.error().what.find("already belongs to channel 'cmd'"), std::string::npos) << e.error().message();
}

// Union of two graphs (e.g. firmware and OS driver): a request passes if one live graph accepts;
// a graph that does not follow the device stops voting until a reset.
TEST(Engine, UnionNamesTheAcceptingGraphAndDropsTheOther) {
  auto p = fifoDevice();
  GraphSpec firmware = p.graphs[0];
  firmware.name = "firmware";
  firmware.channels[0].nodes[0].value = ValueConstraint{ValueKind::Set, 0, 0, {0x0a, 0x0e}};
  p.graphs.push_back(firmware);
  auto e = makeEngine(p, isaInstance("toy", kBase, 8));
  auto v = e->onRequest(pio(kFifo, Dir::Write, 0x0e));  // only the firmware graph knows 0x0e
  ASSERT_TRUE(v.forwarded());
  EXPECT_EQ(e->graphName(0, v.graph), "firmware");
  EXPECT_EQ(e->counters(0).graph_deaths, 1u);
  v = e->onRequest(pio(kFifo, Dir::Write, 0x01));
  EXPECT_EQ(e->graphName(0, v.graph), "firmware");
  ASSERT_TRUE(e->onRequest(pio(kControl, Dir::Write, 0x00)).forwarded());  // reset revives both
  v = e->onRequest(pio(kFifo, Dir::Write, 0x0a));
  EXPECT_EQ(e->graphName(0, v.graph), "toy");
}

TEST(Engine, CannotSwitchGraphsToRestartASequence) {
  auto p = fifoDevice();
  GraphSpec second = p.graphs[0];
  second.name = "second";
  second.anywhere.push_back(node("extra", 3, Dir::Write));  // something only "second" allows
  p.graphs.push_back(second);
  auto e = makeEngine(p, isaInstance("toy", kBase, 8));
  ASSERT_TRUE(e->onRequest(pio(kFifo, Dir::Write, 0x0a)).forwarded());
  ASSERT_TRUE(e->onRequest(pio(kFifo, Dir::Write, 0x01)).forwarded());
  ASSERT_TRUE(e->onRequest(pio(kBase + 3, Dir::Write, 0)).forwarded());  // "toy" stops following
  // "toy" would have accepted a new command from idle; being dead it cannot, and "second" expects results.
  EXPECT_FALSE(e->onRequest(pio(kFifo, Dir::Write, 0x0a)).forwarded());
}

TEST(Engine, ExpectedNextListsSuccessors) {
  auto e = toy();
  EXPECT_NE(e->expectedNext(0).find("toy:cmd/cmd (write io+0x5)"), std::string::npos) << e->expectedNext(0);
}

}  // namespace
}  // namespace iof
