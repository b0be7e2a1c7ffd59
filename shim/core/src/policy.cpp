#include "ioreq_filter/core/policy.h"

#include <algorithm>
#include <cstdio>
#include <map>
#include <set>
#include <tuple>

namespace iof {

bool AccessPattern::matches(std::uint32_t reg, std::uint64_t offset, std::uint8_t sz, Dir d,
                            std::uint64_t v) const noexcept {
  if (reg != region || offset < offset_low || offset > offset_high) return false;
  if (size != 0 && size != sz) return false;
  if (dir && *dir != d) return false;
  return d == Dir::Read || value.matches(v);
}

namespace {

std::string at(const std::string& base, const char* leaf) { return base + "/" + leaf; }
std::string at(const std::string& base, const char* leaf, std::size_t i) {
  return base + "/" + leaf + "/" + std::to_string(i);
}

struct Checker {
  const DevicePolicy& policy;
  std::vector<PolicyProblem> problems;

  void problem(std::string path, std::string what) { problems.push_back({std::move(path), std::move(what)}); }

  void checkValue(const ValueConstraint& v, std::uint8_t size, const std::string& path) {
    const std::uint64_t limit = size == 0 || size == 8 ? ~0ull : (1ull << (8 * size)) - 1;
    switch (v.kind) {
      case ValueKind::Exact:
        if (v.a > limit) problem(path, "exact value does not fit the access size");
        break;
      case ValueKind::Mask:
        if ((v.b & ~v.a) != 0) problem(path, "mask 'equals' has bits outside 'mask'; it can never match");
        break;
      case ValueKind::Range:
        if (v.a > v.b) problem(path, "range is empty (low > high)");
        break;
      case ValueKind::Set:
        if (v.set.empty()) problem(path, "value set is empty; it can never match");
        if (!std::is_sorted(v.set.begin(), v.set.end())) problem(path, "value set is not sorted");
        for (auto x : v.set)
          if (x > limit) problem(path, "value in set does not fit the access size");
        break;
      case ValueKind::Any:
        break;
    }
  }

  void checkAccess(std::uint32_t region, std::uint64_t offset, std::uint8_t size, const std::string& path) {
    if (region >= policy.regions.size()) {
      problem(at(path, "region"), "region index " + std::to_string(region) + " does not exist");
      return;
    }
    if (size != 0 && size != 1 && size != 2 && size != 4 && size != 8) problem(at(path, "size"), "size must be 1, 2, 4 or 8");
    const auto& r = policy.regions[region];
    if (offset >= r.length || (size != 0 && offset + size > r.length))
      problem(at(path, "offset"), "offset 0x" + hex(offset) + " (+" + std::to_string(size) + ") lies outside region '" +
                                      r.name + "' of length 0x" + hex(r.length));
  }

  static std::string hex(std::uint64_t v) {
    static const char* digits = "0123456789abcdef";
    std::string s;
    do {
      s.insert(s.begin(), digits[v & 15]);
      v >>= 4;
    } while (v);
    return s;
  }

  void checkNode(const NodeSpec& n, const std::string& path) {
    if (n.id.empty()) problem(at(path, "id"), "node id is empty");
    checkAccess(n.region, n.offset, n.size, path);
    if (n.region < policy.regions.size() && policy.regions[n.region].use != RegionUse::Filter)
      problem(at(path, "region"), "region '" + policy.regions[n.region].name + "' is declared pass: no graph node may lie in it");
    if (n.dir == Dir::Read && n.value.kind != ValueKind::Any)
      problem(at(path, "value"), "a read cannot carry a value constraint (the filter decides before the device answers)");
    checkValue(n.value, n.size, at(path, "value"));
  }

