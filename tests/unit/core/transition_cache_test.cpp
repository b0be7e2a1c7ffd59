// The transition cache is an optimisation only: an engine with it must say exactly what an engine
// without it says, request by request (verdicts, counters, what it expects next, learn events).
#include <gtest/gtest.h>

#include <random>

#include "ioreq_filter/core/engine.h"
#include "test_policies.h"

namespace iof {
namespace {

using namespace iof::testing;

constexpr std::uint64_t kBase = 0x100;
constexpr std::uint64_t kFifo = kBase + 5;

EngineOptions withCache(std::size_t entries, EngineOptions o = {}) {
  o.transition_cache = entries;
  return o;
}

void runRound(Engine& e, int params) {
  ASSERT_TRUE(e.onRequest(pio(kFifo, Dir::Write, 0x0a)).forwarded());
  for (int i = 0; i < params; ++i) ASSERT_TRUE(e.onRequest(pio(kFifo, Dir::Write, 0x01)).forwarded()) << i;
  ASSERT_TRUE(e.onRequest(pio(kFifo, Dir::Read)).forwarded());
  ASSERT_TRUE(e.onRequest(pio(kFifo, Dir::Read)).forwarded());
}

TEST(TransitionCache, RepeatedSequenceIsServedFromTheCache) {
  auto e = makeEngine(fifoDevice(), isaInstance("toy", kBase, 8));
  for (int round = 0; round < 10; ++round) runRound(*e, 1);
  EXPECT_GT(e->counters().transition_cache_hits, 30u);
  EXPECT_LE(e->counters().transition_cache_misses, 5u);
}

TEST(TransitionCache, CachedLoopStepStillStopsAtTheBound) {
  auto e = makeEngine(loopDevice(3), isaInstance("toy", kBase, 8));
  for (int round = 0; round < 3; ++round) runRound(*e, 3);  // every step of the loop is cached now
  const auto hits = e->counters().transition_cache_hits;
  ASSERT_TRUE(e->onRequest(pio(kFifo, Dir::Write, 0x0a)).forwarded());
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(e->onRequest(pio(kFifo, Dir::Write, 0x01)).forwarded()) << i;
  EXPECT_GE(e->counters().transition_cache_hits, hits + 4);
  const auto v = e->onRequest(pio(kFifo, Dir::Write, 0x01));
  EXPECT_EQ(v.action, Action::Refuse);
  EXPECT_EQ(v.reason, Reason::Count);
}

TEST(TransitionCache, CachedLoopEntryRestartsTheCount) {
  // cmd -> param: the cached step into the loop header must restart its count each round, or the
  // second round would be refused as a continuation of the first.
  auto e = makeEngine(loopDevice(2), isaInstance("toy", kBase, 8));
  for (int round = 0; round < 5; ++round) runRound(*e, 2);
}

TEST(TransitionCache, CachedReentryFromIdleRestartsTheCount) {
  // param is an entry and an exit of its own loop: after two params the channel may go idle and a
  // new param starts afresh (count 1), although the cursor never left the loop's members.
  DevicePolicy p = loopDevice(2);
  auto& c = p.graphs[0].channels[0];
  c.entries.push_back(1);
  c.exits.push_back(1);
  auto e = makeEngine(p, isaInstance("toy", kBase, 8));
  for (int i = 0; i < 6; ++i) ASSERT_TRUE(e->onRequest(pio(kFifo, Dir::Write, 0x01)).forwarded()) << i;
  EXPECT_GT(e->counters().transition_cache_hits, 2u);
}

TEST(TransitionCache, ResynchronisedCursorDoesNotReuseItsOldPosition) {
  auto e = makeEngine(fifoDevice(), isaInstance("toy", kBase, 8));
  runRound(*e, 1);
  ASSERT_TRUE(e->onRequest(pio(kFifo, Dir::Write, 0x0a)).forwarded());
  e->resynchronise();
  // Unsynchronised: any node is possible, so a result read is accepted although the cached step
  // from "after cmd" would only allow a parameter.
  EXPECT_TRUE(e->onRequest(pio(kFifo, Dir::Read)).forwarded());
}

TEST(TransitionCache, RefusedRepRollsBackTheCachedPosition) {
  auto e = makeEngine(loopDevice(3), isaInstance("toy", kBase, 8));
  runRound(*e, 3);
  ASSERT_TRUE(e->onRequest(pio(kFifo, Dir::Write, 0x0a)).forwarded());
  auto rep = pio(kFifo, Dir::Write, 0x01);
  rep.count = 4;
  EXPECT_EQ(e->onRequest(rep).reason, Reason::Count);
  rep.count = 3;
  EXPECT_TRUE(e->onRequest(rep).forwarded());
  EXPECT_TRUE(e->onRequest(pio(kFifo, Dir::Read)).forwarded());
}

// Random policies (graphs, channels, loops, resets, stateless nodes, stop-gap rules) and random
// request streams that mostly follow the policy, replayed through engines with and without the
// cache. A budget of 2 configurations exercises the fallback when the table is full.
class RandomPolicy {
 public:
  explicit RandomPolicy(std::uint32_t seed) : rng_(seed) {}

