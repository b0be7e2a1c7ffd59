// ioreq-filter policy validate|show|dot|merge: offline work on policy files.
// requires: ioreq_policy
#include <CLI/CLI.hpp>

#include <iostream>
#include <memory>

#include "command.h"
#include "ioreq_filter/policy/policy_json.h"
#include "support/policy_set.h"

namespace iof::cli {
namespace {

struct PolicyOptions {
  std::vector<std::string> files;
  std::string output;
};

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

RunFn setup(CLI::App& app) {
  auto o = std::make_shared<PolicyOptions>();
  auto* sub = app.add_subcommand("policy", "Validate, inspect, draw or merge policy files");
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
  return [o, v, s, d, m] {
    if (v->parsed()) return validateFiles(*o);
    if (s->parsed()) return show(*o);
    if (d->parsed()) return dot(*o);
    if (m->parsed()) return merge(*o);
    return kExitBadInput;
  };
}

IOF_REGISTER_COMMAND(setup);

}  // namespace
}  // namespace iof::cli
