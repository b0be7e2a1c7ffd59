#include "ioreq_filter/policy/policy_diff.h"

#include <algorithm>
#include <cstdio>
#include <map>
#include <set>
#include <tuple>

namespace iof {
namespace {

std::string hex(std::uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(v));
  return buf;
}

std::string spaceName(RegionSpace s) { return s == RegionSpace::Io ? "io" : s == RegionSpace::Mem ? "mem" : "config"; }

std::string regionText(const RegionSpec& r) {
  std::string out = spaceName(r.space);
  if (r.bar >= 0) out += " BAR" + std::to_string(r.bar);
  else if (r.space != RegionSpace::Config) out += " at " + hex(r.base);
  return out + " length " + hex(r.length);
}

std::string valueText(const ValueConstraint& v) {
  switch (v.kind) {
    case ValueKind::Any: return "any";
    case ValueKind::Exact: return "exact " + hex(v.a);
    case ValueKind::Mask: return "mask " + hex(v.a) + " equals " + hex(v.b);
    case ValueKind::Range: return "range " + hex(v.a) + ".." + hex(v.b);
    case ValueKind::Set: {
      std::string s = "set {";
      for (std::size_t i = 0; i < v.set.size(); ++i) s += (i ? ", " : "") + hex(v.set[i]);
      return s + "}";
    }
  }
  return "?";
}

[[maybe_unused]] bool sameValue(const ValueConstraint& a, const ValueConstraint& b) {
  if (a.kind != b.kind) return false;
  switch (a.kind) {
    case ValueKind::Any: return true;
    case ValueKind::Exact: return a.a == b.a;
    case ValueKind::Mask:
    case ValueKind::Range: return a.a == b.a && a.b == b.b;
    case ValueKind::Set: return a.set == b.set;
  }
  return false;
}

std::string regionName(const DevicePolicy& p, std::uint32_t r) { return r < p.regions.size() ? p.regions[r].name : "#" + std::to_string(r); }

// Everything of a node the engine uses, in one line (no provenance).
std::string nodeText(const DevicePolicy& p, const NodeSpec& n) {
  std::string s = regionName(p, n.region) + "+" + hex(n.offset) + (n.size ? " size " + std::to_string(n.size) : " any size") +
                  (n.dir == Dir::Read ? " read" : " write");
  if (n.dir == Dir::Write) s += " " + valueText(n.value);
  if (n.reset) s += " reset";
  return s;
}

std::string provenanceText(const Provenance& p) {
  std::string s = p.function.empty() ? "-" : p.function;
  if (p.address) s += " @" + hex(p.address);
  if (!p.source.empty()) s += " (" + p.source + ")";
  return s;
}

std::string loopText(const ChannelSpec& c, const LoopSpec& l) {
  auto id = [&](std::uint32_t i) { return i < c.nodes.size() ? c.nodes[i].id : "#" + std::to_string(i); };
  std::set<std::string> members;
  for (auto m : l.members) members.insert(id(m));
  std::string s = "header " + id(l.header) + ", members {";
  bool first = true;
  for (const auto& m : members) s += (first ? "" : ", ") + m, first = false;
  return s + "}, " + (l.unbounded ? std::string("unbounded") : "max " + std::to_string(l.max_iterations));
}

std::string derivedText(const DerivedFrom& d) {
  std::string s = "guest_os '" + d.guest_os + "', driver '" + d.driver + "', build '" + d.build + "', method '" + d.method + "'";
  if (!d.firmware.empty()) s += ", firmware '" + d.firmware + "'";
  if (!d.builds.empty()) {
    s += ", builds [";
    for (std::size_t i = 0; i < d.builds.size(); ++i) s += (i ? ", '" : "'") + d.builds[i] + "'";
    s += "]";
  }
  return s;
}

std::string matchText(const DeviceMatch& m) {
  char buf[64];
  if (m.pci_vendor) {
    std::snprintf(buf, sizeof buf, "pci %04x:%04x", unsigned(*m.pci_vendor), unsigned(m.pci_device.value_or(0)));
    std::string s = buf;
    if (m.pci_class) s += " class " + hex(*m.pci_class);
    return s;
  }
  return "isa " + m.isa_kind + (m.isa_base ? " at " + hex(*m.isa_base) : "");
}

std::string patternText(const DevicePolicy& p, const std::optional<AccessPattern>& a) {
  if (!a) return "-";
  std::string s = regionName(p, a->region) + "+" + hex(a->offset_low);
  if (a->offset_high != a->offset_low) s += ".." + hex(a->offset_high);
  if (a->size) s += " size " + std::to_string(a->size);
  if (a->dir) s += *a->dir == Dir::Read ? " read" : " write";
  if (a->value.kind != ValueKind::Any) s += " " + valueText(a->value);
  return s;
}

std::string ruleText(const DevicePolicy& p, const StopGapRule& r) {
  return "deny " + patternText(p, r.deny) + ", after " + patternText(p, r.after) + ", then " + patternText(p, r.then) + ", max " +
         std::to_string(r.max) + ", until " + patternText(p, r.until);
}

class Differ {
 public:
  Differ(const DevicePolicy& a, const DevicePolicy& b, bool provenance, std::vector<PolicyChange>* out)
      : a_(a), b_(b), provenance_(provenance), out_(out) {}

