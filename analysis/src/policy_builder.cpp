#include "ioreq_filter/analysis/policy_builder.h"

#include <algorithm>
#include <functional>
#include <map>
#include <numeric>
#include <set>

#include "text_util.h"

namespace iof::analysis {
namespace {

struct UnionFind {
  std::vector<std::uint32_t> parent;
  explicit UnionFind(std::size_t n) : parent(n) { std::iota(parent.begin(), parent.end(), 0u); }
  std::uint32_t find(std::uint32_t x) {
    while (parent[x] != x) x = parent[x] = parent[parent[x]];
    return x;
  }
  void unite(std::uint32_t a, std::uint32_t b) { parent[find(a)] = find(b); }
};

std::uint64_t roundUpPow2(std::uint64_t v) {
  std::uint64_t p = 1;
  while (p < v) p <<= 1;
  return p;
}

Provenance provenanceOf(const ModuleAnalysis& a, CodeAddr insn, std::uint32_t function) {
  Provenance p;
  p.function = a.disassembly->functions()[function].name;
  p.address = offsetOf(insn);
  p.source = a.disassembly->module().describe(sectionOf(insn), offsetOf(insn));
  return p;
}

// Strongly connected components (Tarjan, iterative) of a small graph given as adjacency lists.
std::vector<std::vector<std::uint32_t>> stronglyConnected(const std::vector<std::vector<std::uint32_t>>& adj) {
  const std::uint32_t n = std::uint32_t(adj.size());
  std::vector<int> index(n, -1), low(n, 0);
  std::vector<char> on(n, 0);
  std::vector<std::uint32_t> stack;
  std::vector<std::vector<std::uint32_t>> out;
  int counter = 0;
  for (std::uint32_t root = 0; root < n; ++root) {
    if (index[root] >= 0) continue;
    std::vector<std::pair<std::uint32_t, std::size_t>> call{{root, 0}};
    index[root] = low[root] = counter++;
    stack.push_back(root);
    on[root] = 1;
    while (!call.empty()) {
      auto& [v, i] = call.back();
      if (i < adj[v].size()) {
        const std::uint32_t w = adj[v][i++];
        if (index[w] < 0) {
          index[w] = low[w] = counter++;
          stack.push_back(w);
          on[w] = 1;
          call.emplace_back(w, 0);
        } else if (on[w]) {
          low[v] = std::min(low[v], index[w]);
        }
        continue;
      }
      if (low[v] == index[v]) {
        std::vector<std::uint32_t> comp;
        std::uint32_t w;
        do {
          w = stack.back();
          stack.pop_back();
          on[w] = 0;
          comp.push_back(w);
        } while (w != v);
        out.push_back(std::move(comp));
      }
      const std::uint32_t done = v;
      call.pop_back();
      if (!call.empty()) low[call.back().first] = std::min(low[call.back().first], low[done]);
    }
  }
  return out;
}

}  // namespace

std::string defaultIsaKind(const std::string& module_name) {
  if (module_name == "floppy") return "isa-fdc";
  if (module_name == "parport_pc") return "isa-parallel";
  if (module_name == "pcspkr") return "isa-pcspk";
  return "";
}

Result<DevicePolicy> buildPolicy(ModuleAnalysis& a, const PolicyOptions& opt) {
  const Module& m = a.disassembly->module();
  DevicePolicy p;
  p.name = opt.device_name.empty() ? m.name : opt.device_name;

  // Regions: one per device base (and one for the device's fixed ports, if any).
  std::map<std::uint32_t, std::uint32_t> region_of_base;
  std::map<std::uint32_t, std::uint64_t> extent;  // base -> bytes used
  std::uint64_t port_lo = ~0ull, port_hi = 0;
  auto deviceAccess = [&](const Access& x) {
    if (x.where == Access::Where::BaseOffset) return x.offset >= 0 && x.offset_exact;
    return x.where == Access::Where::FixedPort && (x.position || x.dir == Dir::Read) && !x.why_unresolved.size() &&
           x.position;  // fixed ports count only when the options declared them the device's
  };
  for (const Access& x : a.accesses) {
    if (!deviceAccess(x)) continue;
    if (x.where == Access::Where::BaseOffset) {
      auto& e = extent[x.base];
      e = std::max<std::uint64_t>(e, std::uint64_t(x.offset) + std::max<std::uint8_t>(x.size, 1));
    } else {
      port_lo = std::min(port_lo, x.port);
      port_hi = std::max(port_hi, x.port + std::max<std::uint8_t>(x.size, 1) - 1);
    }
  }
  for (auto [base, bytes] : extent) {
    const DeviceBase& b = a.bases[base];
    RegionSpec r;
    r.name = b.name;
    r.length = roundUpPow2(bytes);
    if (b.kind == DeviceBase::PortCell) {
      r.space = RegionSpace::Io;
      // The base the module itself stores there (floppy: 0x3f0 in init_module); the first element's.
      std::vector<std::uint32_t> cells = b.cells;
      std::sort(cells.begin(), cells.end(), [&](auto x, auto y) { return a.cells[x].offset < a.cells[y].offset; });
      for (auto cell : cells)
        if (!a.cells[cell].constants.empty()) {
          r.base = *a.cells[cell].constants.begin();
          break;
        }
      r.name = "io";
    } else {
      r.space = b.kind == DeviceBase::PciIomap ? RegionSpace::Io : RegionSpace::Mem;
      r.bar = b.bar;
      r.name = (r.space == RegionSpace::Io ? "io" : "mmio") + (b.bar >= 0 ? std::to_string(b.bar) : std::string());
    }
    for (const auto& other : p.regions)
      if (other.name == r.name) r.name += "_" + std::to_string(base);
    region_of_base[base] = std::uint32_t(p.regions.size());
    p.regions.push_back(r);
  }
  std::optional<std::uint32_t> port_region;
  if (port_lo <= port_hi) {
    port_region = std::uint32_t(p.regions.size());
    p.regions.push_back(RegionSpec{"ports", RegionSpace::Io, -1, port_lo, port_hi - port_lo + 1});
  }
  if (p.regions.empty())
    return fail(m.path, "no device register access could be placed: no I/O site has a pinned port or base-relative offset");

  auto placeOf = [&](const Access& x) -> std::pair<std::uint32_t, std::uint64_t> {
    if (x.where == Access::Where::BaseOffset) return {region_of_base.at(x.base), std::uint64_t(x.offset)};
    return {*port_region, x.port - port_lo};
  };

  // Stateless reads.
  GraphSpec g;
  g.name = m.name;
  g.derived_from.guest_os = opt.guest_os;
  g.derived_from.driver = m.name + ".ko";
  for (const auto& dep : opt.dependencies) g.derived_from.driver += " + " + dep;
  for (auto key : {"srcversion", "vermagic"}) {
    auto v = m.modinfoValues(key);
    if (!v.empty()) {
      g.derived_from.build = std::string(key) + " " + std::string(v.front());
      break;
    }
  }
  g.derived_from.method = "binary-analysis";
  std::set<std::tuple<std::uint32_t, std::uint64_t, std::uint8_t>> anywhere_seen;
  for (const Access& x : a.accesses) {
    if (!deviceAccess(x) || x.position || x.dir != Dir::Read) continue;
    auto [region, offset] = placeOf(x);
    if (!anywhere_seen.emplace(region, offset, x.size).second) continue;
    NodeSpec n;
    n.id = "r" + std::to_string(g.anywhere.size());
    n.region = region;
    n.offset = offset;
    n.size = x.size;
    n.dir = Dir::Read;
    n.provenance = provenanceOf(a, x.insn, x.function);
    g.anywhere.push_back(std::move(n));
  }

  // Channels: entry points that write a common register share a cursor.
  std::map<std::pair<std::uint32_t, std::uint64_t>, std::uint32_t> reg_id;
  std::vector<std::uint32_t> reg_of_access(a.accesses.size(), ~0u);
  for (std::uint32_t i = 0; i < a.accesses.size(); ++i) {
    const Access& x = a.accesses[i];
    if (!x.position || !deviceAccess(x)) continue;
    auto [it, ins] = reg_id.try_emplace(placeOf(x), std::uint32_t(reg_id.size()));
    reg_of_access[i] = it->second;
  }
  UnionFind uf(reg_id.size());
  for (const RootSummary& r : a.roots) {
    std::optional<std::uint32_t> firstReg;
    for (auto pos : r.reached) {
      if (reg_of_access[pos] == ~0u) continue;
      if (!firstReg) firstReg = reg_of_access[pos];
      else uf.unite(*firstReg, reg_of_access[pos]);
    }
  }
  // Positions reached from no root (contexts explored but unused) join by register too.
  std::map<std::uint32_t, std::vector<std::uint32_t>> positions_by_channel;
  for (std::uint32_t i = 0; i < a.accesses.size(); ++i)
    if (reg_of_access[i] != ~0u) positions_by_channel[uf.find(reg_of_access[i])].push_back(i);
  std::set<std::uint32_t> root_first, root_last;
  for (const RootSummary& r : a.roots) {
    root_first.insert(r.first.begin(), r.first.end());
    root_last.insert(r.last.begin(), r.last.end());
  }
  std::size_t loops = 0, bounded = 0;
  for (auto& [rep, members] : positions_by_channel) {
    ChannelSpec ch;
    ch.name = "ch" + std::to_string(g.channels.size());
    std::map<std::uint32_t, std::uint32_t> node_of;
    for (auto pos : members) {
      const Access& x = a.accesses[pos];
      auto [region, offset] = placeOf(x);
      NodeSpec n;
      n.id = ch.name + ".w" + std::to_string(ch.nodes.size());
      n.region = region;
      n.offset = offset;
      n.size = x.size;
      n.dir = Dir::Write;
      if (x.value) {
        n.value.kind = ValueKind::Exact;
        n.value.a = *x.value;
      }
      n.provenance = provenanceOf(a, x.insn, x.function);
      node_of[pos] = std::uint32_t(ch.nodes.size());
      ch.nodes.push_back(std::move(n));
    }
    std::vector<std::vector<std::uint32_t>> adj(ch.nodes.size());
    for (auto [from, to] : a.edges) {
      auto f = node_of.find(from), t = node_of.find(to);
      if (f == node_of.end() || t == node_of.end()) continue;
      ch.edges.emplace_back(f->second, t->second);
      adj[f->second].push_back(t->second);
    }
    for (auto [pos, node] : node_of) {
      if (root_first.count(pos) || a.break_entries.count(pos)) ch.entries.push_back(node);
      if (root_last.count(pos) || a.break_exits.count(pos)) ch.exits.push_back(node);
    }
    // Loops: every cycle of write positions. Bounds are inferred only where the code fixes them;
    // otherwise the loop is marked unbounded and reported.
    std::set<std::uint32_t> entry_set(ch.entries.begin(), ch.entries.end());
    for (auto& comp : stronglyConnected(adj)) {
      const bool self = comp.size() == 1 && std::find(adj[comp[0]].begin(), adj[comp[0]].end(), comp[0]) != adj[comp[0]].end();
      if (comp.size() < 2 && !self) continue;
      std::sort(comp.begin(), comp.end());
      std::set<std::uint32_t> in_comp(comp.begin(), comp.end());
      std::uint32_t header = comp[0];
      for (auto v : comp) {
        bool from_outside = entry_set.count(v) > 0;
        for (std::uint32_t u = 0; u < adj.size() && !from_outside; ++u)
          if (!in_comp.count(u) && std::find(adj[u].begin(), adj[u].end(), v) != adj[u].end()) from_outside = true;
        if (from_outside) {
          header = v;
          break;
        }
      }
      LoopSpec l;
      l.id = ch.name + ".loop" + std::to_string(ch.loops.size());
      l.header = header;
      l.members = comp;
      l.unbounded = true;
      l.provenance = ch.nodes[header].provenance;
      ++loops;
      a.coverage.unbounded.push_back(l.id + " header " + ch.nodes[header].provenance.source + " (" + ch.nodes[header].provenance.function +
                                     "), " + std::to_string(comp.size()) + " write site(s): no trip count inferred");
      ch.loops.push_back(std::move(l));
    }
    g.channels.push_back(std::move(ch));
  }
  a.coverage.loops = loops;
  a.coverage.loops_bounded = bounded;
  p.graphs.push_back(std::move(g));

  // Identity.
  if (!m.pci_ids.empty()) {
    const PciId* chosen = nullptr;
    for (const PciId& id : m.pci_ids) {
      if (opt.pci_vendor && id.vendor != *opt.pci_vendor) continue;
      if (opt.pci_device && id.device != *opt.pci_device) continue;
      chosen = &id;
      break;
    }
    if (!chosen && (opt.pci_vendor || opt.pci_device))
      return fail(m.path, "the driver's PCI id table has no entry matching the requested vendor/device");
    if (chosen) {
      if (chosen->vendor != kPciAnyId) p.match.pci_vendor = std::uint16_t(chosen->vendor);
      if (chosen->device != kPciAnyId) p.match.pci_device = std::uint16_t(chosen->device);
      if (chosen->class_mask) p.match.pci_class = chosen->class_code;
    }
  } else if (opt.pci_vendor && opt.pci_device) {
    p.match.pci_vendor = opt.pci_vendor;
    p.match.pci_device = opt.pci_device;
  } else {
    p.match.isa_kind = opt.isa_kind.empty() ? defaultIsaKind(m.name) : opt.isa_kind;
    for (const auto& r : p.regions)
      if (r.space == RegionSpace::Io && r.bar < 0 && r.base) {
        p.match.isa_base = r.base;
        break;
      }
  }
  auto problems = validate(p);
  if (!problems.empty()) {
    std::string msg = "the generated policy fails validation:";
    for (const auto& pr : problems) msg += "\n  " + pr.path + ": " + pr.what;
    return fail(m.path, msg);
  }
  return p;
}

}  // namespace iof::analysis