  void checkRegions() {
    std::set<std::string> names;
    for (std::size_t i = 0; i < policy.regions.size(); ++i) {
      const auto& r = policy.regions[i];
      const auto path = at("device", "regions", i);
      if (r.name.empty()) problem(at(path, "name"), "region name is empty");
      if (!names.insert(r.name).second) problem(at(path, "name"), "duplicate region name '" + r.name + "'");
      if (r.length == 0) problem(at(path, "length"), "region length is 0");
      if (r.use == RegionUse::Pass && r.pass_reason.empty())
        problem(at(path, "pass"), "a pass region needs a reason: why may its accesses go unfiltered?");
      if (r.use == RegionUse::Pass && r.space == RegionSpace::Config)
        problem(at(path, "pass"), "config space cannot be declared pass (\"config\" says how it is filtered)");
      if (r.use == RegionUse::Uncovered)
        problem(at(path, "name"), "region '" + r.name + "' is an engine-made uncovered-BAR guard, not a policy region");
      if (r.space == RegionSpace::Config) {
        if (r.length != 256 && r.length != 4096) problem(at(path, "length"), "config space is 256 or 4096 bytes");
        if (r.bar >= 0) problem(at(path, "bar"), "config space is not in a BAR");
      } else if (r.bar > 5) {
        problem(at(path, "bar"), "BAR index must be 0..5");
      } else if (r.bar >= 0 && (r.length & (r.length - 1)) != 0) {
        problem(at(path, "length"), "a BAR's length is a power of two");
      } else if (r.bar < 0 && r.space == RegionSpace::Io && r.base + r.length - 1 > kMaxPort) {
        problem(at(path, "base"), "port range runs past 0xffff");
      } else if (r.bar >= 0 && !policy.match.pci_vendor) {
        problem(at(path, "bar"), "a BAR region needs a PCI device match");
      }
    }
    for (std::size_t i = 0; i < policy.regions.size(); ++i)
      for (std::size_t j = i + 1; j < policy.regions.size(); ++j) {
        const auto &a = policy.regions[i], &b = policy.regions[j];
        if (a.bar < 0 && b.bar < 0 && a.space == b.space && a.space != RegionSpace::Config &&
            a.base < b.base + b.length && b.base < a.base + a.length)
          problem(at("device", "regions", j), "region '" + b.name + "' overlaps region '" + a.name + "'");
        if (a.bar >= 0 && a.bar == b.bar) problem(at("device", "regions", j), "two regions claim BAR " + std::to_string(a.bar));
      }
  }

  void checkChannel(const ChannelSpec& c, const std::string& path) {
    std::set<std::string> ids;
    for (std::size_t i = 0; i < c.nodes.size(); ++i) {
      checkNode(c.nodes[i], at(path, "nodes", i));
      if (!c.nodes[i].id.empty() && !ids.insert(c.nodes[i].id).second)
        problem(at(at(path, "nodes", i), "id"), "duplicate node id '" + c.nodes[i].id + "'");
    }
    const auto n = c.nodes.size();
    for (std::size_t i = 0; i < c.edges.size(); ++i)
      if (c.edges[i].first >= n || c.edges[i].second >= n) problem(at(path, "edges", i), "edge names a node that does not exist");
    for (std::size_t i = 0; i < c.entries.size(); ++i)
      if (c.entries[i] >= n) problem(at(path, "entries", i), "entry names a node that does not exist");
    for (std::size_t i = 0; i < c.exits.size(); ++i)
      if (c.exits[i] >= n) problem(at(path, "exits", i), "exit names a node that does not exist");
    if (!c.nodes.empty() && c.entries.empty() &&
        std::none_of(c.nodes.begin(), c.nodes.end(), [](const NodeSpec& x) { return x.reset; }))
      problem(at(path, "entries"), "channel has no entry and no reset node: nothing can ever start it");
    for (std::size_t i = 0; i < c.loops.size(); ++i) {
      const auto& l = c.loops[i];
      const auto lp = at(path, "loops", i);
      if (l.header >= n) problem(at(lp, "header"), "loop header names a node that does not exist");
      if (std::find(l.members.begin(), l.members.end(), l.header) == l.members.end())
        problem(at(lp, "members"), "loop members do not include the header");
      for (auto m : l.members)
        if (m >= n) problem(at(lp, "members"), "loop member names a node that does not exist");
      if (!l.unbounded && l.max_iterations == 0) problem(at(lp, "max"), "bounded loop with max 0 can never run");
      for (std::size_t j = 0; j < i; ++j)
        if (c.loops[j].header == l.header) problem(at(lp, "header"), "two loops share a header node");
    }
  }

  void checkGraphs() {
    if (policy.graphs.empty() && policy.rules.empty()) problem("graphs", "policy has neither graphs nor stop-gap rules");
    for (std::size_t g = 0; g < policy.graphs.size(); ++g) {
      const auto& graph = policy.graphs[g];
      const auto gp = at("", "graphs", g).substr(1);
      if (graph.name.empty()) problem(at(gp, "name"), "graph name is empty");
      for (std::size_t i = 0; i < graph.anywhere.size(); ++i) checkNode(graph.anywhere[i], at(gp, "anywhere", i));
      // A stateful register moves exactly one cursor; otherwise interleaving two channels (or two vCPUs)
      // could restart a sequence the device is still in.
      std::map<std::tuple<std::uint32_t, std::uint64_t, Dir>, std::size_t> owner;
      for (std::size_t c = 0; c < graph.channels.size(); ++c) {
        const auto cp = at(gp, "channels", c);
        checkChannel(graph.channels[c], cp);
        for (std::size_t i = 0; i < graph.channels[c].nodes.size(); ++i) {
          const auto& node = graph.channels[c].nodes[i];
          auto [it, fresh] = owner.emplace(std::make_tuple(node.region, node.offset, node.dir), c);
          if (!fresh && it->second != c)
            problem(at(cp, "nodes", i), "register (region " + std::to_string(node.region) + ", offset 0x" + hex(node.offset) +
                                            ", " + toString(node.dir) + ") already belongs to channel '" +
                                            graph.channels[it->second].name + "'; a register moves one cursor only");
        }
      }
    }
  }

