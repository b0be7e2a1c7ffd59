// The policy model: what a device's real driver(s) may do, as I/O sequence graphs plus
// hand-written stop-gap rules. Control-plane data; shim/policy reads and writes it as JSON
// (docs/policy-format.md); compile() turns it into the flat tables the engine runs on.
#pragma once

#include <algorithm>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "ioreq_filter/core/error.h"
#include "ioreq_filter/core/io_request.h"

namespace iof {

inline constexpr int kPolicyFormatVersion = 1;

enum class RegionSpace : std::uint8_t { Io, Mem, Config };

// What the engine does with the accesses to a region.
enum class RegionUse : std::uint8_t {
  Filter,     // the graphs and stop-gap rules decide
  Pass,       // declared "pass" in the policy, with a stated reason: forwarded unfiltered and counted
  Uncovered,  // added by the engine for a BAR of the instance the policy has no region for: every access
              // is refused (fail closed; never in a policy file, see Engine::create)
};

// A register window of the device. Requests are matched by offset within their region.
struct RegionSpec {
  std::string name;
  RegionSpace space = RegionSpace::Io;
  int bar = -1;             // PCI: BAR index 0..5 the region lives in; -1 for fixed (ISA) or config
  std::uint64_t base = 0;   // fixed regions: default absolute base (port or physical address)
  std::uint64_t length = 0; // bytes; config space: 256 or 4096
  RegionUse use = RegionUse::Filter;
  std::string pass_reason;  // RegionUse::Pass: why this region may go unfiltered (required, non-empty)
};

enum class ValueKind : std::uint8_t { Any, Exact, Mask, Set, Range };

// Constrains the value of a write (reads are not constrained: the filter sees them before the device answers).
struct ValueConstraint {
  ValueKind kind = ValueKind::Any;
  std::uint64_t a = 0;  // Exact: value; Mask: mask; Range: low
  std::uint64_t b = 0;  // Mask: (value & a) == b; Range: high (inclusive)
  std::vector<std::uint64_t> set;  // Set: allowed values, sorted

  // Inline: called for every candidate node of every request.
  bool matches(std::uint64_t value) const noexcept {
    switch (kind) {
      case ValueKind::Any: return true;
      case ValueKind::Exact: return value == a;
      case ValueKind::Mask: return (value & a) == b;
      case ValueKind::Range: return value >= a && value <= b;
      case ValueKind::Set: return std::binary_search(set.begin(), set.end(), value);
    }
    return false;
  }
};

// Where a node or rule came from, so a refusal can be explained.
struct Provenance {
  std::string function;      // driver function, e.g. "fd_wait_for_completion"
  std::uint64_t address = 0; // instruction address within the module (0 if unknown)
  std::string source;        // free text: "82077AA datasheet §5.2", "floppy.ko .text+0x1234"
};

// One access pattern of the graph.
struct NodeSpec {
  std::string id;
  std::uint32_t region = 0;  // index into DevicePolicy::regions
  std::uint64_t offset = 0;  // within the region
  std::uint8_t size = 0;     // 1/2/4/8; 0 = any size
  Dir dir = Dir::Write;
  ValueConstraint value;
  bool reset = false;        // accepted in any state of its channel; restarts the graph's channels
  Provenance provenance;
};

// A loop of the sequence: how many times its header may be entered before the cursor must leave.
struct LoopSpec {
  std::string id;
  std::uint32_t header = 0;            // node index within the channel
  std::vector<std::uint32_t> members;  // node indices within the channel (header included)
  std::uint32_t max_iterations = 0;    // 0 with unbounded=true: no bound could be inferred
  bool unbounded = false;
  Provenance provenance;
};

// An independent sequence context: one cursor per device instance. Registers whose accesses move a
// cursor belong to exactly one channel of a graph (validate() checks), so splitting a sequence across
// vCPUs or channels cannot reset it.
struct ChannelSpec {
  std::string name;
  std::vector<NodeSpec> nodes;
  std::vector<std::pair<std::uint32_t, std::uint32_t>> edges;  // node index -> node index
  std::vector<std::uint32_t> entries;  // where a sequence may begin (from idle)
  std::vector<std::uint32_t> exits;    // after these the channel may be idle again
  std::vector<LoopSpec> loops;
};

struct DerivedFrom {
  std::string guest_os;   // "Debian 12 (Linux 6.1.0-56-amd64)"
  std::string driver;     // "floppy.ko"
  std::string build;      // build id / version / sha256
  std::string firmware;   // "SeaBIOS 1.16.2"
  std::string method;     // "binary-analysis", "datasheet", "learned"
  // Further builds (their guest_os strings) whose binaries gave this same graph, compared modulo
  // provenance (analysis/regenerate-policies.sh, `policy add-build`); guest_os/build above stay the
  // build the graph and its provenance addresses were taken from.
  std::vector<std::string> builds;
};

struct GraphSpec {
  std::string name;
  DerivedFrom derived_from;
  std::vector<ChannelSpec> channels;
  std::vector<NodeSpec> anywhere;  // stateless accesses accepted in every state (status polls, …)
};

// An access pattern for stop-gap rules.
struct AccessPattern {
  std::uint32_t region = 0;
  std::uint64_t offset_low = 0, offset_high = 0;  // inclusive range within the region
  std::uint8_t size = 0;                          // 0 = any
  std::optional<Dir> dir;                         // nullopt = both
  ValueConstraint value;                          // writes only