  void device() {
    if (a_.name != b_.name) add(PolicyChange::Kind::Device, "device", "name '" + a_.name + "' -> '" + b_.name + "'");
    if (matchText(a_.match) != matchText(b_.match)) add(PolicyChange::Kind::Device, "device match", matchText(a_.match) + " -> " + matchText(b_.match));
    if (a_.config != b_.config) add(PolicyChange::Kind::Device, "device config", "changed");
    if (a_.on_violation != b_.on_violation) add(PolicyChange::Kind::Device, "on_violation", "changed");
    byName(a_.regions, b_.regions, [](const RegionSpec& r) { return r.name; },
           [&](const RegionSpec* x, const RegionSpec* y, const std::string& name) {
             const auto where = "region " + name;
             if (!x) add(PolicyChange::Kind::Device, where, "added: " + regionText(*y));
             else if (!y) add(PolicyChange::Kind::Device, where, "removed: " + regionText(*x));
             else if (regionText(*x) != regionText(*y)) add(PolicyChange::Kind::Device, where, regionText(*x) + " -> " + regionText(*y));
           });
  }

  void graphs() {
    const auto n = std::max(a_.graphs.size(), b_.graphs.size());
    for (std::size_t g = 0; g < n; ++g) {
      const GraphSpec* x = g < a_.graphs.size() ? &a_.graphs[g] : nullptr;
      const GraphSpec* y = g < b_.graphs.size() ? &b_.graphs[g] : nullptr;
      const auto where = "graph " + std::to_string(g) + " (" + (y ? y->name : x->name) + ")";
      if (!x) add(PolicyChange::Kind::Graph, where, "added: " + summary(*y) + ", derived from " + derivedText(y->derived_from));
      else if (!y) add(PolicyChange::Kind::Graph, where, "removed: " + summary(*x) + ", derived from " + derivedText(x->derived_from));
      else graph(where, *x, *y);
    }
  }

  void rules() {
    byName(a_.rules, b_.rules, [](const StopGapRule& r) { return r.id; },
           [&](const StopGapRule* x, const StopGapRule* y, const std::string& id) {
             const auto where = "rule " + id;
             if (!x) add(PolicyChange::Kind::Rules, where, "added: " + ruleText(b_, *y));
             else if (!y) add(PolicyChange::Kind::Rules, where, "removed: " + ruleText(a_, *x));
             else if (ruleText(a_, *x) != ruleText(b_, *y)) add(PolicyChange::Kind::Rules, where, ruleText(a_, *x) + " -> " + ruleText(b_, *y));
           });
  }

