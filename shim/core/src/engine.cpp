#include "ioreq_filter/core/engine.h"

#include <algorithm>
#include <array>
#include <bit>
#include <tuple>

namespace iof {

const char* toString(Mode m) noexcept {
  switch (m) {
    case Mode::Enforce: return "enforce";
    case Mode::Monitor: return "monitor";
    case Mode::Learn: return "learn";
  }
  return "?";
}

namespace {

using Word = std::uint64_t;
constexpr std::uint32_t kNone = 0xffffffffu;
// Regions up to this many bytes get a dense offset -> register table; larger ones binary-search.
constexpr std::uint64_t kDenseRegionLimit = 1u << 18;

enum class NodeKind : std::uint8_t { Stateful, Reset, Anywhere };

struct Candidate {
  std::uint32_t graph = 0;
  std::uint32_t channel = kNone;  // device-wide channel index; kNone for anywhere nodes
  std::uint32_t node = 0;         // index within the channel (or within the graph's anywhere list)
  std::uint32_t name = 0;         // index into CompiledDevice::names
  std::uint32_t value = 0;        // index into CompiledDevice::values
  std::uint8_t size = 0;
  NodeKind kind = NodeKind::Stateful;
};

// The nodes of one channel that a register can match, as a bitset (the register's "byte class").
struct RegisterHit {
  std::uint32_t graph = 0;
  std::uint32_t channel = 0;
  std::uint32_t mask = 0;  // pool offset: nodes of the channel at this register
};

struct Register {
  std::uint32_t region = 0;
  Dir dir = Dir::Write;
  std::uint64_t offset = 0;
  std::uint32_t begin = 0, end = 0;          // candidates: anywhere and reset nodes, by graph
  std::uint32_t hits_begin = 0, hits_end = 0;  // channel hits, by graph
  auto key() const { return std::make_tuple(region, dir, offset); }
};

struct NodeInfo {
  std::uint32_t value = 0;  // index into CompiledDevice::values
  std::uint32_t name = 0;
  std::uint8_t size = 0;
};

struct Loop {
  std::uint32_t header = 0;
  std::uint32_t members = 0;   // pool offset: bitset
  std::uint32_t pred_out = 0;  // pool offset: predecessors of the header outside the loop
  std::uint32_t max = 0;
  bool unbounded = false;
};

struct Channel {
  std::uint32_t graph = 0;
  std::uint32_t nodes = 0;
  std::uint32_t words = 0;
  std::uint32_t state = 0;    // offset into the cursor's state words
  std::uint32_t pred = 0;     // pool offset: nodes * words
  std::uint32_t succ = 0;     // pool offset: nodes * words
  std::uint32_t info = 0;     // offset into CompiledDevice::nodes
  std::uint32_t entries = 0;  // pool offsets
  std::uint32_t exits = 0;
  std::uint32_t all = 0;
  std::uint32_t loops_begin = 0, loops_end = 0;
  std::uint32_t header_loop = 0;  // offset into header_loop: per node, loop index or kNone
  std::uint32_t first_name = 0;   // names index of node 0
};

struct Graph {
  std::uint32_t channels_begin = 0, channels_end = 0;
};

struct CompiledDevice {
  std::vector<Register> registers;                  // sorted by key
  // Dense regions share one table: region r's entries start at dense_begin[r] (kNone: binary search).
  std::vector<std::uint32_t> dense;                 // offset*2+dir -> register index + 1
  std::vector<std::uint32_t> dense_begin;           // per region
  std::vector<Candidate> candidates;
  std::vector<RegisterHit> hits;
  std::vector<NodeInfo> nodes;
  std::vector<ValueConstraint> values;
  // Byte-sized value sets (command bytes) as 256-bit bitmaps: one bit test instead of a binary search.
  std::vector<std::array<Word, 4>> value_bits;
  std::vector<std::uint8_t> value_is_bits;
  std::vector<Channel> channels;
  std::vector<Graph> graphs;
  std::vector<Loop> loops;
  std::vector<std::uint32_t> header_loop;
  std::vector<Word> pool;
  std::vector<std::string> names;  // "graph:channel/node" or "graph:anywhere/node"
  std::vector<std::uint32_t> loop_limit;  // per loop: max iterations, UINT32_MAX if unbounded
  std::uint32_t state_words = 0;
  // Layout of CursorState::config: state words, then one idle byte per channel at idle_at, one alive
  // byte per graph at alive_at (byte offsets), zero padding up to config_words.
  std::uint32_t idle_at = 0, alive_at = 0, config_words = 0;
  std::uint32_t loop_words = 0;  // words of a bitset over the device's loops
  Word bounded_loops = 0;        // loop_words == 1: the loops with a finite bound
  std::uint32_t config_region = kNone;
  bool config_by_graph = false;
  Escalation escalation = Escalation::None;
  bool has_graphs = false;
  bool has_rules = false;
};

// What a device's cursor remembers between requests. Copy-assigning one of these onto another of the
// same device never allocates (the vectors have equal sizes), which REP rollback relies on.
// The node sets, idle and alive flags form one flat "configuration" block so that the transition
// cache can intern it, compare it and install it whole (see TransitionCache).
struct CursorState {
  std::vector<Word> config;               // per channel: current nodes; then idle bytes, alive bytes
  std::vector<std::uint32_t> counters;    // per loop
  // Per loop, a bit: its counter may be nonzero (a superset). A step leaves most of a channel's loops,
  // and replay() then writes zeros only to the counters that can hold something.
  std::vector<Word> counting;
  std::vector<std::uint8_t> armed;        // per stop-gap rule
  std::vector<std::uint32_t> rule_count;  // per stop-gap rule
  // The configuration's interned id and whether `config` is stale live in HotDevice (see there).
};

struct Cursor {
  CursorState live, saved;
  std::uint32_t saved_id = kNone;  // HotDevice::id and ::stale at backup()
  bool saved_stale = false;
  // Scratch for one step.
  std::vector<Word> next, reach;
  std::vector<std::uint32_t> pending;
  std::vector<std::uint8_t> accepted, reset_hit;
  // What the last NFA walk did to the loop counters, as bitsets over the device's loops; the
  // transition cache stores them with the transition.
  std::vector<Word> entered, entered_fresh, zeroed;
  bool count_pruned = false;  // a loop bound removed a node: the walk depended on the counters
};

Word* stateOf(CursorState& s) noexcept { return s.config.data(); }
std::uint8_t* idleOf(const CompiledDevice& c, CursorState& s) noexcept {
  return reinterpret_cast<std::uint8_t*>(s.config.data()) + c.idle_at;
}
const std::uint8_t* idleOf(const CompiledDevice& c, const Word* config) noexcept {
  return reinterpret_cast<const std::uint8_t*>(config) + c.idle_at;
}
std::uint8_t* aliveOf(const CompiledDevice& c, CursorState& s) noexcept {
  return reinterpret_cast<std::uint8_t*>(s.config.data()) + c.alive_at;
}
const std::uint8_t* aliveOf(const CompiledDevice& c, const Word* config) noexcept {
  return reinterpret_cast<const std::uint8_t*>(config) + c.alive_at;
}

// Configurations are a few words: a plain loop beats a call to memcpy/memcmp.
bool sameWords(const Word* a, const Word* b, std::uint32_t words) noexcept {
  for (std::uint32_t i = 0; i < words; ++i)
    if (a[i] != b[i]) return false;
  return true;
}
void copyWords(const Word* from, std::uint32_t words, Word* to) noexcept {
  for (std::uint32_t i = 0; i < words; ++i) to[i] = from[i];
}

bool intersects(const Word* a, const Word* b, std::uint32_t words) noexcept {
  for (std::uint32_t i = 0; i < words; ++i)
    if (a[i] & b[i]) return true;
  return false;
}
bool any(const Word* a, std::uint32_t words) noexcept {
  for (std::uint32_t i = 0; i < words; ++i)
    if (a[i]) return true;
  return false;
}
bool test(const Word* a, std::uint32_t bit) noexcept { return (a[bit / 64] >> (bit % 64)) & 1; }
void set(Word* a, std::uint32_t bit) noexcept { a[bit / 64] |= Word(1) << (bit % 64); }
void clear(Word* a, std::uint32_t bit) noexcept { a[bit / 64] &= ~(Word(1) << (bit % 64)); }

std::uint64_t maskToSize(std::uint64_t v, std::uint8_t size) noexcept {
  return size >= 8 ? v : v & ((std::uint64_t(1) << (8 * size)) - 1);
}

// PCI config space as the PCI core (not the driver) uses it: any read; writes only to the fields a
// configuration walk programs (command/status, cache line, latency, BARs, ROM BAR, interrupt line)
// and to capability structures. Everything else in the header is read-only or a side door (BIST).
bool standardConfigAllows(std::uint64_t reg, std::uint8_t size, Dir dir) noexcept {
  if (dir == Dir::Read) return true;
  for (std::uint64_t r = reg; r < reg + size; ++r) {
    const bool ok = (r >= 0x04 && r <= 0x07) || r == 0x0c || r == 0x0d || (r >= 0x10 && r <= 0x27) ||
                    (r >= 0x30 && r <= 0x33) || r == 0x3c || r >= 0x40;
    if (!ok) return false;
  }
  return true;
}

Escalation escalationOf(ViolationAction a) {
  switch (a) {
    case ViolationAction::Refuse: return Escalation::None;
    case ViolationAction::RefuseAndPause: return Escalation::Pause;
    case ViolationAction::RefuseAndCrash: return Escalation::Crash;
  }
  return Escalation::None;
}

CompiledDevice compile(const DevicePolicy& p) {
  CompiledDevice c;
  c.escalation = escalationOf(p.on_violation);
  c.has_graphs = !p.graphs.empty();
  c.has_rules = !p.rules.empty();
  for (std::uint32_t r = 0; r < p.regions.size(); ++r)
    if (p.regions[r].space == RegionSpace::Config) c.config_region = r;
  struct Keyed {
    std::uint32_t region;
    Dir dir;
    std::uint64_t offset;
    Candidate cand;
  };
  std::vector<Keyed> keyed;
  auto addValue = [&](const ValueConstraint& v) {
    c.values.push_back(v);
    std::array<Word, 4> bits{};
    const bool bytes = v.kind == ValueKind::Set && !v.set.empty() && v.set.back() < 256;
    if (bytes)
      for (auto x : v.set) bits[x / 64] |= Word(1) << (x % 64);
    c.value_bits.push_back(bits);
    c.value_is_bits.push_back(bytes);
    return std::uint32_t(c.values.size() - 1);
  };
  for (std::uint32_t g = 0; g < p.graphs.size(); ++g) {
    const auto& graph = p.graphs[g];
    Graph cg;
    cg.channels_begin = std::uint32_t(c.channels.size());
    for (const auto& ch : graph.channels) {
      Channel cc;
      cc.graph = g;
      cc.nodes = std::uint32_t(ch.nodes.size());
      cc.words = std::max<std::uint32_t>(1, (cc.nodes + 63) / 64);
      cc.state = c.state_words;
      c.state_words += cc.words;
      cc.first_name = std::uint32_t(c.names.size());
      auto alloc = [&](std::uint32_t words) {
        const auto off = std::uint32_t(c.pool.size());
        c.pool.resize(c.pool.size() + words, 0);
        return off;
      };
      cc.pred = alloc(cc.nodes * cc.words);
      cc.succ = alloc(cc.nodes * cc.words);
      cc.info = std::uint32_t(c.nodes.size());
      cc.entries = alloc(cc.words);
      cc.exits = alloc(cc.words);
      cc.all = alloc(cc.words);
      for (const auto& [a, b] : ch.edges) {
        set(&c.pool[cc.pred + b * cc.words], a);
        set(&c.pool[cc.succ + a * cc.words], b);
      }
      for (auto e : ch.entries) set(&c.pool[cc.entries], e);
      for (auto e : ch.exits) set(&c.pool[cc.exits], e);
      for (std::uint32_t n = 0; n < cc.nodes; ++n) set(&c.pool[cc.all], n);
      cc.header_loop = std::uint32_t(c.header_loop.size());
      c.header_loop.resize(c.header_loop.size() + cc.nodes, kNone);
      cc.loops_begin = std::uint32_t(c.loops.size());
      for (const auto& l : ch.loops) {
        Loop cl;
        cl.header = l.header;
        cl.max = l.max_iterations;
        cl.unbounded = l.unbounded;
        cl.members = alloc(cc.words);
        for (auto m : l.members) set(&c.pool[cl.members], m);
        cl.pred_out = alloc(cc.words);
        for (std::uint32_t w = 0; w < cc.words; ++w)
          c.pool[cl.pred_out + w] = c.pool[cc.pred + l.header * cc.words + w] & ~c.pool[cl.members + w];
        c.header_loop[cc.header_loop + l.header] = std::uint32_t(c.loops.size());
        c.loops.push_back(cl);
      }
      cc.loops_end = std::uint32_t(c.loops.size());
      const auto channel_index = std::uint32_t(c.channels.size());
      for (std::uint32_t n = 0; n < cc.nodes; ++n) {
        const auto& node = ch.nodes[n];
        c.names.push_back(graph.name + ":" + ch.name + "/" + node.id);
        const auto value = addValue(node.value);
        c.nodes.push_back(NodeInfo{value, std::uint32_t(c.names.size() - 1), node.size});
        keyed.push_back({node.region, node.dir, node.offset,
                         Candidate{g, channel_index, n, std::uint32_t(c.names.size() - 1), value, node.size,
                                   node.reset ? NodeKind::Reset : NodeKind::Stateful}});
      }
      c.channels.push_back(cc);
    }
    cg.channels_end = std::uint32_t(c.channels.size());
    for (std::uint32_t n = 0; n < graph.anywhere.size(); ++n) {
      const auto& node = graph.anywhere[n];
      c.names.push_back(graph.name + ":anywhere/" + node.id);
      keyed.push_back({node.region, node.dir, node.offset,
                       Candidate{g, kNone, n, std::uint32_t(c.names.size() - 1), addValue(node.value), node.size, NodeKind::Anywhere}});
    }
    c.graphs.push_back(cg);
  }
  if (c.state_words == 0) c.state_words = 1;
  // Group candidates by register; within one, by graph, stateful before anywhere (see step()).
  std::stable_sort(keyed.begin(), keyed.end(), [](const Keyed& a, const Keyed& b) {
    return std::make_tuple(a.region, a.dir, a.offset, a.cand.graph, a.cand.channel) <
           std::make_tuple(b.region, b.dir, b.offset, b.cand.graph, b.cand.channel);
  });
  // Stateful nodes become per-register channel masks; only anywhere and reset nodes stay candidates.
  std::size_t i = 0;
  while (i < keyed.size()) {
    std::size_t j = i;
    while (j < keyed.size() && std::make_tuple(keyed[j].region, keyed[j].dir, keyed[j].offset) ==
                                   std::make_tuple(keyed[i].region, keyed[i].dir, keyed[i].offset))
      ++j;
    Register reg{keyed[i].region, keyed[i].dir, keyed[i].offset, std::uint32_t(c.candidates.size()), 0,
                 std::uint32_t(c.hits.size()), 0};
    for (std::size_t k = i; k < j; ++k) {
      const auto& cand = keyed[k].cand;
      if (cand.kind != NodeKind::Stateful) c.candidates.push_back(cand);
      if (cand.kind == NodeKind::Anywhere) continue;
      const auto& ch = c.channels[cand.channel];
      if (c.hits.size() == reg.hits_begin || c.hits.back().channel != cand.channel) {
        const auto off = std::uint32_t(c.pool.size());
        c.pool.resize(c.pool.size() + ch.words, 0);
        c.hits.push_back(RegisterHit{cand.graph, cand.channel, off});
      }
      set(&c.pool[c.hits.back().mask], cand.node);
    }
    reg.end = std::uint32_t(c.candidates.size());
    reg.hits_end = std::uint32_t(c.hits.size());
    c.registers.push_back(reg);
    i = j;
  }
  c.dense_begin.assign(p.regions.size(), kNone);
  for (std::uint32_t r = 0; r < p.regions.size(); ++r)
    if (p.regions[r].length <= kDenseRegionLimit) {
      c.dense_begin[r] = std::uint32_t(c.dense.size());
      c.dense.resize(c.dense.size() + p.regions[r].length * 2, 0);
    }
  for (std::uint32_t r = 0; r < c.registers.size(); ++r) {
    const auto& reg = c.registers[r];
    if (c.dense_begin[reg.region] != kNone) c.dense[c.dense_begin[reg.region] + reg.offset * 2 + std::uint32_t(reg.dir)] = r + 1;
  }
  for (const auto& l : c.loops) c.loop_limit.push_back(l.unbounded ? 0xffffffffu : l.max);
  c.loop_words = std::uint32_t((c.loops.size() + 63) / 64);
  // A limit of UINT32_MAX can never be exceeded by a 32-bit count, bounded or not: no check needed.
  if (c.loop_words == 1)
    for (std::uint32_t l = 0; l < c.loops.size(); ++l)
      if (c.loop_limit[l] != 0xffffffffu) c.bounded_loops |= Word(1) << l;
  c.idle_at = c.state_words * std::uint32_t(sizeof(Word));
  c.alive_at = c.idle_at + std::uint32_t(c.channels.size());
  c.config_words = (c.alive_at + std::uint32_t(c.graphs.size()) + std::uint32_t(sizeof(Word)) - 1) / std::uint32_t(sizeof(Word));
  c.config_by_graph = p.config == ConfigPolicy::GraphOnly && c.config_region != kNone;
  return c;
}

Cursor makeCursor(const CompiledDevice& c, std::size_t rules) {
  Cursor k;
  k.live.config.assign(c.config_words, 0);
  std::fill_n(idleOf(c, k.live), c.channels.size(), 1);
  std::fill_n(aliveOf(c, k.live), c.graphs.size(), 1);
  k.live.counters.assign(c.loops.size(), 0);
  k.live.counting.assign(c.loop_words, 0);
  k.live.armed.assign(rules, 0);
  k.live.rule_count.assign(rules, 0);
  k.saved = k.live;
  k.next.assign(c.state_words, 0);
  k.reach.assign(c.state_words, 0);
  k.pending.assign(c.loops.size(), 0);
  k.accepted.assign(c.graphs.size(), 0);
  k.reset_hit.assign(c.graphs.size(), 0);
  k.entered.assign(c.loop_words, 0);
  k.entered_fresh.assign(c.loop_words, 0);
  k.zeroed.assign(c.loop_words, 0);
  return k;
}

// Memoised steps (RE2's DFA over our NFA): each configuration a device's cursor reaches is interned
// once, and a step from an interned configuration on one symbol (register, size, written value) is
// remembered with its outcome, so a repeated step is a table probe and a copy of the configuration
// instead of a walk over node bitsets. Loop counters are not part of a configuration: a transition
// records which loops it enters (and whether afresh) and which it leaves, and is replayed only if no
// bound would be exceeded; otherwise the NFA walk decides, as it does for every refusal. Fixed
// budget, sized at create(): when the configuration table is full, requests simply take the walk.
struct alignas(64) Transition {
  std::uint64_t value = 0;          // written value if it was checked, else 0
  std::uint32_t from = kNone;       // configuration id; kNone: empty slot
  std::uint32_t symbol = 0;         // register index << 8 | value-checked << 4 | size
  std::uint32_t to = 0;             // configuration id after the step
  std::int32_t graph = -1, node = -1;
  std::uint16_t deaths = 0;         // graphs that stopped following the device
  std::uint16_t resets = 0;         // graphs restarted by a reset node
  // Effect on loop counters when the device has at most 64 loops (nearly all do), kept in the
  // transition's own cache line; larger devices keep them in TransitionCache::loop_ops.
  Word entered = 0, entered_fresh = 0, zeroed = 0;
  // The only loops whose bound a replay has to check: entered again (not afresh) and finitely bounded.
  // A loop entered afresh counts 1, which its bound allowed when the step was cached (a step some
  // bound pruned is never cached), so most hits check nothing.
  Word recheck = 0;
};
static_assert(sizeof(Transition) == 64, "one transition per cache line");
constexpr std::uint32_t kMaxCachedRegister = (1u << 24) - 1;

struct TransitionCache {
  std::uint32_t capacity = 0;              // configurations; 0: disabled
  std::uint32_t count = 0;
  std::vector<Word> configs;               // capacity * config_words
  std::vector<std::uint32_t> slots;        // open addressing over configs: id + 1, 0 empty
  std::vector<Transition> transitions;     // direct-mapped, power-of-two size
  std::vector<Word> loop_ops;              // devices with over 64 loops, per transition: entered, entered_fresh, zeroed (loop_words each)
  std::uint64_t transition_mask = 0;
};

std::uint64_t mix(std::uint64_t h) noexcept {
  h ^= h >> 31;
  h *= 0x9e3779b97f4a7c15ull;
  h ^= h >> 29;
  return h;
}

std::size_t pow2AtLeast(std::size_t n) noexcept { return std::bit_ceil(std::max<std::size_t>(n, 1)); }

TransitionCache makeTransitionCache(const CompiledDevice& c, std::size_t capacity) {
  TransitionCache t;
  if (capacity == 0 || !c.has_graphs) return t;
  t.capacity = std::uint32_t(std::min<std::size_t>(capacity, 1u << 20));
  t.configs.assign(std::size_t(t.capacity) * c.config_words, 0);
  t.slots.assign(pow2AtLeast(std::size_t(t.capacity) * 2), 0);
  const std::size_t transitions = pow2AtLeast(t.capacity);
  t.transitions.assign(transitions, Transition{});
  if (c.loop_words > 1) t.loop_ops.assign(transitions * 3 * c.loop_words, 0);
  t.transition_mask = transitions - 1;
  return t;
}

// What the fast path needs to know about one port, gathered from the bus and the device's compiled
// tables into one record: a fast-path request then costs one load before its graph step instead of
// a chain (port table, range, device, region, register table). Valid while the bus's generation is.
struct PortRoute {
  std::uint64_t tag = 0;           // generation << 17 | 1 << 16 | port; 0: empty
  std::int32_t device = -1;        // kUnclaimedPort, kFullPathPort, or the device index
  std::uint32_t room = 0;          // bytes from the port to the end of its range (an access of more crosses)
  std::array<std::uint32_t, 2> reg{};  // by Dir: register index + 1, 0 if no node has that access
};
constexpr std::int32_t kUnclaimedPort = -1;
constexpr std::int32_t kFullPathPort = -2;  // CF8/CFC, rules, registers without a dense table: decide()
constexpr std::size_t kPortRoutes = 256;   // direct-mapped by the port's low byte

std::uint64_t portRouteTag(std::uint64_t generation, std::uint64_t port) noexcept { return generation << 17 | 1u << 16 | port; }

// Everything a transition-cache hit reads or writes, gathered in one cache line per device (it points
// into the device's cursor, cache and compiled tables, whose sizes are fixed at create()).
struct alignas(64) HotDevice {
  const Transition* transitions = nullptr;  // nullptr: the cache is off for this device
  const Word* loop_ops = nullptr;
  std::uint64_t transition_mask = 0;
  // Interned id of the cursor's configuration; kNone: not interned (yet). A cache hit only moves `id`:
  // the cursor's `config` is then stale and the transition cache's copy of configuration `id` is
  // current (Impl::configOf, Impl::materialize). Invariant: stale => id != kNone.
  std::uint32_t id = kNone;
  bool stale = false;
  std::uint32_t* loop_count = nullptr;
  Word* counting = nullptr;
  const std::uint32_t* loop_limit = nullptr;
  std::uint32_t loop_words = 0;
};

}  // namespace

struct Engine::Impl {
  DeviceBus bus;  // the first policy set's (the only one, usually)
  // Further policy sets (BoundDevice::set), each judged on its own bus: set k's devices start at
  // devices[extra_first[k - 1]]. Empty for one set, and only then does onRequest() take its fast path.
  std::vector<DeviceBus> extra_buses;
  std::vector<std::size_t> extra_first;
  std::vector<Verdict> set_verdicts;  // one per set, for the request being judged (sized by create())
  std::array<PortRoute, kPortRoutes> port_routes{};
  std::vector<HotDevice> hot;  // per device; built last by create()
  std::vector<BoundDevice> devices;
  std::vector<CompiledDevice> compiled;
  std::vector<Cursor> cursors;
  std::vector<TransitionCache> caches;
  std::vector<DeviceCounters> counters;
  std::vector<LearnEvent> learn;
  std::size_t learn_size = 0;
  EngineCounters* engine_counters = nullptr;  // the owning Engine's

