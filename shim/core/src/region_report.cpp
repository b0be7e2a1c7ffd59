#include "ioreq_filter/core/region_report.h"

#include <algorithm>
#include <tuple>

namespace iof {

const char* toString(RegionStatus s) noexcept {
  switch (s) {
    case RegionStatus::Filtered: return "filtered";
    case RegionStatus::Pass: return "pass";
    case RegionStatus::Uncovered: return "refused: uncovered";
    case RegionStatus::Unbound: return "unbound";
  }
  return "?";
}

namespace {

bool namesRegion(const std::optional<AccessPattern>& p, std::uint32_t region) { return p && p->region == region; }

// Graphs with at least one node (channel or anywhere) in `region`, in policy order.
std::vector<std::string> graphsIn(const DevicePolicy& policy, std::uint32_t region) {
  std::vector<std::string> out;
  for (const auto& g : policy.graphs) {
    bool hit = std::ranges::any_of(g.anywhere, [&](const NodeSpec& n) { return n.region == region; });
    for (const auto& ch : g.channels)
      hit |= std::ranges::any_of(ch.nodes, [&](const NodeSpec& n) { return n.region == region; });
    if (hit) out.push_back(g.name);
  }
  return out;
}

std::vector<std::string> rulesOn(const DevicePolicy& policy, std::uint32_t region) {
  std::vector<std::string> out;
  for (const auto& r : policy.rules)
    if (namesRegion(r.deny, region) || namesRegion(r.after, region) || namesRegion(r.then, region) || namesRegion(r.until, region))
      out.push_back(r.id);
  return out;
}

}  // namespace

std::vector<DeviceRegions> describeRegions(const Engine& engine) {
  std::vector<DeviceRegions> out;
  const auto unbound = engine.unboundRegions();
  for (std::size_t d = 0; d < engine.deviceCount(); ++d) {
    const auto& policy = engine.device(d).policy;
    const auto slot = engine.busOf(d);
    // The bus's copy of the regions: fixed bases already moved to where this instance decodes them.
    const BusDevice& on_bus = slot.bus->device(slot.index);
    const auto& instance = on_bus.instance;
    DeviceRegions report;
    report.device = d;
    bool has_config_row = false;
    for (std::uint32_t r = 0; r < on_bus.regions.size(); ++r) {
      const RegionSpec& spec = on_bus.regions[r];
      RegionRow row;
      row.name = spec.name;
      row.space = spec.space;
      row.bar = spec.bar;
      row.length = spec.length;
      if (spec.bar >= 0) row.bar_size = instance.bars[std::size_t(spec.bar)].size;
      if (spec.space == RegionSpace::Config) {
        has_config_row = true;
        row.standard_config = policy.config == ConfigPolicy::Standard;
      } else {
        row.address = slot.bus->regionBase(slot.index, r);
      }
      const auto why_unbound = std::ranges::find_if(unbound, [&](const DeviceBus::UnboundRegion& u) { return u.device == d && u.region == r; });
      if (why_unbound != unbound.end()) {
        row.status = RegionStatus::Unbound;
        row.reason = why_unbound->reason;
        row.address = kNotDecoded;
      } else {
        switch (spec.use) {
          case RegionUse::Filter:
            row.status = RegionStatus::Filtered;
            if (!row.standard_config) row.graphs = graphsIn(policy, r);
            row.rules = rulesOn(policy, r);
            row.graphless = policy.graphs.empty();
            break;
          case RegionUse::Pass:
            row.status = RegionStatus::Pass;
            row.reason = spec.pass_reason;
            break;
          case RegionUse::Uncovered:
            row.status = RegionStatus::Uncovered;
            row.reason = "no policy region names BAR" + std::to_string(spec.bar);
            break;
        }
      }
      const bool tail = row.status != RegionStatus::Unbound && spec.bar >= 0 && spec.space != RegionSpace::Config &&
                        on_bus.whole_device && spec.length < row.bar_size && !DeviceBus::legacyIdeWindow(instance, spec.bar);
      report.rows.push_back(std::move(row));
      if (!tail) continue;
      // The bus claims the rest of the BAR and the engine refuses it (kBarTailRegion), so nothing past the
      // policy region reaches the device unjudged.
      RegionRow rest;
      rest.name = "BAR" + std::to_string(spec.bar) + " tail";
      rest.space = spec.space;
      rest.bar = spec.bar;
      rest.bar_size = report.rows.back().bar_size;
      rest.offset = spec.length;
      rest.length = rest.bar_size - spec.length;
      const std::uint64_t base = report.rows.back().address;
      rest.address = base == kNotDecoded ? kNotDecoded : base + spec.length;
      rest.status = RegionStatus::Uncovered;
      rest.reason = "BAR" + std::to_string(spec.bar) + " past region '" + spec.name + "'";
      if (rest.address != kNotDecoded) {
        // Read back from the bus rather than assumed: the tail is listed as refused only if it is claimed so.
        const auto* range = slot.bus->claimant(spec.space, rest.address);
        if (!range || range->region != kBarTailRegion || range->device != std::int32_t(slot.index)) {
          rest.status = RegionStatus::Unbound;
          rest.reason = "BAR" + std::to_string(spec.bar) + " past region '" + spec.name + "' is not claimed by the filter";
        }
      }
      report.rows.push_back(std::move(rest));
    }
    if (instance.pci && !has_config_row) {
      // Config space is always judged, by the built-in PCI-core rules when the policy has no config region.
      RegionRow config;
      config.name = "config space";
      config.space = RegionSpace::Config;
      config.length = 256;
      config.standard_config = true;
      report.rows.push_back(std::move(config));
    }
    const auto order = [](const RegionRow& row) {
      const int group = row.space == RegionSpace::Config ? 2 : row.bar < 0 ? 0 : 1;
      return std::tuple(group, row.bar, row.bar < 0 ? row.address : row.offset);
    };
    std::ranges::stable_sort(report.rows, [&](const RegionRow& a, const RegionRow& b) { return order(a) < order(b); });
    out.push_back(std::move(report));
  }
  return out;
}

}  // namespace iof
