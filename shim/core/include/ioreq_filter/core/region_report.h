// What the engine does with each register window of each bound device, as an operator needs to see it:
// which regions the graphs filter, which the policy declares pass (and why), which BARs and BAR tails the
// engine refuses because no policy region covers them (fail closed, RegionUse::Uncovered and
// kBarTailRegion), and which policy regions bind nowhere on this instance. Control plane: read from a
// built Engine, so it shows what the engine really does, not what a policy file says it should.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "ioreq_filter/core/engine.h"
#include "ioreq_filter/core/policy.h"

namespace iof {

enum class RegionStatus : std::uint8_t {
  Filtered,   // graphs and stop-gap rules decide (config space: or the built-in PCI-core rules)
  Pass,       // the policy declares it pass: forwarded unchecked, for the policy's stated reason
  Uncovered,  // refused: a BAR (or the tail of one) no policy region covers (reason uncovered-region)
  Unbound,    // a policy region that claims nothing on this instance (its BAR is not implemented, ...)
};
const char* toString(RegionStatus s) noexcept;  // "filtered", "pass", "refused: uncovered", "unbound"

inline constexpr std::uint64_t kNotDecoded = ~0ull;

struct RegionRow {
  std::string name;  // the policy's region name, the engine's guard ("BAR1 (uncovered)"), or "BAR0 tail"
  RegionSpace space = RegionSpace::Io;
  int bar = -1;                 // -1: fixed (ISA) region or config space
  std::uint64_t bar_size = 0;   // size of `bar` on this instance (0: not implemented, or not a BAR row)
  std::uint64_t offset = 0;     // where in the BAR the row starts (a tail starts at its region's length)
  std::uint64_t length = 0;     // bytes (ports) the row spans
  std::uint64_t address = kNotDecoded;  // current absolute base; kNotDecoded: BAR unassigned, decoding off, or unbound
  RegionStatus status = RegionStatus::Filtered;
  std::vector<std::string> graphs;  // Filtered: graphs with a node in the region (none: every access is refused)
  std::vector<std::string> rules;   // Filtered: stop-gap rules whose patterns name the region
  bool standard_config = false;     // Filtered config space judged by the built-in PCI-core rules, not graphs
  bool graphless = false;           // Filtered by a policy with no graphs at all: only its stop-gap rules decide
  std::string reason;               // Pass: the policy's reason; Uncovered and Unbound: why
};

struct DeviceRegions {
  std::size_t device = 0;  // Engine::device() index (one per device and policy set)
  std::vector<RegionRow> rows;  // fixed regions by base, then BARs 0-5 by offset, then config space
};

std::vector<DeviceRegions> describeRegions(const Engine& engine);

}  // namespace iof