  [[gnu::always_inline]] inline const Register* lookup(const CompiledDevice& c, std::uint32_t region, std::uint64_t offset, Dir dir) const noexcept {
    if (region < c.dense_begin.size() && c.dense_begin[region] != kNone) {
      const auto idx = c.dense[c.dense_begin[region] + offset * 2 + std::uint32_t(dir)];
      return idx ? &c.registers[idx - 1] : nullptr;
    }
    const auto key = std::make_tuple(region, dir, offset);
    auto it = std::lower_bound(c.registers.begin(), c.registers.end(), key,
                               [](const Register& r, const auto& k) { return r.key() < k; });
    return it != c.registers.end() && it->key() == key ? &*it : nullptr;
  }

  void unsync(std::size_t d) noexcept {
    const auto& c = compiled[d];
    auto& k = cursors[d];
    Word* state = stateOf(k.live);
    for (const auto& ch : c.channels)
      for (std::uint32_t w = 0; w < ch.words; ++w) state[ch.state + w] = c.pool[ch.all + w];
    std::fill_n(idleOf(c, k.live), c.channels.size(), 1);
    std::fill(k.live.counters.begin(), k.live.counters.end(), 0);
    std::fill(k.live.counting.begin(), k.live.counting.end(), 0);
    std::fill_n(aliveOf(c, k.live), c.graphs.size(), 1);
    hot[d].id = kNone;
    hot[d].stale = false;
  }