  bool matches(std::uint32_t reg, std::uint64_t offset, std::uint8_t sz, Dir d, std::uint64_t v) const noexcept;
};

// Hand-written stop-gap rule ("block a known exploit until the patch ships").
//  - deny only: refuse every access matching `deny`.
//  - after/then/max[/until]: once an access matches `after` the rule is armed; while armed, more than
//    `max` accesses matching `then` are refused; an access matching `until` (or `after` again) disarms
//    (re-arms) it.
struct StopGapRule {
  std::string id;
  std::string description;
  std::optional<AccessPattern> deny;
  std::optional<AccessPattern> after;
  std::optional<AccessPattern> then;
  std::optional<AccessPattern> until;
  std::uint32_t max = 0;
  Provenance provenance;
};

enum class ViolationAction : std::uint8_t { Refuse, RefuseAndPause, RefuseAndCrash };

struct DeviceMatch {
  // PCI: vendor/device required, class optional. ISA: QOM kind required, base optional.
  std::optional<std::uint16_t> pci_vendor, pci_device;
  std::optional<std::uint32_t> pci_class;
  std::string isa_kind;
  std::optional<std::uint64_t> isa_base;
};

// Built-in rules for PCI config space when no graph has nodes in the config region: every read;
// writes only to the standard header's writable fields and to capabilities (0x40 and up).
enum class ConfigPolicy : std::uint8_t { Standard, GraphOnly };

// How a policy combines with the other policies for the same device (docs/policy-format.md, "Policy sets").
//  - Union: one driver's builds and firmware. Every union policy for a device, whatever its directory,
//    joins one union: a request passes if any of their graphs accepts it.
//  - Intersect: an independent model (a datasheet, stop-gap rules). The intersect policies of one
//    directory form a set of their own (a union inside); a request must pass the union and every
//    intersect set that covers the device.
enum class Combine : std::uint8_t { Union, Intersect };
const char* toString(Combine c) noexcept;

struct DevicePolicy {
  std::string name;          // "floppy", "ne2k-pci"
  std::string source;        // file it was loaded from (for messages)
  DeviceMatch match;
  std::vector<RegionSpec> regions;
  ConfigPolicy config = ConfigPolicy::Standard;
  ViolationAction on_violation = ViolationAction::Refuse;
  Combine combine = Combine::Union;
  std::vector<GraphSpec> graphs;  // union: a request passes if one live graph accepts it
  std::vector<StopGapRule> rules;
};

// Structural checks (ids, indices, offsets within regions, channel partition, loops).
// `where` prefixes each message (e.g. the file name); positions inside are JSON-pointer-like paths
// ("graphs/0/channels/1/nodes/3") that the JSON loader maps to line:column.
struct PolicyProblem {
  std::string path;  // "graphs/0/channels/0/nodes/2/offset"
  std::string what;
};
std::vector<PolicyProblem> validate(const DevicePolicy& policy);

// Union of several policies for one device (several guest OS builds, firmware + OS driver).
// Regions are matched by where they are (space and base, or BAR, and length), not by name: the same
// range under another name is the same region (the first policy's name is kept). Regions that overlap
// without being the same range, or one name for two ranges, are errors naming both files and regions.
// Graphs and rules are concatenated.
Result<DevicePolicy> mergePolicies(const std::vector<DevicePolicy>& policies);

}  // namespace iof