  DevicePolicy make() {
    DevicePolicy p;
    p.name = "random";
    p.source = "random";
    p.match.isa_kind = "toy";
    p.regions.push_back(RegionSpec{"io", RegionSpace::Io, -1, kBase, 8});
    const int graphs = pick(1, 2);
    for (int g = 0; g < graphs; ++g) {
      GraphSpec graph;
      graph.name = "g" + std::to_string(g);
      const int channels = pick(1, 2);
      graph.channels.resize(std::size_t(channels));
      for (int c = 0; c < channels; ++c) graph.channels[std::size_t(c)].name = "c" + std::to_string(c);
      // Each register belongs to one channel of the graph.
      std::vector<int> owner(16);
      for (auto& o : owner) o = pick(0, channels - 1);
      for (int c = 0; c < channels; ++c) {
        auto& ch = graph.channels[std::size_t(c)];
        const int nodes = pick(2, 9);
        for (int n = 0; n < nodes; ++n) {
          int r = pick(0, 15);
          for (int tries = 0; owner[std::size_t(r)] != c && tries < 32; ++tries) r = pick(0, 15);
          if (owner[std::size_t(r)] != c) owner[std::size_t(r)] = c;  // claim a register no node uses yet
          ch.nodes.push_back(randomNode("n" + std::to_string(n), std::uint64_t(r / 2), r % 2 ? Dir::Read : Dir::Write));
          if (ch.nodes.back().dir == Dir::Write && chance(0.1)) ch.nodes.back().reset = true;
        }
        for (std::uint32_t a = 0; a < ch.nodes.size(); ++a)
          for (int s = pick(0, 2); s > 0; --s) ch.edges.push_back({a, std::uint32_t(pick(0, nodes - 1))});
        ch.entries.push_back(std::uint32_t(pick(0, nodes - 1)));
        if (chance(0.5)) ch.entries.push_back(std::uint32_t(pick(0, nodes - 1)));
        std::sort(ch.entries.begin(), ch.entries.end());
        ch.entries.erase(std::unique(ch.entries.begin(), ch.entries.end()), ch.entries.end());
        for (std::uint32_t n = 0; n < ch.nodes.size(); ++n)
          if (chance(0.3)) ch.exits.push_back(n);
        for (std::uint32_t h = 0; h < ch.nodes.size(); ++h) {
          if (!chance(0.35)) continue;
          LoopSpec l;
          l.id = "l" + std::to_string(h);
          l.header = h;
          l.members = {h};
          if (chance(0.5)) {
            const auto other = std::uint32_t(pick(0, nodes - 1));
            if (other != h) {
              l.members.push_back(other);
              ch.edges.push_back({h, other});
              ch.edges.push_back({other, h});
            } else {
              ch.edges.push_back({h, h});
            }
          } else {
            ch.edges.push_back({h, h});
          }
          l.unbounded = chance(0.2);
          l.max_iterations = l.unbounded ? 0 : std::uint32_t(pick(1, 4));
          ch.loops.push_back(l);
        }
      }
      for (int a = pick(0, 2); a > 0; --a) {
        const int r = pick(0, 15);
        graph.anywhere.push_back(randomNode("any" + std::to_string(a), std::uint64_t(r / 2), r % 2 ? Dir::Read : Dir::Write));
      }
      p.graphs.push_back(graph);
    }
    if (chance(0.3)) {
      StopGapRule rule;
      rule.id = "flood";
      rule.after = AccessPattern{0, 0, 3, 0, Dir::Write, {}};
      rule.then = AccessPattern{0, 4, 7, 0, std::nullopt, {}};
      rule.max = std::uint32_t(pick(2, 6));
      p.rules.push_back(rule);
    }
    return p;
  }