  // The configuration's id, interning it if the budget allows; kNone when the table is full.
  std::uint32_t intern(std::size_t d) noexcept {
    const auto& c = compiled[d];
    auto& t = caches[d];
    const Word* config = cursors[d].live.config.data();
    const std::uint32_t words = c.config_words;
    std::uint64_t h = 0;
    for (std::uint32_t w = 0; w < words; ++w) h = mix(h ^ config[w]);
    const std::size_t mask = t.slots.size() - 1;
    std::size_t i = h & mask;
    for (; t.slots[i] != 0; i = (i + 1) & mask) {
      const Word* known = &t.configs[std::size_t(t.slots[i] - 1) * words];
      if (sameWords(known, config, words)) return t.slots[i] - 1;
    }
    if (t.count == t.capacity) return kNone;
    std::copy_n(config, words, &t.configs[std::size_t(t.count) * words]);
    t.slots[i] = t.count + 1;
    return t.count++;
  }

  struct StepResult {
    bool accepted = false;
    Reason reason = Reason::Order;
    std::int32_t graph = -1;
    std::int32_t node = -1;  // names index
  };

  static std::uint32_t symbolOf(std::uint32_t reg, std::uint8_t size, bool value_checked) noexcept {
    return reg << 8 | (value_checked ? 0x10u : 0u) | size;
  }
  static std::size_t slotOf(std::uint64_t transition_mask, std::uint32_t from, std::uint64_t value, std::uint32_t symbol) noexcept {
    // Each request's probe waits for the previous request's configuration id, so the id only enters
    // with one XOR at the end; the symbol's hash does not depend on it and is computed meanwhile.
    // Ids are dense and below the table size, so distinct ids never collide for one symbol.
    std::uint64_t h = (std::uint64_t(symbol) * 0xc2b2ae3d27d4eb4full) ^ (value * 0xff51afd7ed558ccdull);
    h ^= h >> 32;
    return (h ^ from) & transition_mask;
  }

