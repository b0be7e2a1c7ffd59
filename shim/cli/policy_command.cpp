// ioreq-filter policy validate|show|dot|merge|diff|add-build: offline work on policy files.
// requires: ioreq_policy
#include <CLI/CLI.hpp>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>

#include "command.h"
#include "ioreq_filter/policy/policy_diff.h"
#include "ioreq_filter/policy/policy_json.h"
#include "support/policy_set.h"

namespace iof::cli {
namespace {

struct PolicyOptions {
  std::vector<std::string> files;
  std::string output;
  std::string first, second;  // diff: OLD NEW; add-build: SHIPPED FRESH
  bool provenance = false;
  bool json = false;
};

// `policy diff` has its own exit codes, as diff(1): 0 equal, 1 different, 2 trouble.
constexpr int kDiffEqual = 0, kDiffDifferent = 1, kDiffError = 2;

const char* spaceName(RegionSpace s) { return s == RegionSpace::Io ? "io" : s == RegionSpace::Mem ? "mem" : "config"; }

int validateFiles(const PolicyOptions& o) {
  int rc = kExitOk;
  for (const auto& f : o.files) {
    auto p = loadPolicyFile(f);
    if (!p) {
      std::cerr << p.error().message() << "\n";
      rc = kExitBadInput;
      continue;
    }
    std::cout << f << ": ok (" << p->name << ", " << p->graphs.size() << " graph(s), " << p->rules.size() << " rule(s))\n";
  }
  return rc;
}

int show(const PolicyOptions& o) {
  for (const auto& f : o.files) {
    auto p = loadPolicyFile(f);
    if (!p) {
      std::cerr << p.error().message() << "\n";
      return kExitBadInput;
    }
    std::cout << "policy " << f << "\n  device " << p->name;
    if (p->match.pci_vendor) std::printf(" (PCI %04x:%04x)", *p->match.pci_vendor, *p->match.pci_device);
    else std::cout << " (ISA " << p->match.isa_kind << ")";
    std::cout << "\n";
    for (const auto& r : p->regions) {
      std::printf("  region %-12s %-6s ", r.name.c_str(), spaceName(r.space));
      if (r.bar >= 0) std::printf("BAR%d", r.bar);
      else if (r.space != RegionSpace::Config) std::printf("at 0x%llx", (unsigned long long)r.base);
      std::printf(" length 0x%llx\n", (unsigned long long)r.length);
    }
    for (const auto& g : p->graphs) {
      std::size_t nodes = 0, edges = 0, loops = 0, unbounded = 0;
      for (const auto& c : g.channels) {
        nodes += c.nodes.size(), edges += c.edges.size(), loops += c.loops.size();
        for (const auto& l : c.loops) unbounded += l.unbounded;
      }
      std::cout << "  graph " << g.name << " (" << (g.derived_from.method.empty() ? "unknown method" : g.derived_from.method);
      if (!g.derived_from.driver.empty()) std::cout << ", " << g.derived_from.driver;
      std::cout << "): " << g.channels.size() << " channel(s), " << nodes << " nodes, " << edges << " edges, " << loops
                << " loops (" << unbounded << " unbounded), " << g.anywhere.size() << " stateless accesses\n";
      for (const auto& c : g.channels)
        std::cout << "    channel " << c.name << ": " << c.nodes.size() << " nodes, " << c.entries.size() << " entries, " << c.exits.size()
                  << " exits\n";
    }
    for (const auto& r : p->rules) std::cout << "  rule " << r.id << (r.description.empty() ? "" : ": " + r.description) << "\n";
  }
  return kExitOk;
}

int dot(const PolicyOptions& o) {
  auto p = loadPolicyFile(o.files.front());
  if (!p) {
    std::cerr << p.error().message() << "\n";
    return kExitBadInput;
  }
  if (o.output.empty()) {
    std::cout << policyToDot(*p);
    return kExitOk;
  }
  auto w = writeFileAtomically(o.output, policyToDot(*p));
  if (!w) {
    std::cerr << w.error().message() << "\n";
    return kExitInternal;
  }
  return kExitOk;
}

int merge(const PolicyOptions& o) {
  auto policies = loadPolicies(o.files, {});
  if (!policies) {
    std::cerr << policies.error().message() << "\n";
    return kExitBadInput;
  }
  auto merged = mergePolicies(*policies);
  if (!merged) {
    std::cerr << merged.error().message() << "\n";
    return kExitBadInput;
  }
  if (o.output.empty()) {
    std::cout << policyToJson(*merged);
    return kExitOk;
  }
  auto w = savePolicyFile(*merged, o.output);
  if (!w) {
    std::cerr << w.error().message() << "\n";
    return kExitInternal;
  }
  return kExitOk;
}

int diff(const PolicyOptions& o) {
  auto a = loadPolicyFile(o.first);
  auto b = a ? loadPolicyFile(o.second) : a;
  if (!a || !b) {
    std::cerr << (a ? b : a).error().message() << "\n";
    return kDiffError;
  }
  const auto changes = diffPolicies(*a, *b, o.provenance);
  bool graph_changed = false;
  for (const auto& c : changes) graph_changed |= c.kind != PolicyChange::Kind::Provenance;
  if (o.json) {
    nlohmann::ordered_json j;
    j["old"] = o.first;
    j["new"] = o.second;
    j["equal"] = !graph_changed;
    auto arr = nlohmann::ordered_json::array();
    for (const auto& c : changes) arr.push_back({{"kind", changeKindName(c.kind)}, {"where", c.where}, {"what", c.what}});
    j["changes"] = arr;
    std::cout << j.dump(2) << "\n";
  } else {
    for (const auto& c : changes) std::cout << changeKindName(c.kind) << ": " << c.where << ": " << c.what << "\n";
    std::size_t shown_provenance = 0;
    for (const auto& c : changes) shown_provenance += c.kind == PolicyChange::Kind::Provenance;
    std::cout << (graph_changed ? "graphs differ: " : "graphs equal: ") << changes.size() - shown_provenance << " graph/device/rule change(s)";
    if (o.provenance) std::cout << ", " << shown_provenance << " provenance change(s)";
    else std::cout << " (provenance not compared; --provenance shows it)";
    std::cout << "\n";
  }
  return graph_changed ? kDiffDifferent : kDiffEqual;
}

int addBuildCommand(const PolicyOptions& o) {
  const auto& shipped_path = o.first;
  const auto& fresh_path = o.second;
  auto shipped = loadPolicyFile(shipped_path);
  if (!shipped) {
    std::cerr << shipped.error().message() << "\n";
    return kExitBadInput;
  }
  auto fresh = loadPolicyFile(fresh_path);
  if (!fresh) {
    std::cerr << fresh.error().message() << "\n";
    return kExitBadInput;
  }
  auto added = addBuild(*shipped, *fresh);
  if (!added) {
    std::cerr << added.error().message() << "\n";
    return kExitBadInput;
  }
  if (auto problems = validate(added->policy); !problems.empty()) {
    std::cerr << fresh_path << ": adding this build to " << shipped_path << " gives an invalid policy: " << problems.front().path << ": "
              << problems.front().what << "\n";
    return kExitBadInput;
  }
  const auto& out = o.output.empty() ? shipped_path : o.output;
  Result<void> w;
  if (added->outcome == AddedBuild::Outcome::ReplacedWhole) {
    // The fresh file as the analyser wrote it, byte for byte (a re-serialisation could reorder nothing
    // today, but the check that shipped files regenerate identically must not depend on that).
    std::ifstream in(fresh_path, std::ios::binary);
    std::stringstream text;
    text << in.rdbuf();
    if (!in) {
      std::cerr << fresh_path << ": cannot read it again: " << std::strerror(errno) << "\n";
      return kExitInternal;
    }
    w = writeFileAtomically(out, text.str());
  } else {
    w = savePolicyFile(added->policy, out);
  }
  if (!w) {
    std::cerr << w.error().message() << "\n";
    return kExitInternal;
  }
  std::cout << out << ": " << added->summary << "\n";
  return kExitOk;
}

RunFn setup(CLI::App& app) {
  auto o = std::make_shared<PolicyOptions>();
  auto* sub = app.add_subcommand("policy", "Validate, inspect, draw, merge, compare policy files; record a build");
  sub->require_subcommand(1);
  auto* v = sub->add_subcommand("validate", "Check policy files; errors name file:line:column");
  v->add_option("files", o->files, "Policy files")->required()->check(CLI::ExistingFile);
  auto* s = sub->add_subcommand("show", "Summarise policy files");
  s->add_option("files", o->files, "Policy files")->required()->check(CLI::ExistingFile);
  auto* d = sub->add_subcommand("dot", "Draw a policy's graphs for Graphviz");
  d->add_option("file", o->files, "Policy file")->required()->expected(1)->check(CLI::ExistingFile);
  d->add_option("-o,--output", o->output, "Write here (atomically) instead of stdout");
  auto* m = sub->add_subcommand("merge", "Union of several policies for one device (firmware + OS, several builds)");
  m->add_option("files", o->files, "Policy files")->required()->check(CLI::ExistingFile);
  m->add_option("-o,--output", o->output, "Write here (atomically) instead of stdout");
  auto* df = sub->add_subcommand("diff",
                                  "What changed between two policies of a device (e.g. a driver's graph before and after a kernel "
                                  "update): regions, nodes, edges, values, loops; exit 0 equal, 1 different, 2 error");
  df->add_option("old", o->first, "Old policy file")->required();
  df->add_option("new", o->second, "New policy file")->required();
  df->add_flag("--provenance", o->provenance, "Also show provenance changes (names, derived_from, functions, addresses)");
  df->add_flag("--json", o->json, "Machine-readable output");
  auto* ab = sub->add_subcommand("add-build",
                                 "Record a freshly generated build's graph in a shipped policy: replace the same build's graph, "
                                 "list the build on an equal graph, or add the graph (union)");
  ab->add_option("shipped", o->first, "Shipped policy file")->required();
  ab->add_option("fresh", o->second, "Policy generated now, one graph")->required();
  ab->add_option("-o,--output", o->output, "Write here (atomically) instead of over the shipped file");
  return [o, v, s, d, m, df, ab] {
    if (v->parsed()) return validateFiles(*o);
    if (s->parsed()) return show(*o);
    if (d->parsed()) return dot(*o);
    if (m->parsed()) return merge(*o);
    if (df->parsed()) return diff(*o);
    if (ab->parsed()) return addBuildCommand(*o);
    return kExitBadInput;
  };
}

IOF_REGISTER_COMMAND(setup);

}  // namespace
}  // namespace iof::cli