  IoRequest request(const DevicePolicy& p) {
    IoRequest r;
    std::uint64_t offset = std::uint64_t(pick(0, 9)) - 1;  // one port either side is unclaimed
    Dir dir = chance(0.5) ? Dir::Read : Dir::Write;
    std::uint64_t value = std::uint64_t(pick(0, 5));
    if (chance(0.8)) {  // follow the policy: some node's access, usually with a value it accepts
      const auto& g = p.graphs[std::size_t(pick(0, int(p.graphs.size()) - 1))];
      const auto& ch = g.channels[std::size_t(pick(0, int(g.channels.size()) - 1))];
      const auto& n = ch.nodes[std::size_t(pick(0, int(ch.nodes.size()) - 1))];
      offset = n.offset;
      dir = n.dir;
      if (chance(0.8)) value = acceptedValue(n.value);
    }
    r = pio(kBase + offset, dir, value, std::uint16_t(pick(0, 1)), chance(0.05) ? 2 : 1);
    if (chance(0.05)) r.count = std::uint32_t(pick(2, 4));
    if (dir == Dir::Write && chance(0.03)) r.data_is_ptr = true;
    return r;
  }

  bool chance(double p) { return std::uniform_real_distribution<double>(0, 1)(rng_) < p; }
  int pick(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng_); }