 private:
  static std::string summary(const GraphSpec& g) {
    std::size_t nodes = 0, edges = 0;
    for (const auto& c : g.channels) nodes += c.nodes.size(), edges += c.edges.size();
    return std::to_string(g.channels.size()) + " channel(s), " + std::to_string(nodes) + " nodes, " + std::to_string(edges) + " edges, " +
           std::to_string(g.anywhere.size()) + " stateless accesses";
  }

  void add(PolicyChange::Kind kind, std::string where, std::string what) {
    if (kind == PolicyChange::Kind::Provenance && !provenance_) return;
    out_->push_back(PolicyChange{kind, std::move(where), std::move(what)});
  }

  // Pairs the elements of two lists by key, in the order of the old list then the new one's additions.
  template <typename T, typename Key, typename Visit>
  static void byName(const std::vector<T>& a, const std::vector<T>& b, Key key, Visit visit) {
    std::map<std::string, const T*> in_b;
    for (const auto& y : b) in_b.emplace(key(y), &y);
    std::set<std::string> seen;
    for (const auto& x : a) {
      const auto k = key(x);
      if (!seen.insert(k).second) continue;
      auto it = in_b.find(k);
      visit(&x, it == in_b.end() ? nullptr : it->second, k);
    }
    for (const auto& y : b)
      if (seen.insert(key(y)).second) visit(nullptr, &y, key(y));
  }

  void nodes(const std::string& where, const std::vector<NodeSpec>& a, const std::vector<NodeSpec>& b) {
    byName(a, b, [](const NodeSpec& n) { return n.id; }, [&](const NodeSpec* x, const NodeSpec* y, const std::string& id) {
      const auto w = where + " node " + id;
      if (!x) return add(PolicyChange::Kind::Graph, w, "added: " + nodeText(b_, *y));
      if (!y) return add(PolicyChange::Kind::Graph, w, "removed: " + nodeText(a_, *x));
      if (nodeText(a_, *x) != nodeText(b_, *y)) add(PolicyChange::Kind::Graph, w, nodeText(a_, *x) + " -> " + nodeText(b_, *y));
      if (provenanceText(x->provenance) != provenanceText(y->provenance))
        add(PolicyChange::Kind::Provenance, w, "provenance " + provenanceText(x->provenance) + " -> " + provenanceText(y->provenance));
    });
  }

  static std::set<std::string> ids(const ChannelSpec& c, const std::vector<std::uint32_t>& list) {
    std::set<std::string> out;
    for (auto i : list) out.insert(i < c.nodes.size() ? c.nodes[i].id : "#" + std::to_string(i));
    return out;
  }

  void sets(const std::string& where, const std::string& what, const std::set<std::string>& a, const std::set<std::string>& b) {
    for (const auto& x : a)
      if (!b.count(x)) add(PolicyChange::Kind::Graph, where + " " + what + " " + x, "removed");
    for (const auto& y : b)
      if (!a.count(y)) add(PolicyChange::Kind::Graph, where + " " + what + " " + y, "added");
  }

  static std::set<std::string> edges(const ChannelSpec& c) {
    std::set<std::string> out;
    auto id = [&](std::uint32_t i) { return i < c.nodes.size() ? c.nodes[i].id : "#" + std::to_string(i); };
    for (auto [from, to] : c.edges) out.insert(id(from) + " -> " + id(to));
    return out;
  }

  void channel(const std::string& where, const ChannelSpec& x, const ChannelSpec& y) {
    nodes(where, x.nodes, y.nodes);
    sets(where, "edge", edges(x), edges(y));
    sets(where, "entry", ids(x, x.entries), ids(y, y.entries));
    sets(where, "exit", ids(x, x.exits), ids(y, y.exits));
    byName(x.loops, y.loops, [](const LoopSpec& l) { return l.id; }, [&](const LoopSpec* lx, const LoopSpec* ly, const std::string& id) {
      const auto w = where + " loop " + id;
      if (!lx) return add(PolicyChange::Kind::Graph, w, "added: " + loopText(y, *ly));
      if (!ly) return add(PolicyChange::Kind::Graph, w, "removed: " + loopText(x, *lx));
      if (loopText(x, *lx) != loopText(y, *ly)) add(PolicyChange::Kind::Graph, w, loopText(x, *lx) + " -> " + loopText(y, *ly));
      if (provenanceText(lx->provenance) != provenanceText(ly->provenance))
        add(PolicyChange::Kind::Provenance, w, "provenance " + provenanceText(lx->provenance) + " -> " + provenanceText(ly->provenance));
    });
  }