  // The cursor's current configuration, wherever it lives.
  const Word* configOf(std::size_t d) const noexcept {
    const HotDevice& h = hot[d];
    return h.stale ? &caches[d].configs[std::size_t(h.id) * compiled[d].config_words] : cursors[d].live.config.data();
  }
  void materialize(std::size_t d) noexcept {
    if (!hot[d].stale) return;
    copyWords(configOf(d), compiled[d].config_words, cursors[d].live.config.data());
    hot[d].stale = false;
  }

  // One access against one device's graphs, from the transition cache when it knows the step.
  StepResult step(std::size_t d, const Register* reg, std::uint8_t size, bool is_write, bool value_known,
                  std::uint64_t value) noexcept {
    if (!reg) return StepResult{};  // no graph knows this register: not an access the driver makes
    auto& t = caches[d];
    if (t.capacity == 0) return walk(d, reg, size, is_write, value_known, value);
    const auto& c = compiled[d];
    auto& k = cursors[d];
    // Reads and unknown (pointer) data are never value-checked, so their value is not part of the symbol.
    const bool value_checked = is_write && value_known;
    const std::uint64_t key_value = value_checked ? value : 0;
    const auto reg_index = std::uint32_t(reg - c.registers.data());
    const std::uint32_t symbol = symbolOf(reg_index, size, value_checked);
    HotDevice& h = hot[d];
    if (h.id == kNone) h.id = intern(d);
    const std::uint32_t from = reg_index <= kMaxCachedRegister ? h.id : kNone;
    std::size_t slot = 0;
    if (from != kNone) {
      slot = slotOf(t.transition_mask, from, key_value, symbol);
      const Transition& tr = t.transitions[slot];
      if (tr.from == from && tr.symbol == symbol && tr.value == key_value &&
          replay(d, h, tr, slot)) {
        ++engine_counters->transition_cache_hits;
        return StepResult{true, Reason::None, tr.graph, tr.node};
      }
    }
    ++engine_counters->transition_cache_misses;
    const auto deaths_before = counters[d].graph_deaths, resets_before = counters[d].resyncs;
    const StepResult r = walk(d, reg, size, is_write, value_known, value);
    if (!r.accepted) return r;  // nothing moved; refusals are never cached
    h.id = intern(d);
    const auto deaths = counters[d].graph_deaths - deaths_before, resets = counters[d].resyncs - resets_before;
    if (from == kNone || h.id == kNone || k.count_pruned || deaths > 0xffff || resets > 0xffff) return r;
    Transition& tr = t.transitions[slot];
    tr.value = key_value;
    tr.from = from;
    tr.symbol = symbol;
    tr.to = h.id;
    tr.graph = r.graph;
    tr.node = r.node;
    tr.deaths = std::uint16_t(deaths);
    tr.resets = std::uint16_t(resets);
    if (c.loop_words == 1) {
      tr.entered = k.entered[0];
      tr.entered_fresh = k.entered_fresh[0];
      tr.zeroed = k.zeroed[0];
      tr.recheck = k.entered[0] & ~k.entered_fresh[0] & c.bounded_loops;
    } else if (c.loop_words > 1) {
      Word* ops = t.loop_ops.data() + slot * 3 * c.loop_words;
      std::copy_n(k.entered.data(), c.loop_words, ops);
      std::copy_n(k.entered_fresh.data(), c.loop_words, ops + c.loop_words);
      std::copy_n(k.zeroed.data(), c.loop_words, ops + 2 * c.loop_words);
    }
    return r;
  }

  // The fast path's view of a port, refreshed from the bus when its ranges changed.
  [[gnu::always_inline]] inline const PortRoute& routeOf(std::uint64_t port) noexcept {
    PortRoute& route = port_routes[port % kPortRoutes];
    if (route.tag != portRouteTag(bus.generation(), port)) fillRoute(route, port);
    return route;
  }
  [[gnu::noinline]] void fillRoute(PortRoute& route, std::uint64_t port) noexcept {
    route = PortRoute{portRouteTag(bus.generation(), port), kFullPathPort, 0, {}};
    const std::uint16_t slot = bus.portSlot(port);
    if (slot == DeviceBus::kPortFree) {
      route.device = kUnclaimedPort;
      return;
    }
    if (slot == DeviceBus::kPortConfigCycle) return;
    const auto& range = bus.ioRange(slot);
    if (range.region == kBarTailRegion) return;  // refused by decide()
    const auto& c = compiled[std::size_t(range.device)];
    const std::uint32_t dense_begin = c.dense_begin[range.region];
    if (c.has_rules || !c.has_graphs || dense_begin == kNone) return;
    const std::uint64_t offset = port - range.region_base;
    route.device = range.device;
    route.room = std::uint32_t(std::min<std::uint64_t>(range.end - port + 1, 0xffffffffu));
    route.reg[0] = c.dense[dense_begin + offset * 2];
    route.reg[1] = c.dense[dense_begin + offset * 2 + 1];
  }

  // The fast path's graph step: only a transition-cache hit, with the effects step() gives it; false
  // (and nothing changed) when step() has to decide.
  [[gnu::always_inline]] inline bool cachedStep(std::size_t d, std::uint32_t reg_index, std::uint8_t size, bool is_write,
                                                std::uint64_t value, StepResult& out) noexcept {
    HotDevice& h = hot[d];
    const std::uint32_t from = h.id;
    if (h.transitions == nullptr || from == kNone || reg_index > kMaxCachedRegister) return false;
    const std::uint64_t key_value = is_write ? value : 0;
    const std::uint32_t symbol = symbolOf(reg_index, size, is_write);
    const std::size_t slot = slotOf(h.transition_mask, from, key_value, symbol);
    const Transition& tr = h.transitions[slot];
    if (tr.from != from || tr.symbol != symbol || tr.value != key_value || !replay(d, h, tr, slot)) return false;
    ++engine_counters->transition_cache_hits;
    out = StepResult{true, Reason::None, tr.graph, tr.node};
    return true;
  }