  void checkPattern(const AccessPattern& p, const std::string& path) {
    if (p.region >= policy.regions.size()) {
      problem(at(path, "region"), "region index does not exist");
      return;
    }
    if (p.offset_low > p.offset_high) problem(at(path, "offset"), "offset range is empty");
    if (p.offset_high >= policy.regions[p.region].length) problem(at(path, "offset"), "offset lies outside the region");
    checkValue(p.value, p.size, at(path, "value"));
  }

  void checkRules() {
    std::set<std::string> ids;
    for (std::size_t i = 0; i < policy.rules.size(); ++i) {
      const auto& r = policy.rules[i];
      const auto rp = at("", "rules", i).substr(1);
      if (r.id.empty()) problem(at(rp, "id"), "rule id is empty");
      if (!ids.insert(r.id).second) problem(at(rp, "id"), "duplicate rule id '" + r.id + "'");
      const bool sequence = r.after || r.then || r.until;
      if (r.deny && sequence) problem(rp, "a rule is either 'deny' or 'after'/'then'/'max', not both");
      if (!r.deny && !(r.after && r.then)) problem(rp, "a rule needs 'deny', or both 'after' and 'then'");
      if (r.deny) checkPattern(*r.deny, at(rp, "deny"));
      if (r.after) checkPattern(*r.after, at(rp, "after"));
      if (r.then) checkPattern(*r.then, at(rp, "then"));
      if (r.until) checkPattern(*r.until, at(rp, "until"));
    }
  }
};

}  // namespace

std::vector<PolicyProblem> validate(const DevicePolicy& policy) {
  Checker c{policy, {}};
  if (policy.name.empty()) c.problem("device/name", "device name is empty");
  const bool pci = policy.match.pci_vendor.has_value();
  if (pci != policy.match.pci_device.has_value()) c.problem("device/match/pci", "PCI match needs both vendor and device");
  if (!pci && policy.match.isa_kind.empty()) c.problem("device/match", "device match needs 'pci' (vendor, device) or 'isa' (kind)");
  if (pci && !policy.match.isa_kind.empty()) c.problem("device/match", "a device is either PCI or ISA");
  // Advertised once, never honoured (the relay only counted pause_unavailable): an option that silently
  // does less than it says is refused rather than kept.
  if (policy.on_violation == ViolationAction::RefuseAndPause) c.problem("on_violation", "refuse-and-pause is not available: Xen has no pause device-model operation, so a (restricted) daemon could only refuse and count; use refuse-and-crash to stop the guest, or refuse");
  if (policy.regions.empty()) c.problem("device/regions", "device has no regions");
  c.checkRegions();
  c.checkGraphs();
  c.checkRules();
  return std::move(c.problems);
}

const char* toString(Combine c) noexcept { return c == Combine::Union ? "union" : "intersect"; }

namespace {

std::string hexOf(std::uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "%llx", static_cast<unsigned long long>(v));
  return buf;
}

// "io 0x3f0..0x3f7", "BAR0 (mem) 0x0..0xfff", "config 0x0..0xff": where a region is, for messages.
std::string placeOf(const RegionSpec& r) {
  const char* space = r.space == RegionSpace::Io ? "io" : r.space == RegionSpace::Mem ? "mem" : "config";
  const std::uint64_t first = r.bar >= 0 || r.space == RegionSpace::Config ? 0 : r.base;
  std::string at = r.bar >= 0 ? "BAR" + std::to_string(r.bar) + " (" + space + ")" : std::string(space);
  return at + " 0x" + hexOf(first) + "..0x" + hexOf(first + (r.length ? r.length - 1 : 0));
}

bool samePlace(const RegionSpec& a, const RegionSpec& b) {
  if (a.space != b.space || a.bar != b.bar || a.length != b.length) return false;
  return a.bar >= 0 || a.space == RegionSpace::Config || a.base == b.base;
}

// Two regions claim some of the same addresses: same space and BAR (a BAR region starts at its BAR),
// or fixed ranges that intersect.
bool overlaps(const RegionSpec& a, const RegionSpec& b) {
  if (a.space != b.space || a.bar != b.bar) return false;
  if (a.bar >= 0 || a.space == RegionSpace::Config) return true;
  return a.base < b.base + b.length && b.base < a.base + a.length;
}

std::string identityOf(const DeviceMatch& m) {
  char buf[64];
  if (m.pci_vendor) {
    std::snprintf(buf, sizeof buf, "pci %04x:%04x", unsigned(*m.pci_vendor), unsigned(m.pci_device.value_or(0)));
    return buf;
  }
  return "isa kind '" + m.isa_kind + "'";
}

}  // namespace