  void graph(const std::string& where, const GraphSpec& x, const GraphSpec& y) {
    if (x.name != y.name) add(PolicyChange::Kind::Provenance, where, "name '" + x.name + "' -> '" + y.name + "'");
    const auto &dx = x.derived_from, &dy = y.derived_from;
    for (auto [key, a, b] : {std::tuple{"guest_os", &dx.guest_os, &dy.guest_os}, std::tuple{"driver", &dx.driver, &dy.driver},
                             std::tuple{"build", &dx.build, &dy.build}, std::tuple{"firmware", &dx.firmware, &dy.firmware},
                             std::tuple{"method", &dx.method, &dy.method}})
      if (*a != *b) add(PolicyChange::Kind::Provenance, where + " derived_from." + key, "'" + *a + "' -> '" + *b + "'");
    if (dx.builds != dy.builds) {
      auto list = [](const std::vector<std::string>& v) {
        std::string s = "[";
        for (std::size_t i = 0; i < v.size(); ++i) s += (i ? ", '" : "'") + v[i] + "'";
        return s + "]";
      };
      add(PolicyChange::Kind::Provenance, where + " derived_from.builds", list(dx.builds) + " -> " + list(dy.builds));
    }
    byName(x.channels, y.channels, [](const ChannelSpec& c) { return c.name; },
           [&](const ChannelSpec* cx, const ChannelSpec* cy, const std::string& name) {
             const auto w = where + " channel " + name;
             if (!cx) return add(PolicyChange::Kind::Graph, w, "added with " + std::to_string(cy->nodes.size()) + " nodes");
             if (!cy) return add(PolicyChange::Kind::Graph, w, "removed with " + std::to_string(cx->nodes.size()) + " nodes");
             channel(w, *cx, *cy);
           });
    nodes(where + " anywhere", x.anywhere, y.anywhere);
  }

  const DevicePolicy& a_;
  const DevicePolicy& b_;
  bool provenance_;
  std::vector<PolicyChange>* out_;
};

bool sameDevice(const DevicePolicy& a, const DevicePolicy& b, std::string* why) {
  std::vector<PolicyChange> changes;
  Differ(a, b, false, &changes).device();
  // Nodes name their region by index: a graph moves between the two only if the order is the same too.
  for (std::size_t r = 0; changes.empty() && r < a.regions.size() && r < b.regions.size(); ++r)
    if (a.regions[r].name != b.regions[r].name)
      changes.push_back({PolicyChange::Kind::Device, "regions", "in another order ('" + a.regions[r].name + "' and '" + b.regions[r].name + "' at " + std::to_string(r) + ")"});
  if (changes.empty()) return true;
  *why = changes.front().where + ": " + changes.front().what;
  return false;
}

}  // namespace

const char* changeKindName(PolicyChange::Kind kind) {
  switch (kind) {
    case PolicyChange::Kind::Device: return "device";
    case PolicyChange::Kind::Graph: return "graph";
    case PolicyChange::Kind::Rules: return "rules";
    case PolicyChange::Kind::Provenance: return "provenance";
  }
  return "?";
}

std::vector<PolicyChange> diffPolicies(const DevicePolicy& old_policy, const DevicePolicy& new_policy, bool provenance) {
  std::vector<PolicyChange> out;
  Differ d(old_policy, new_policy, provenance, &out);
  d.device();
  d.graphs();
  d.rules();
  return out;
}

