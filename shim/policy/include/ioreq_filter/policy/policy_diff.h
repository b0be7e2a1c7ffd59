// What changed between two policies for one device (`ioreq-filter policy diff`), and how a policy
// set records several builds of one driver (`ioreq-filter policy add-build`, used by
// analysis/regenerate-policies.sh). docs/policy-format.md, "Builds".
//
// "The graph" is what the engine runs: per channel its nodes (id, region by name, offset, size,
// direction, value constraint, reset), edges, entries, exits and loops (id, header, members, bound),
// plus the stateless `anywhere` nodes. Not part of it: the graph's name, `derived_from`, and every
// `provenance` (function, address, source), since a rebuilt kernel moves function addresses while the
// graph stays the same. Nodes, channels and loops are compared by id, so a graph whose ids were
// renumbered counts as different (conservative: at worst a policy keeps one graph too many).
#pragma once

#include <string>
#include <vector>

#include "ioreq_filter/core/error.h"
#include "ioreq_filter/core/policy.h"

namespace iof {

struct PolicyChange {
  enum class Kind { Device, Graph, Rules, Provenance };
  Kind kind = Kind::Graph;
  std::string where;  // "graph 0 (floppy) channel ch0 node ch0.w5"
  std::string what;   // "added: io+0x5 size 1 write exact 0x8"
};
const char* changeKindName(PolicyChange::Kind kind);

// Device section, graphs (paired by position), rules; provenance changes only with `provenance`.
std::vector<PolicyChange> diffPolicies(const DevicePolicy& old_policy, const DevicePolicy& new_policy, bool provenance);

// Graph `a` of policy `pa` equals graph `b` of `pb` modulo name, derived_from and provenance.
bool sameGraph(const DevicePolicy& pa, const GraphSpec& a, const DevicePolicy& pb, const GraphSpec& b);

struct AddedBuild {
  enum class Outcome {
    ReplacedWhole,  // the only graph came from this same build: the policy is the fresh one
    Replaced,       // a graph from this same build was replaced by the fresh graph
    SameGraph,      // another build's graph equals the fresh one: the build is listed in its builds
    Added,          // no graph equals the fresh one: it is added as one more graph (a union)
  };
  Outcome outcome = Outcome::Added;
  DevicePolicy policy;
  std::string summary;  // one line for people: what was done and why
};

// Records the build `fresh` (a policy with one graph whose derived_from.guest_os names the build) in
// `shipped`: replaces the graph of the same build, or lists the build on a graph equal to the fresh
// one, or adds the fresh graph. The device sections (match, regions, config, on_violation) must be
// equal unless the whole policy is replaced; errors name the file and the difference.
Result<AddedBuild> addBuild(const DevicePolicy& shipped, const DevicePolicy& fresh);

}  // namespace iof