 private:
  NodeSpec randomNode(std::string id, std::uint64_t offset, Dir dir) {
    ValueConstraint v;
    if (dir == Dir::Write) {
      switch (pick(0, 3)) {
        case 0: break;
        case 1: v = exact(std::uint64_t(pick(0, 3))); break;
        case 2: v = mask(1, std::uint64_t(pick(0, 1))); break;
        default: v = ValueConstraint{ValueKind::Set, 0, 0, {1, 2, 5}}; break;
      }
    }
    NodeSpec n = node(std::move(id), offset, dir, v);
    if (chance(0.1)) n.size = 0;  // any size
    return n;
  }
  static std::uint64_t acceptedValue(const ValueConstraint& v) {
    switch (v.kind) {
      case ValueKind::Exact: return v.a;
      case ValueKind::Mask: return v.b;
      case ValueKind::Set: return v.set.front();
      default: return 3;
    }
  }
  std::mt19937 rng_;
};

void expectSameVerdict(const Verdict& a, const Verdict& b, const std::string& where) {
  EXPECT_EQ(a.action, b.action) << where;
  EXPECT_EQ(a.reason, b.reason) << where;
  EXPECT_EQ(a.malformation, b.malformation) << where;
  EXPECT_EQ(a.escalation, b.escalation) << where;
  EXPECT_EQ(a.monitored, b.monitored) << where;
  EXPECT_EQ(a.device, b.device) << where;
  EXPECT_EQ(a.graph, b.graph) << where;
  EXPECT_EQ(a.node, b.node) << where;
  EXPECT_EQ(a.rule, b.rule) << where;
}

void expectSameCounters(const Engine& a, const Engine& b, const std::string& where) {
  const auto &x = a.counters(0), &y = b.counters(0);
  EXPECT_EQ(x.forwarded, y.forwarded) << where;
  EXPECT_EQ(x.refused_order, y.refused_order) << where;
  EXPECT_EQ(x.refused_value, y.refused_value) << where;
  EXPECT_EQ(x.refused_count, y.refused_count) << where;
  EXPECT_EQ(x.refused_stopgap, y.refused_stopgap) << where;
  EXPECT_EQ(x.refused_malformed, y.refused_malformed) << where;
  EXPECT_EQ(x.needs_data, y.needs_data) << where;
  EXPECT_EQ(x.monitored, y.monitored) << where;
  EXPECT_EQ(x.resyncs, y.resyncs) << where;
  EXPECT_EQ(x.graph_deaths, y.graph_deaths) << where;
  EXPECT_EQ(a.counters().requests, b.counters().requests) << where;
  EXPECT_EQ(a.counters().unclaimed, b.counters().unclaimed) << where;
  EXPECT_EQ(a.counters().learn_overflow, b.counters().learn_overflow) << where;
}

TEST(TransitionCache, SameVerdictsAsTheUncachedEngineOnRandomPolicies) {
  std::uint64_t hits = 0, compared = 0;
  for (std::uint32_t seed = 1; seed <= 300; ++seed) {
    RandomPolicy gen(seed);
    const DevicePolicy policy = gen.make();
    std::vector<BoundDevice> devices{BoundDevice{isaInstance("toy", kBase, 8), policy}};
    EngineOptions base;
    base.start = gen.chance(0.3) ? StartState::Unsynchronised : StartState::Boot;
    base.mode = gen.chance(0.7) ? Mode::Enforce : gen.chance(0.5) ? Mode::Monitor : Mode::Learn;
    base.learn_capacity = 64;
    auto reference = Engine::create(devices, withCache(0, base));
    if (!reference) continue;  // the generator drew a policy validate() rejects (rare)
    std::vector<std::unique_ptr<Engine>> cached;
    for (std::size_t budget : {std::size_t(4096), std::size_t(2)}) cached.push_back(std::move(*Engine::create(devices, withCache(budget, base))));
    for (int i = 0; i < 400; ++i) {
      const std::string where = "seed " + std::to_string(seed) + " request " + std::to_string(i);
      if (gen.chance(0.01)) {
        (*reference)->resynchronise();
        for (auto& e : cached) e->resynchronise();
      }
      if (gen.chance(0.01)) {
        const Mode m = gen.chance(0.5) ? Mode::Enforce : gen.chance(0.5) ? Mode::Monitor : Mode::Learn;
        (*reference)->setMode(m);
        for (auto& e : cached) e->setMode(m);
      }
      const IoRequest r = gen.request(policy);
      const Verdict expected = (*reference)->onRequest(r);
      for (auto& e : cached) {
        expectSameVerdict(e->onRequest(r), expected, where);
        expectSameCounters(*e, **reference, where);
        if (i % 16 == 0) {
          EXPECT_EQ(e->expectedNext(0, 64), (*reference)->expectedNext(0, 64)) << where;
        }
      }
      ++compared;
      if (::testing::Test::HasFailure()) return;
    }
    const auto events = (*reference)->takeLearnEvents();
    for (auto& e : cached) {
      const auto got = e->takeLearnEvents();
      ASSERT_EQ(got.size(), events.size()) << "seed " << seed;
      for (std::size_t j = 0; j < got.size(); ++j) {
        EXPECT_EQ(got[j].graph, events[j].graph) << "seed " << seed;
        EXPECT_EQ(got[j].channel, events[j].channel) << "seed " << seed;
        EXPECT_EQ(got[j].previous_node, events[j].previous_node) << "seed " << seed;
        EXPECT_EQ(got[j].offset, events[j].offset) << "seed " << seed;
      }
    }
    hits += cached.front()->counters().transition_cache_hits;
  }
  EXPECT_GT(compared, 100000u);
  EXPECT_GT(hits, compared / 4);  // the comparison exercised the cache, not just the walk
}

}  // namespace
}  // namespace iof