  // Applies a remembered transition unless a loop bound would be exceeded (then the walk decides).
  // Loops a transition enters are distinct, so the bounds are checked in one pass and the counters
  // written in a second; zeroed loops are written last, as the walk's commit does.
  [[gnu::always_inline]] inline bool replay(std::size_t d, HotDevice& h, const Transition& tr, std::size_t slot) noexcept {
    const std::uint32_t words = h.loop_words;
    if (words == 1) {
      if (!replayOneWordOfLoops(h, tr)) return false;
    } else if (words > 1) {
      const Word* entered = h.loop_ops + slot * 3 * words;
      if (!replayLoops(h, entered, entered + words, entered + 2 * words, words)) return false;
    }
    h.id = tr.to;
    h.stale = true;
    if ((tr.deaths | tr.resets) != 0) countDeathsAndResets(d, tr);
    return true;
  }
  // replayLoops() for devices with at most 64 loops, with the bound checks narrowed to tr.recheck.
  [[gnu::always_inline]] static inline bool replayOneWordOfLoops(const HotDevice& h, const Transition& tr) noexcept {
    std::uint32_t* loop_count = h.loop_count;
    for (Word bits = tr.recheck; bits; bits &= bits - 1) {
      const auto l = std::uint32_t(std::countr_zero(bits));
      if (loop_count[l] + 1 > h.loop_limit[l]) return false;
    }
    const Word entered = tr.entered;
    if (entered == 0 && tr.zeroed == 0) return true;
    const Word fresh = entered & tr.entered_fresh;
    for (Word bits = entered & ~fresh; bits; bits &= bits - 1) ++loop_count[std::countr_zero(bits)];
    for (Word bits = fresh; bits; bits &= bits - 1) loop_count[std::countr_zero(bits)] = 1;
    Word& counting = *h.counting;
    for (Word bits = tr.zeroed & counting; bits; bits &= bits - 1) loop_count[std::countr_zero(bits)] = 0;
    counting = (counting | entered) & ~tr.zeroed;
    return true;
  }
  [[gnu::always_inline]] static inline bool replayLoops(const HotDevice& h, const Word* entered, const Word* fresh,
                                                       const Word* zeroed, std::uint32_t words) noexcept {
    std::uint32_t* loop_count = h.loop_count;
    const std::uint32_t* limit = h.loop_limit;
    for (std::uint32_t w = 0; w < words; ++w)
      for (Word bits = entered[w]; bits; bits &= bits - 1) {
        const std::uint32_t b = std::uint32_t(std::countr_zero(bits));
        const std::uint32_t l = w * 64 + b;
        const std::uint32_t count = (fresh[w] >> b) & 1 ? 1 : loop_count[l] + 1;
        if (count > limit[l]) return false;
      }
    Word* counting = h.counting;
    for (std::uint32_t w = 0; w < words; ++w) {
      for (Word bits = entered[w]; bits; bits &= bits - 1) {
        const std::uint32_t b = std::uint32_t(std::countr_zero(bits));
        const std::uint32_t l = w * 64 + b;
        loop_count[l] = (fresh[w] >> b) & 1 ? 1 : loop_count[l] + 1;
      }
      for (Word bits = zeroed[w] & counting[w]; bits; bits &= bits - 1) loop_count[w * 64 + std::uint32_t(std::countr_zero(bits))] = 0;
      counting[w] = (counting[w] | entered[w]) & ~zeroed[w];
    }
    return true;
  }
  [[gnu::noinline]] void countDeathsAndResets(std::size_t d, const Transition& tr) noexcept {
    counters[d].graph_deaths += tr.deaths, counters[d].resyncs += tr.resets;
  }

  // The NFA step. Writes next states into the cursor only if some graph accepts (enforce semantics:
  // a refused access never reached the device). Records its effect on loop counters for the cache.
  StepResult walk(std::size_t d, const Register* reg, std::uint8_t size, bool is_write, bool value_known,
                  std::uint64_t value) noexcept {
    const auto& c = compiled[d];
    auto& k = cursors[d];
    StepResult result;
    std::fill(k.entered.begin(), k.entered.end(), 0);
    std::fill(k.entered_fresh.begin(), k.entered_fresh.end(), 0);
    std::fill(k.zeroed.begin(), k.zeroed.end(), 0);
    k.count_pruned = false;
    materialize(d);
    Word* live_state = stateOf(k.live);
    std::uint8_t* live_idle = idleOf(c, k.live);
    std::uint8_t* live_alive = aliveOf(c, k.live);
    int best_reason_rank = 0;  // Order < Value < Count: report the refusal that got furthest
    auto note = [&](Reason r, std::uint32_t g) {
      const int rank = r == Reason::Count ? 3 : r == Reason::Value ? 2 : 1;
      if (rank > best_reason_rank) best_reason_rank = rank, result.reason = r, result.graph = std::int32_t(g);
    };
    auto valueOk = [&](std::uint32_t v) {
      if (!is_write || !value_known) return true;
      if (c.value_is_bits[v]) return value < 256 && ((c.value_bits[v][value / 64] >> (value % 64)) & 1) != 0;
      return c.values[v].matches(value);
    };
    const RegisterHit* hit = c.hits.data() + reg->hits_begin;
    const RegisterHit* hits_end = c.hits.data() + reg->hits_end;
    const Candidate* cand = c.candidates.data() + reg->begin;
    const Candidate* cands_end = c.candidates.data() + reg->end;
    for (std::uint32_t g = 0; g < c.graphs.size(); ++g) {
      k.accepted[g] = 0;
      k.reset_hit[g] = 0;
      const RegisterHit* h = hit != hits_end && hit->graph == g ? hit++ : nullptr;
      const Candidate* group = cand;
      while (cand != cands_end && cand->graph == g) ++cand;
      const Candidate* group_end = cand;
      const bool alive = live_alive[g] != 0;
      bool accepted = false, saw_value_fail = false, saw_count_fail = false;
      std::int32_t accepted_name = -1;
      if (h) {
        const auto& ch = c.channels[h->channel];
        const Word* S = live_state + ch.state;
        Word* next = &k.next[ch.state];
        Word* reach = &k.reach[ch.state];
        const Word* mask = &c.pool[h->mask];
        std::fill_n(next, ch.words, 0);
        std::fill_n(reach, ch.words, 0);
        const bool idle_able = live_idle[h->channel] || intersects(S, &c.pool[ch.exits], ch.words);
        if (alive) {
          // Successors of where the channel stands (one or two nodes, except right after attach).
          for (std::uint32_t w = 0; w < ch.words; ++w)
            for (Word bits = S[w]; bits; bits &= bits - 1) {
              const Word* succ = &c.pool[ch.succ + (w * 64 + std::uint32_t(std::countr_zero(bits))) * ch.words];
              for (std::uint32_t x = 0; x < ch.words; ++x) reach[x] |= succ[x];
            }
          if (idle_able)
            for (std::uint32_t x = 0; x < ch.words; ++x) reach[x] |= c.pool[ch.entries + x];
          for (std::uint32_t w = 0; w < ch.words; ++w)
            for (Word bits = reach[w] & mask[w]; bits; bits &= bits - 1) {
              const std::uint32_t n = w * 64 + std::uint32_t(std::countr_zero(bits));
              const auto& info = c.nodes[ch.info + n];
              if (info.size != 0 && info.size != size) continue;
              if (!valueOk(info.value)) {
                saw_value_fail = true;
                continue;
              }
              set(next, n);
              if (accepted_name < 0) accepted_name = std::int32_t(info.name);
            }
        }
        // Resets are accepted in any state, and bring a dead graph back.
        bool reset_matched = false;
        for (const Candidate* r = group; r != group_end; ++r) {
          if (r->kind != NodeKind::Reset || (r->size != 0 && r->size != size)) continue;
          if (!valueOk(r->value)) {
            saw_value_fail = true;
            continue;
          }
          set(next, r->node);
          reset_matched = true;
          accepted_name = std::int32_t(r->name);
        }
        // Repetition bounds: entering a loop header again from inside the loop is one more iteration.
        for (auto l = ch.loops_begin; l < ch.loops_end; ++l) {
          const auto& loop = c.loops[l];
          if (!test(next, loop.header)) continue;
          const bool fresh = reset_matched || (idle_able && test(&c.pool[ch.entries], loop.header)) ||
                             intersects(&c.pool[loop.pred_out], S, ch.words);
          const std::uint32_t count = fresh ? 1 : k.live.counters[l] + 1;
          if (!loop.unbounded && count > loop.max) {
            clear(next, loop.header);
            saw_count_fail = true;
            k.count_pruned = true;
          } else {
            k.pending[l] = count;
            if (fresh) set(k.entered_fresh.data(), l);
          }
        }
        accepted = any(next, ch.words);
        if (accepted) {
          k.reset_hit[g] = reset_matched;
          // Names of a channel's nodes are consecutive from first_name.
          if (accepted_name < 0 || !test(next, std::uint32_t(accepted_name) - ch.first_name)) {
            // The first match lost to a loop bound: name a node that survived.
            for (std::uint32_t w = 0; w < ch.words; ++w)
              if (next[w]) {
                accepted_name = std::int32_t(c.nodes[ch.info + w * 64 + std::uint32_t(std::countr_zero(next[w]))].name);
                break;
              }
          }
        }
      }
      if (!accepted && alive) {
        for (const Candidate* a = group; a != group_end; ++a) {
          if (a->kind != NodeKind::Anywhere || (a->size != 0 && a->size != size)) continue;
          if (!valueOk(a->value)) {
            saw_value_fail = true;
            continue;
          }
          accepted = true;
          accepted_name = std::int32_t(a->name);
          h = nullptr;  // stateless: no cursor moves
          break;
        }
      }
      if (accepted) {
        k.accepted[g] = h ? 1 : 2;
        if (!result.accepted) result.graph = std::int32_t(g), result.node = accepted_name;
        result.accepted = true;
      } else if (alive) {
        note(saw_count_fail ? Reason::Count : saw_value_fail ? Reason::Value : Reason::Order, g);
      }
    }
    if (!result.accepted) {
      if (best_reason_rank == 0) result.reason = Reason::Order;
      return result;
    }
    result.reason = Reason::None;
    // Commit: accepting graphs advance; live graphs that did not accept stop following the device.
    hit = c.hits.data() + reg->hits_begin;
    for (std::uint32_t g = 0; g < c.graphs.size(); ++g) {
      const RegisterHit* h = hit != hits_end && hit->graph == g ? hit++ : nullptr;
      if (k.accepted[g] == 0) {
        if (live_alive[g]) {
          live_alive[g] = 0;
          ++counters[d].graph_deaths;
        }
        continue;
      }
      if (k.accepted[g] == 2 || !h) continue;  // anywhere node
      if (k.reset_hit[g]) {
        // A device reset restarts every other channel of the graph.
        for (auto other = c.graphs[g].channels_begin; other < c.graphs[g].channels_end; ++other) {
          if (other == h->channel) continue;
          const auto& oc = c.channels[other];
          std::fill_n(live_state + oc.state, oc.words, 0);
          live_idle[other] = 1;
          for (auto l = oc.loops_begin; l < oc.loops_end; ++l) k.live.counters[l] = 0, set(k.zeroed.data(), l);
        }
        live_alive[g] = 1;
        ++counters[d].resyncs;
      }
      const auto& cc = c.channels[h->channel];
      Word* S = live_state + cc.state;
      const Word* next = &k.next[cc.state];
      for (auto l = cc.loops_begin; l < cc.loops_end; ++l) {
        if (test(next, c.loops[l].header))
          k.live.counters[l] = k.pending[l], set(k.entered.data(), l), set(k.live.counting.data(), l);
        else if (!intersects(next, &c.pool[c.loops[l].members], cc.words))
          k.live.counters[l] = 0, set(k.zeroed.data(), l);
      }
      std::copy_n(next, cc.words, S);
      live_idle[h->channel] = 0;
    }
    return result;
  }

