#include "ioreq_filter/analysis/policy_builder.h"

#include <elf.h>

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
  // Kernel code is named by its linked address (the section's own address is 0 in a module).
  p.address = offsetOf(insn) + a.disassembly->module().sections[sectionOf(insn)].address;
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

  // ISA port bases: the values the module gives each (constants it stores, the variable's initializer).
  auto portDefaults = [&](const DeviceBase& b) {
    std::set<std::uint64_t> d;
    for (auto cell : b.cells) {
      const Cell& c = a.cells[cell];
      d.insert(c.constants.begin(), c.constants.end());
      const Section& sec = m.sections[c.section];
      if (c.offset >= sec.bytes.size()) continue;
      const Symbol* sym = m.symbolCovering(c.section, c.offset, STT_OBJECT);
      std::uint64_t width = sym ? std::min<std::uint64_t>(8, sym->value + sym->size - c.offset) : 0;
      width = std::min<std::uint64_t>(width, sec.bytes.size() - c.offset);
      if (width != 2 && width != 4 && width != 8) continue;
      std::uint64_t v = 0;
      for (std::uint64_t i = 0; i < width; ++i) v |= std::uint64_t(sec.bytes[c.offset + i]) << (8 * i);
      d.insert(v);
    }
    std::erase_if(d, [](std::uint64_t v) { return v == 0 || v > 0xffff; });
    return d;
  };
  // The controller this policy is for: the port base used most. Bases the module initialises to the
  // same port are the same controller (floppy's virtual_dma_port); bases that default elsewhere are
  // other instances (floppy's FDC2 = 0x370) and are left out.
  std::map<std::uint32_t, std::size_t> uses;
  for (const Access& x : a.accesses)
    if (x.where == Access::Where::BaseOffset && a.bases[x.base].kind == DeviceBase::PortCell) ++uses[x.base];
  std::optional<std::uint32_t> primary;
  for (auto [base, n] : uses)
    if (!primary || n > uses[*primary]) primary = base;
  std::optional<std::uint64_t> primary_port;
  std::map<std::uint32_t, std::uint32_t> canonical_base;  // base -> base whose region it shares
  std::set<std::uint32_t> other_instance;
  if (primary) {
    auto d = portDefaults(a.bases[*primary]);
    if (!d.empty()) primary_port = *d.begin();
    for (auto [base, n] : uses) {
      if (base == *primary) continue;
      auto other = portDefaults(a.bases[base]);
      if (primary_port && other.count(*primary_port)) canonical_base[base] = *primary;
      else if (!other.empty()) other_instance.insert(base);
    }
    for (std::uint32_t base : other_instance)
      a.coverage.unresolved.push_back("accesses relative to " + a.bases[base].name +
                                      " belong to another controller (the module gives it other ports): left out");
  }
  // Two mappings of one BAR are one region (a kernel PCI fixup's ioremap(pci_resource_start(dev, 0))
  // and the driver's pci_iomap(pdev, 0)): the device decodes the BAR once, whoever maps it, and writes
  // to one register through either share its channel.
  std::map<std::pair<int, bool>, std::uint32_t> first_mapping_of_bar;
  for (std::uint32_t b = 0; b < a.bases.size(); ++b) {
    const DeviceBase& d = a.bases[b];
    if (d.kind == DeviceBase::PortCell || d.bar < 0) continue;
    const bool io = (d.kind == DeviceBase::PciIomap && !d.bar_memory) || d.kind == DeviceBase::PciResource;
    auto [it, first] = first_mapping_of_bar.try_emplace({d.bar, io}, b);
    if (!first) canonical_base[b] = it->second;
  }
  auto canonical = [&](std::uint32_t base) {
    auto it = canonical_base.find(base);
    return it == canonical_base.end() ? base : it->second;
  };

  // Regions: one per device base (and one for the device's fixed ports, if any).
  std::map<std::uint32_t, std::uint32_t> region_of_base;
  std::map<std::uint32_t, std::uint64_t> extent;  // canonical base -> bytes used
  std::uint64_t port_lo = ~0ull, port_hi = 0;
  auto deviceAccess = [&](const Access& x) {
    if (x.where == Access::Where::BaseOffset) return x.offset >= 0 && x.offset_exact && !other_instance.count(x.base);
    return x.where == Access::Where::FixedPort && x.position;  // fixed ports only when declared the device's
  };
  for (const Access& x : a.accesses) {
    if (!deviceAccess(x)) continue;
    if (x.where == Access::Where::BaseOffset) {
      auto& e = extent[canonical(x.base)];
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
      auto d = portDefaults(b);
      if (!d.empty()) r.base = *d.begin();
      r.name = "io";
    } else {
      r.space = (b.kind == DeviceBase::PciIomap && !b.bar_memory) || b.kind == DeviceBase::PciResource ? RegionSpace::Io : RegionSpace::Mem;
      r.bar = b.bar;
      r.name = (r.space == RegionSpace::Io ? "io" : "mmio") + (b.bar >= 0 ? std::to_string(b.bar) : std::string());
    }
    for (const auto& other : p.regions)
      if (other.name == r.name) r.name += "_" + std::to_string(base);
    region_of_base[base] = std::uint32_t(p.regions.size());
    p.regions.push_back(r);
  }
  for (auto [base, to] : canonical_base)
    if (region_of_base.count(to)) region_of_base[base] = region_of_base[to];
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
  // Positions reached from no root (contexts explored but unused) join by register too. A register no
  // root reaches at all was only seen in a context the fixpoint passed through before it converged (a
  // loop counter before it became a range): nothing starts it, so it is left out.
  std::set<std::uint32_t> reached_regs;
  for (const RootSummary& r : a.roots)
    for (auto pos : r.reached)
      if (reg_of_access[pos] != ~0u) reached_regs.insert(reg_of_access[pos]);
  std::map<std::uint32_t, std::vector<std::uint32_t>> positions_by_channel;
  for (std::uint32_t i = 0; i < a.accesses.size(); ++i)
    if (reg_of_access[i] != ~0u && reached_regs.count(reg_of_access[i])) positions_by_channel[uf.find(reg_of_access[i])].push_back(i);
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
      n.id = ch.name + (x.dir == Dir::Read ? ".r" : ".w") + std::to_string(ch.nodes.size());
      n.region = region;
      n.offset = offset;
      n.size = x.size;
      n.dir = x.dir;
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
    // The cycle's bound: iterations of the CFG loops that made its edges, plus the straight-line
    // edges that close it (two call sites merged by context-insensitive composition).
    // through_polls: the loop is a write repeating through status polls; the polls' own spinning
    // (read to read) does not enter the header again, so it does not count towards the bound.
    auto addLoop = [&](ChannelSpec& chan, std::uint32_t header, const std::vector<std::uint32_t>& comp,
                       const std::set<std::uint32_t>& in_comp, bool through_polls = false) {
      LoopSpec l;
      l.id = chan.name + ".loop" + std::to_string(chan.loops.size());
      l.header = header;
      l.members = comp;
      l.provenance = chan.nodes[header].provenance;
      ++loops;
      std::set<std::uint32_t> cfg_loops;
      std::uint64_t straight = 0;
      for (auto [from, to] : a.edges) {
        auto f = node_of.find(from), t = node_of.find(to);
        if (f == node_of.end() || t == node_of.end() || !in_comp.count(f->second) || !in_comp.count(t->second)) continue;
        if (through_polls && chan.nodes[f->second].dir == Dir::Read && chan.nodes[t->second].dir == Dir::Read) continue;
        auto tags = a.edge_loops.find({from, to});
        if (tags == a.edge_loops.end()) ++straight;
        else cfg_loops.insert(tags->second.begin(), tags->second.end());
      }
      std::optional<std::uint64_t> bound = straight + 1;
      std::string why;
      for (auto li : cfg_loops) {
        const LoopInfo& info = a.loops[li];
        if (!info.bound) {
          bound.reset();
          why = "loop at " + a.where(info.header) + ": " + info.why;
          break;
        }
        *bound += *info.bound;
      }
      if (bound && *bound > 0xffffff) bound.reset(), why = "bound too large";
      if (bound) {
        l.max_iterations = std::uint32_t(*bound);
        ++bounded;
        l.provenance.source += " (bound " + std::to_string(*bound) + ": " + std::to_string(cfg_loops.size()) + " CFG loop(s), " +
                               std::to_string(straight) + " straight-line edge(s))";
      } else {
        l.unbounded = true;
        a.coverage.unbounded.push_back(l.id + " header " + chan.nodes[header].provenance.source + " (" +
                                       chan.nodes[header].provenance.function + "), " + std::to_string(comp.size()) +
                                       " write site(s): " + why);
      }
      chan.loops.push_back(std::move(l));
    };
    std::vector<std::vector<std::uint32_t>> preds(adj.size());
    for (std::uint32_t u = 0; u < adj.size(); ++u)
      for (auto v : adj[u]) preds[v].push_back(u);
    for (auto& comp : stronglyConnected(adj)) {
      const bool self = comp.size() == 1 && std::find(adj[comp[0]].begin(), adj[comp[0]].end(), comp[0]) != adj[comp[0]].end();
      if (comp.size() < 2 && !self) continue;
      std::sort(comp.begin(), comp.end());
      std::set<std::uint32_t> in_comp(comp.begin(), comp.end());
      std::uint32_t header = comp[0];
      for (auto v : comp) {
        bool from_outside = entry_set.count(v) > 0;
        for (auto u : preds[v]) from_outside |= !in_comp.count(u);
        if (from_outside) {
          header = v;
          break;
        }
      }
      addLoop(ch, header, comp, in_comp);
      // A write that repeats itself inside a larger cycle (a FIFO written in a loop), directly or
      // through the status polls that gate it (write MDIC, poll MDIC, write MDIC), gets its own,
      // tighter bound: the outer cycle may be unbounded (a request loop) while the burst is not.
      if (comp.size() > 1)
        for (auto v : comp) {
          if (v == header || ch.nodes[v].dir != Dir::Write) continue;
          auto viaPolls = [&](bool forward) {
            std::set<std::uint32_t> seen;
            std::vector<std::uint32_t> work{v};
            bool back_to_v = false;
            while (!work.empty()) {
              const std::uint32_t x = work.back();
              work.pop_back();
              for (auto y : comp) {
                const auto& out = adj[forward ? x : y];
                if (std::find(out.begin(), out.end(), forward ? y : x) == out.end()) continue;
                if (y == v) back_to_v = true;
                else if (ch.nodes[y].dir == Dir::Read && seen.insert(y).second) work.push_back(y);
              }
            }
            return std::pair{seen, back_to_v};
          };
          auto [after, cycles] = viaPolls(true);
          if (!cycles) continue;
          auto [before, unused] = viaPolls(false);
          std::vector<std::uint32_t> burst{v};
          for (auto r : after)
            if (before.count(r)) burst.push_back(r);
          std::sort(burst.begin(), burst.end());
          addLoop(ch, v, burst, std::set<std::uint32_t>(burst.begin(), burst.end()), true);
        }
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