Result<DevicePolicy> mergePolicies(const std::vector<DevicePolicy>& policies) {
  if (policies.empty()) return fail("merge", "nothing to merge");
  DevicePolicy out = policies.front();
  // Which file each merged region came from, for messages.
  std::vector<std::string> region_source(out.regions.size(), out.source);
  for (std::size_t i = 1; i < policies.size(); ++i) {
    const auto& p = policies[i];
    const auto where = p.source.empty() ? "policy " + std::to_string(i) : p.source;
    if (p.name != out.name)
      return fail(where, "device '" + p.name + "' cannot merge with device '" + out.name + "' of " + out.source +
                             ": policies for one device must use one device name");
    if (p.match.pci_vendor != out.match.pci_vendor || p.match.pci_device != out.match.pci_device ||
        p.match.isa_kind != out.match.isa_kind)
      return fail(where, "device identity (" + identityOf(p.match) + ") differs from " + out.source + " (" +
                             identityOf(out.match) + ")");
    if (p.combine != out.combine)
      return fail(where, std::string("combines by ") + toString(p.combine) + " but " + out.source + " combines by " +
                             toString(out.combine) + "; policies merged into one union must agree");
    std::vector<std::uint32_t> remap(p.regions.size());
    for (std::size_t r = 0; r < p.regions.size(); ++r) {
      const auto& reg = p.regions[r];
      auto same = std::find_if(out.regions.begin(), out.regions.end(), [&](const RegionSpec& x) { return samePlace(x, reg); });
      if (same != out.regions.end()) {
        if (same->use != reg.use || same->pass_reason != reg.pass_reason)
          return fail(where, "region '" + reg.name + "' (" + placeOf(reg) + ") is the range of region '" + same->name + "' of " +
                                 region_source[std::size_t(same - out.regions.begin())] +
                                 " but not declared alike (filter or pass, and pass's reason); a union needs one meaning per range");
        remap[r] = std::uint32_t(same - out.regions.begin());
        continue;
      }
      for (std::size_t x = 0; x < out.regions.size(); ++x) {
        const auto& have = out.regions[x];
        if (have.name == reg.name)
          return fail(where, "region '" + reg.name + "' (" + placeOf(reg) + ") has the name of region '" + have.name + "' of " +
                                 region_source[x] + " (" + placeOf(have) + ") but not its range; a union needs one range per region");
        if (overlaps(have, reg))
          return fail(where, "region '" + reg.name + "' (" + placeOf(reg) + ") overlaps region '" + have.name + "' of " +
                                 region_source[x] + " (" + placeOf(have) +
                                 ") without being the same range; a union of graphs needs the same register windows "
                                 "(regions are matched by range, not name). Independent models that divide the device "
                                 "differently combine by intersection: \"combine\": \"intersect\" in one of them");
      }
      out.regions.push_back(reg);
      region_source.push_back(where);
      remap[r] = std::uint32_t(out.regions.size() - 1);
    }
    auto fixNode = [&](NodeSpec& n) { n.region = remap.at(n.region); };
    auto fixPattern = [&](std::optional<AccessPattern>& pat) {
      if (pat) pat->region = remap.at(pat->region);
    };
    for (auto g : p.graphs) {
      for (auto& c : g.channels)
        for (auto& n : c.nodes) fixNode(n);
      for (auto& n : g.anywhere) fixNode(n);
      for (const auto& existing : out.graphs)
        if (existing.name == g.name) return fail(where, "graph name '" + g.name + "' already used by " + out.source);
      out.graphs.push_back(std::move(g));
    }
    for (auto r : p.rules) {
      fixPattern(r.deny), fixPattern(r.after), fixPattern(r.then), fixPattern(r.until);
      out.rules.push_back(std::move(r));
    }
    out.on_violation = std::max(out.on_violation, p.on_violation);
    if (p.config == ConfigPolicy::GraphOnly) out.config = ConfigPolicy::GraphOnly;
    out.source += "+" + p.source;
  }
  return out;
}

}  // namespace iof