bool sameGraph(const DevicePolicy& pa, const GraphSpec& a, const DevicePolicy& pb, const GraphSpec& b) {
  // The graph comparison of diffPolicies on two one-graph policies sharing pa's and pb's regions.
  DevicePolicy x, y;
  x.regions = pa.regions, y.regions = pb.regions;
  x.graphs = {a}, y.graphs = {b};
  std::vector<PolicyChange> changes;
  Differ(x, y, false, &changes).graphs();
  return changes.empty();
}

Result<AddedBuild> addBuild(const DevicePolicy& shipped, const DevicePolicy& fresh) {
  const auto where = fresh.source.empty() ? std::string("fresh policy") : fresh.source;
  const auto into = shipped.source.empty() ? std::string("shipped policy") : shipped.source;
  if (fresh.graphs.size() != 1)
    return fail(where, "a fresh build's policy holds exactly one graph, this one holds " + std::to_string(fresh.graphs.size()));
  const auto& graph = fresh.graphs.front();
  const auto& build = graph.derived_from.guest_os;
  if (build.empty()) return fail(where, "graph '" + graph.name + "' does not name its build (derived_from.guest_os is empty)");
  if (fresh.name != shipped.name) return fail(where, "device '" + fresh.name + "' is not the device '" + shipped.name + "' of " + into);

  AddedBuild out;
  out.policy = shipped;
  // The build is checked again now: whatever an earlier run recorded about it no longer counts.
  for (auto& g : out.policy.graphs) std::erase(g.derived_from.builds, build);

  std::string why;
  const bool same_device = sameDevice(shipped, fresh, &why);
  auto same_build = std::find_if(out.policy.graphs.begin(), out.policy.graphs.end(),
                                 [&](const GraphSpec& g) { return g.derived_from.guest_os == build; });
  if (same_build != out.policy.graphs.end() && out.policy.graphs.size() == 1) {
    out.outcome = AddedBuild::Outcome::ReplacedWhole;
    out.policy = fresh;
    out.policy.rules = shipped.rules;
    out.policy.source = shipped.source;
    out.summary = "same build as shipped (" + build + "): the policy is the one generated now";
    return out;
  }
  if (!same_device)
    return fail(where, "the device section differs from " + into + " (" + why +
                           "): graphs of several builds share one device section, so this build needs a policy file of its own");
  if (same_build != out.policy.graphs.end()) {
    const bool same = sameGraph(out.policy, *same_build, fresh, graph);
    auto kept_builds = same ? same_build->derived_from.builds : std::vector<std::string>{};
    const auto name = same_build->name;
    const auto dropped = same_build->derived_from.builds.size() - kept_builds.size();
    *same_build = graph;
    same_build->name = name;
    same_build->derived_from.builds = kept_builds;
    out.outcome = AddedBuild::Outcome::Replaced;
    out.summary = "graph " + std::to_string(same_build - out.policy.graphs.begin()) + " (" + name + ") regenerated from the same build (" +
                  build + ")" + (same ? ", graph unchanged" : ", graph changed") +
                  (dropped ? "; " + std::to_string(dropped) + " other build(s) it had been checked against are no longer listed" : "");
    return out;
  }
  for (std::size_t g = 0; g < out.policy.graphs.size(); ++g) {
    auto& existing = out.policy.graphs[g];
    if (!sameGraph(out.policy, existing, fresh, graph)) continue;
    existing.derived_from.builds.push_back(build);
    out.outcome = AddedBuild::Outcome::SameGraph;
    out.summary = "provenance only: " + build + " gives the same graph as graph " + std::to_string(g) + " (" + existing.name + ", from " +
                  existing.derived_from.guest_os + "); build listed in its derived_from.builds";
    return out;
  }
  auto added = graph;
  added.name = graph.name + " [" + build + "]";
  out.policy.graphs.push_back(std::move(added));
  out.outcome = AddedBuild::Outcome::Added;
  out.summary = "graph change: " + build + " gives a graph equal to none of the " + std::to_string(shipped.graphs.size()) +
                " shipped; added as graph " + std::to_string(out.policy.graphs.size() - 1) + " (the policy is their union)";
  return out;
}

}  // namespace iof