  // Around REP requests only: a refused REP must leave the cursor as it was.
  void backup(std::size_t d) noexcept {
    cursors[d].saved = cursors[d].live;
    cursors[d].saved_id = hot[d].id, cursors[d].saved_stale = hot[d].stale;
  }
  void restore(std::size_t d) noexcept {
    cursors[d].live = cursors[d].saved;
    hot[d].id = cursors[d].saved_id, hot[d].stale = cursors[d].saved_stale;
  }

  // Stop-gap rules for one access; updates rule state. Returns the index of a refusing rule or -1.
  std::int32_t rules(std::size_t d, std::uint32_t region, std::uint64_t offset, std::uint8_t size, Dir dir,
                     std::uint64_t value, bool value_known) noexcept {
    const auto& list = devices[d].policy.rules;
    auto& k = cursors[d];
    for (std::size_t r = 0; r < list.size(); ++r) {
      const auto& rule = list[r];
      auto matches = [&](const std::optional<AccessPattern>& p) {
        if (!p) return false;
        // Without the value (data_is_ptr) a value-constrained pattern is assumed to match: fail closed.
        if (!value_known && dir == Dir::Write) {
          AccessPattern any = *p;
          any.value = {};
          return any.matches(region, offset, size, dir, value);
        }
        return p->matches(region, offset, size, dir, value);
      };
      if (matches(rule.deny)) return std::int32_t(r);
      if (k.live.armed[r] && matches(rule.then)) {
        if (k.live.rule_count[r] + 1 > rule.max) return std::int32_t(r);
        ++k.live.rule_count[r];
      }
      if (matches(rule.until)) k.live.armed[r] = 0, k.live.rule_count[r] = 0;
      if (matches(rule.after)) k.live.armed[r] = 1, k.live.rule_count[r] = 0;
    }
    return -1;
  }

  bool needsData(std::size_t d, const Register* reg) const noexcept {
    const auto& c = compiled[d];
    if (reg) {
      for (auto i = reg->begin; i < reg->end; ++i)
        if (c.values[c.candidates[i].value].kind != ValueKind::Any) return true;
      for (auto h = reg->hits_begin; h < reg->hits_end; ++h) {
        const auto& ch = c.channels[c.hits[h].channel];
        for (std::uint32_t n = 0; n < ch.nodes; ++n)
          if (test(&c.pool[c.hits[h].mask], n) && c.values[c.nodes[ch.info + n].value].kind != ValueKind::Any) return true;
      }
    }
    for (const auto& rule : devices[d].policy.rules)
      for (const auto* p : {&rule.deny, &rule.after, &rule.then, &rule.until})
        if (*p && (*p)->value.kind != ValueKind::Any) return true;
    return false;
  }

  void recordLearn(std::size_t d, const StepResult& r, std::uint32_t region, std::uint64_t offset, std::uint8_t size, Dir dir,
                   std::uint64_t value, EngineCounters& ec) noexcept {
    if (learn_size >= learn.size()) {
      ++ec.learn_overflow;
      return;
    }
    LearnEvent e;
    e.device = std::int32_t(d);
    e.graph = r.graph;
    e.region = region;
    e.offset = offset;
    e.size = size;
    e.dir = dir;
    e.value = value;
    const auto& c = compiled[d];
    if (const Register* reg = lookup(c, region, offset, dir))
      for (auto h = reg->hits_begin; h < reg->hits_end; ++h)
        if (c.hits[h].graph == std::uint32_t(std::max(r.graph, 0))) e.channel = std::int32_t(c.hits[h].channel);
    const Word* config = configOf(d);
    if (e.channel >= 0 && !idleOf(c, config)[std::size_t(e.channel)]) {
      const auto& ch = c.channels[std::size_t(e.channel)];
      for (std::uint32_t n = 0; n < ch.nodes; ++n)
        if (test(config + ch.state, n)) {
          e.previous_node = std::int32_t(n);
          break;
        }
    }
    learn[learn_size++] = e;
  }
};

Engine::Engine(std::unique_ptr<Impl> impl, EngineOptions options) : impl_(std::move(impl)), mode_(options.mode) {}
Engine::~Engine() = default;

namespace {
// Fail closed on whole devices: QEMU often serves the same registers through more than one BAR (rtl8139's
// I/O BAR 0 and MMIO BAR 1), and a policy drawn from one driver's accesses names only the BARs that driver
// used. Every BAR the instance implements that the policy has no region for gets a guard region whose
// accesses are all refused (RegionUse::Uncovered, reason uncovered-region); a policy lets one through only
// by declaring it pass with a reason. BARs 0-3 of a compatibility-mode IDE channel decode nothing of their
// own (the bus binds the channel's legacy ports, DeviceBus::legacyIdeWindow), so they get no guard.
void guardUncoveredBars(BoundDevice& d) {
  if (!d.instance.pci) return;
  for (int b = 0; b < 6; ++b) {
    const auto& bar = d.instance.bars[std::size_t(b)];
    if (bar.kind == BarKind::None || bar.size == 0) continue;
    if (std::ranges::any_of(d.policy.regions, [b](const RegionSpec& r) { return r.bar == b; })) continue;
    if (DeviceBus::legacyIdeWindow(d.instance, b)) continue;
    RegionSpec guard;
    guard.name = "BAR" + std::to_string(b) + " (uncovered)";
    guard.space = bar.kind == BarKind::Io ? RegionSpace::Io : RegionSpace::Mem;
    guard.bar = b;
    guard.length = bar.size;
    guard.use = RegionUse::Uncovered;
    d.policy.regions.push_back(std::move(guard));
  }
}
}  // namespace

Result<std::unique_ptr<Engine>> Engine::create(std::vector<BoundDevice> devices, EngineOptions options) {
  auto impl = std::make_unique<Impl>();
  // Each policy set gets a bus of its own (sets may divide one device into different regions); a set's
  // devices are contiguous, so a bus's device k is devices[first + k].
  std::stable_sort(devices.begin(), devices.end(), [](const BoundDevice& a, const BoundDevice& b) { return a.set < b.set; });
  std::vector<std::vector<BusDevice>> set_devices(1);
  std::vector<std::size_t> set_first{0};
  // The whole device is guarded once, in the lowest set that covers it (the union of its driver's
  // graphs when there is one): an intersect set (datasheet, stop-gaps) judges only its own regions,
  // since a port a set has no region for is not that set's to refuse.
  std::vector<std::string> guarded;
  for (std::size_t i = 0; i < devices.size(); ++i) {
    auto& d = devices[i];
    auto problems = validate(d.policy);
    if (!problems.empty())
      return fail(d.policy.source.empty() ? d.policy.name : d.policy.source, problems.front().path + ": " + problems.front().what);
    const bool whole_device = std::ranges::find(guarded, d.instance.name) == guarded.end();
    if (whole_device) {
      guardUncoveredBars(d);
      guarded.push_back(d.instance.name);
    }
    if (i > 0 && d.set != devices[i - 1].set) set_devices.emplace_back(), set_first.push_back(i);
    set_devices.back().push_back(BusDevice{d.instance, d.policy.regions, whole_device});
  }
  for (std::size_t s = 0; s < set_devices.size(); ++s) {
    auto bus = DeviceBus::create(std::move(set_devices[s]));
    if (!bus) {
      if (set_devices.size() == 1) return std::unexpected(bus.error());
      return fail(bus.error().where, bus.error().what + " (policy set '" + devices[set_first[s]].set_name + "')");
    }
    if (s == 0) {
      impl->bus = std::move(*bus);
    } else {
      impl->extra_buses.push_back(std::move(*bus));
      impl->extra_first.push_back(set_first[s]);
    }
  }
  impl->set_verdicts.resize(set_devices.size());
  for (const auto& d : devices) {
    impl->compiled.push_back(compile(d.policy));
    impl->cursors.push_back(makeCursor(impl->compiled.back(), d.policy.rules.size()));
    impl->caches.push_back(makeTransitionCache(impl->compiled.back(), options.transition_cache));
  }
  impl->counters.resize(devices.size());
  for (std::size_t d = 0; d < devices.size(); ++d) {
    auto& t = impl->caches[d];
    auto& k = impl->cursors[d];
    const auto& c = impl->compiled[d];
    impl->hot.push_back(HotDevice{t.capacity ? t.transitions.data() : nullptr, t.loop_ops.data(), t.transition_mask, kNone, false,
                                  k.live.counters.data(), k.live.counting.data(), c.loop_limit.data(), c.loop_words});
  }
  impl->devices = std::move(devices);
  impl->learn.resize(options.learn_capacity);
  std::unique_ptr<Engine> engine(new Engine(std::move(impl), options));
  engine->impl_->engine_counters = &engine->engine_counters_;
  engine->layered_ = !engine->impl_->extra_buses.empty();
  if (options.start == StartState::Unsynchronised) engine->resynchronise();
  return engine;
}

void Engine::resynchronise() noexcept {
  for (std::size_t d = 0; d < impl_->devices.size(); ++d) impl_->unsync(d);
}

std::size_t Engine::deviceCount() const noexcept { return impl_->devices.size(); }
const BoundDevice& Engine::device(std::size_t i) const noexcept { return impl_->devices[i]; }
const DeviceCounters& Engine::counters(std::size_t d) const noexcept { return impl_->counters[d]; }
const DeviceBus& Engine::bus() const noexcept { return impl_->bus; }
std::size_t Engine::setCount() const noexcept { return impl_->extra_buses.size() + 1; }

Engine::BusSlot Engine::busOf(std::size_t device) const noexcept {
  for (std::size_t s = impl_->extra_buses.size(); s > 0; --s)
    if (device >= impl_->extra_first[s - 1]) return {&impl_->extra_buses[s - 1], device - impl_->extra_first[s - 1]};
  return {&impl_->bus, device};
}

std::vector<DeviceBus::UnboundRegion> Engine::unboundRegions() const {
  std::vector<DeviceBus::UnboundRegion> out = impl_->bus.unboundRegions();
  for (std::size_t s = 0; s < impl_->extra_buses.size(); ++s)
    for (auto u : impl_->extra_buses[s].unboundRegions()) {
      u.device += impl_->extra_first[s];
      out.push_back(std::move(u));
    }
  return out;
}

// Verdicts are returned as prvalues built in one expression: assembling a local field by field and
// copying it out cost a store-forwarding stall per request (measured with perf on the floppy trace).
namespace {
constexpr Verdict makeVerdict(Action action, Reason reason, std::int32_t device = -1, std::int32_t graph = -1,
                              std::int32_t node = -1, std::int32_t rule = -1, Malformation m = Malformation::None,
                              Escalation e = Escalation::None, bool monitored = false) noexcept {
  return Verdict{action, reason, m, e, monitored, device, graph, node, rule};
}
}  // namespace

Verdict Engine::onRequest(const IoRequest& request) noexcept {
  ++engine_counters_.requests;
  // Fast path: a single port access without pointer data (nearly every request of a PIO driver) whose
  // step the transition cache knows. It decides only what decide() would decide the same way, with
  // the same effects, and hands everything else to decide() before changing anything.
  const std::uint8_t size = request.size;
  if (!layered_ && request.type == IoType::Pio && request.count == 1 && std::uint8_t(request.dir) <= 1 &&
      (size & (size - 1)) == 0 && size - 1u < 8u && request.addr <= kMaxPort + 1 - size &&
      !(request.dir == Dir::Write && request.data_is_ptr)) {
    auto& I = *impl_;
    const PortRoute& route = I.routeOf(request.addr);
    if (route.device == kUnclaimedPort) {
      ++engine_counters_.unclaimed;
      return makeVerdict(Action::Forward, Reason::Unclaimed);
    }
    if (route.device >= 0 && size <= route.room) {
      const std::uint32_t reg = route.reg[std::uint8_t(request.dir)];
      const auto d = std::size_t(route.device);
      Impl::StepResult r;
      if (reg != 0 && I.cachedStep(d, reg - 1, size, request.dir == Dir::Write, maskToSize(request.data, size), r)) {
        ++I.counters[d].forwarded;
        return makeVerdict(Action::Forward, Reason::None, route.device, r.graph, r.node);
      }
    }
  }
  return decide(request);
}

Verdict Engine::decide(const IoRequest& request) noexcept {
  if (const auto m = classify(request); m != Malformation::None) {
    ++engine_counters_.malformed;
    return makeVerdict(Action::Refuse, Reason::Malformed, -1, -1, -1, -1, m);
  }
  if (request.type == IoType::TimeOffset || request.type == IoType::Invalidate)
    return makeVerdict(Action::Forward, Reason::Unclaimed);
  auto& I = *impl_;
  if (!layered_) {
    const Verdict v = judge(request, I.bus, 0);
    if (v.device < 0 && v.reason == Reason::Unclaimed) ++engine_counters_.unclaimed;
    return v;
  }
  // Policy sets intersect: every set judges the request on its own bus (so each sees every config
  // cycle), and the first set that refuses decides. The sets that accepted a refused request step back
  // to where they stood, since the device never sees it (judge() backed them up).
  const std::size_t sets = I.set_verdicts.size();
  std::size_t refused = sets, monitored = sets, claimed = sets;
  for (std::size_t s = 0; s < sets; ++s) {
    const Verdict v = s == 0 ? judge(request, I.bus, 0) : judge(request, I.extra_buses[s - 1], I.extra_first[s - 1]);
    I.set_verdicts[s] = v;
    if (v.action == Action::Refuse) refused = std::min(refused, s);
    else if (v.monitored) monitored = std::min(monitored, s);
    else if (v.device >= 0) claimed = std::min(claimed, s);
  }
  if (refused < sets) {
    for (const Verdict& v : I.set_verdicts)
      if (v.action == Action::Forward && v.device >= 0 && !v.monitored) {
        I.restore(std::size_t(v.device));
        --I.counters[std::size_t(v.device)].forwarded;
      }
    return I.set_verdicts[refused];
  }
  if (monitored < sets) return I.set_verdicts[monitored];
  if (claimed < sets) return I.set_verdicts[claimed];
  ++engine_counters_.unclaimed;
  return makeVerdict(Action::Forward, Reason::Unclaimed);
}

Verdict Engine::judge(const IoRequest& request, DeviceBus& bus, std::size_t first) noexcept {
  auto& I = *impl_;
  const BusTarget t = bus.route(request);
  if (t.device < 0) return makeVerdict(Action::Forward, Reason::Unclaimed);
  const auto d = first + std::size_t(t.device);
  const auto device = std::int32_t(d);
  if (layered_) I.backup(d);
  auto& dc = I.counters[d];
  const auto& c = I.compiled[d];
  const Mode mode = this->mode();
  // Every refusal goes through here: counted by mechanism, and forwarded anyway outside enforce mode.
  auto refuse = [&](Reason r, std::int32_t graph = -1, std::int32_t rule = -1, Malformation m = Malformation::None) {
    switch (r) {
      case Reason::Order: ++dc.refused_order; break;
      case Reason::Value: ++dc.refused_value; break;
      case Reason::Count: ++dc.refused_count; break;
      case Reason::StopGap: ++dc.refused_stopgap; break;
      case Reason::Malformed: ++dc.refused_malformed; break;
      case Reason::NeedsData: ++dc.needs_data; break;
      case Reason::Uncovered: ++dc.refused_uncovered; break;
      default: break;
    }
    if (mode == Mode::Enforce) return makeVerdict(Action::Refuse, r, device, graph, -1, rule, m, c.escalation);
    ++dc.monitored;
    return makeVerdict(Action::Forward, r, device, graph, -1, rule, m, Escalation::None, true);
  };
  if (t.region == kBarTailRegion) return refuse(Reason::Uncovered);  // the BAR past its policy region
  if (t.region != kNoRegion) {
    switch (I.devices[d].policy.regions[t.region].use) {
      case RegionUse::Filter: break;
      case RegionUse::Uncovered: return refuse(Reason::Uncovered);
      case RegionUse::Pass:
        if (t.crosses) break;  // an access running out of the region is malformed, pass or not
        ++dc.passed;
        return makeVerdict(Action::Forward, Reason::None, t.device);
    }
  }
  if (t.crosses) return refuse(Reason::Malformed, -1, -1, Malformation::CrossesRegion);
  if (t.config && !c.config_by_graph) {
    // The PCI core's view of config space; the device's graphs are not consulted.
    if (standardConfigAllows(t.offset, request.size, request.dir)) {
      ++dc.forwarded;
      return makeVerdict(Action::Forward, Reason::None, device);
    }
    return refuse(Reason::Order);
  }
  const std::uint32_t region = t.region;
  const bool is_write = request.dir == Dir::Write;
  const bool value_known = !(is_write && request.data_is_ptr);
  const std::uint64_t value = value_known ? maskToSize(request.data, request.size) : 0;
  const Register* reg = region == kNoRegion ? nullptr : I.lookup(c, region, t.offset, request.dir);
  if (!value_known && I.needsData(d, reg)) return refuse(Reason::NeedsData);

  // REP requests are `count` accesses to the same register (PIO) or to consecutive ones (MMIO).
  const std::uint32_t reps = request.count;
  if (reps > 1) I.backup(d);
  Impl::StepResult last;
  for (std::uint32_t rep = 0; rep < reps; ++rep) {
    std::uint64_t offset = t.offset;
    if (request.type == IoType::Copy)
      offset = request.df ? t.offset - std::uint64_t(rep) * request.size : t.offset + std::uint64_t(rep) * request.size;
    const Register* r = rep == 0 || offset == t.offset ? reg : I.lookup(c, region, offset, request.dir);
    if (c.has_rules) {
      if (const auto rule = I.rules(d, region, offset, request.size, request.dir, value, value_known); rule >= 0) {
        if (reps > 1) I.restore(d);
        const Verdict v = refuse(Reason::StopGap, -1, rule);
        if (mode != Mode::Enforce) I.unsync(d), ++dc.resyncs;
        return v;
      }
    }
    if (!c.has_graphs) continue;  // rules-only policy: everything the rules allow passes
    last = I.step(d, r, request.size, is_write, value_known, value);
    if (!last.accepted) {
      if (reps > 1) I.restore(d);
      const Verdict v = refuse(last.reason, last.graph);
      if (mode == Mode::Learn) I.recordLearn(d, last, region, offset, request.size, request.dir, value, engine_counters_);
      if (mode != Mode::Enforce) {
        // The device saw an access the graphs did not expect: its position is unknown now.
        I.unsync(d);
        ++dc.resyncs;
      }
      return v;
    }
  }
  ++dc.forwarded;
  return makeVerdict(Action::Forward, Reason::None, device, last.graph, last.node);
}

std::string Engine::graphName(std::size_t d, std::int32_t g) const {
  const auto& graphs = impl_->devices[d].policy.graphs;
  return g >= 0 && std::size_t(g) < graphs.size() ? graphs[std::size_t(g)].name : std::string("-");
}

std::string Engine::nodeName(std::size_t d, std::int32_t, std::int32_t node) const {
  const auto& names = impl_->compiled[d].names;
  return node >= 0 && std::size_t(node) < names.size() ? names[std::size_t(node)] : std::string("-");
}

std::string Engine::expectedNext(std::size_t d, std::size_t limit) const {
  const auto& c = impl_->compiled[d];
  const Word* config = impl_->configOf(d);
  const auto& policy = impl_->devices[d].policy;
  std::string out;
  std::size_t shown = 0, total = 0;
  for (std::uint32_t g = 0; g < c.graphs.size(); ++g) {
    if (!aliveOf(c, config)[g]) continue;
    for (auto ch = c.graphs[g].channels_begin; ch < c.graphs[g].channels_end; ++ch) {
      const auto& cc = c.channels[ch];
      const Word* S = config + cc.state;
      const bool idle_able = idleOf(c, config)[ch] || intersects(S, &c.pool[cc.exits], cc.words);
      for (std::uint32_t n = 0; n < cc.nodes; ++n) {
        const bool reachable = (idle_able && test(&c.pool[cc.entries], n)) || intersects(&c.pool[cc.pred + n * cc.words], S, cc.words);
        if (!reachable) continue;
        ++total;
        if (shown < limit) {
          const auto& node = policy.graphs[g].channels[ch - c.graphs[g].channels_begin].nodes[n];
          char buf[96];
          std::snprintf(buf, sizeof buf, " (%s %s+0x%llx)", toString(node.dir), policy.regions[node.region].name.c_str(),
                        static_cast<unsigned long long>(node.offset));
          out += (shown ? ", " : "") + c.names[cc.first_name + n] + buf;
          ++shown;
        }
      }
    }
  }
  if (total > shown) out += ", … (" + std::to_string(total - shown) + " more)";
  if (total == 0) out = "nothing (every live sequence is complete or dead; only stateless accesses and resets)";
  return out;
}

std::vector<LearnEvent> Engine::takeLearnEvents() {
  std::vector<LearnEvent> out(impl_->learn.begin(), impl_->learn.begin() + std::ptrdiff_t(impl_->learn_size));
  impl_->learn_size = 0;
  return out;
}

}  // namespace iof
