// ioreq-filter permissiveness: how much of a device's register space a policy still lets through.
// requires: ioreq_policy
//
// Generic-fuzz-style probing (what a fuzzer or an exploit author does first): random short sequences
// of accesses anywhere in the device's regions — random register, size, direction and value — each
// on a freshly booted device. The score is the share of sequences the policy refuses somewhere; a
// policy that allows everything scores 0, one that refuses every random sequence scores 1.
#include <CLI/CLI.hpp>

#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>

#include "command.h"
#include "ioreq_filter/core/engine.h"
#include "ioreq_filter/policy/policy_json.h"
#include "support/policy_set.h"

namespace iof::cli {
namespace {

struct PermissivenessOptions {
  std::vector<std::string> policy_files, policy_dirs;
  std::uint32_t samples = 2000, length = 4;
  std::uint64_t seed = 1;
  bool json = false;
};

// An instance of the policy's device with every BAR placed and decoding enabled, so random requests
// can address each region directly.
DeviceInstance placedInstance(const DevicePolicy& p) {
  DeviceInstance d;
  d.name = p.name;
  if (p.match.pci_vendor) {
    d.kind = p.name;
    d.pci = PciIdentity{*p.match.pci_vendor, *p.match.pci_device, p.match.pci_class.value_or(0), 0, 0};
    d.sbdf = Sbdf{0, 0, 4, 0};
    d.command = 0x3;
    std::uint64_t io = 0xc000, mem = 0xe0000000;
    for (const auto& r : p.regions) {
      if (r.bar < 0) continue;
      auto& bar = d.bars[std::size_t(r.bar)];
      bar.size = std::max<std::uint64_t>(r.length, r.space == RegionSpace::Io ? 4 : 16);
      if (r.space == RegionSpace::Io) {
        bar.kind = BarKind::Io;
        io = (io + bar.size - 1) & ~(bar.size - 1);
        bar.address = io;
        io += bar.size;
      } else {
        bar.kind = BarKind::Mem32;
        mem = (mem + bar.size - 1) & ~(bar.size - 1);
        bar.address = mem;
        mem += bar.size;
      }
    }
  } else {
    d.kind = p.match.isa_kind;
    std::uint64_t lowest = ~0ull;
    for (const auto& r : p.regions)
      if (r.bar < 0 && r.space != RegionSpace::Config) lowest = std::min(lowest, r.base);
    d.isa_ports.push_back(PortRange{lowest, 8});
  }
  return d;
}

struct Score {
  std::string device, policy;
  std::uint32_t samples = 0, refused = 0;
  std::uint64_t requests = 0, requests_refused = 0;
  double score() const { return samples ? double(refused) / samples : 0.0; }
};

Result<Score> measure(const DevicePolicy& policy, const PermissivenessOptions& o) {
  Score s{policy.name, policy.source};
  std::vector<BoundDevice> devices{BoundDevice{placedInstance(policy), policy}};
  auto probe = Engine::create(devices);
  if (!probe) return std::unexpected(probe.error());
  struct Window {
    IoType type;
    std::uint64_t base, length;
  };
  std::vector<Window> windows;
  for (std::uint32_t r = 0; r < policy.regions.size(); ++r) {
    const auto& reg = policy.regions[r];
    if (reg.space == RegionSpace::Config) continue;
    const auto base = (*probe)->bus().regionBase(0, r);
    if (base == ~0ull) continue;
    windows.push_back({reg.space == RegionSpace::Io ? IoType::Pio : IoType::Copy, base, reg.length});
  }
  if (windows.empty()) return fail(policy.source, "device has no port or memory region to probe");
  std::mt19937_64 rng(o.seed);
  for (std::uint32_t i = 0; i < o.samples; ++i) {
    auto engine = Engine::create(devices);
    if (!engine) return std::unexpected(engine.error());
    bool refused = false;
    for (std::uint32_t k = 0; k < o.length; ++k) {
      const auto& w = windows[rng() % windows.size()];
      IoRequest r;
      r.type = w.type;
      static constexpr std::uint8_t kSizes[] = {1, 2, 4};
      r.size = kSizes[rng() % 3];
      if (r.size > w.length) r.size = 1;
      r.addr = w.base + (rng() % (w.length - r.size + 1)) / r.size * r.size;
      r.dir = rng() % 2 ? Dir::Read : Dir::Write;
      r.data = rng() & ((std::uint64_t(1) << (8 * r.size)) - 1);
      const auto v = (*engine)->onRequest(r);
      ++s.requests;
      if (!v.forwarded()) {
        ++s.requests_refused;
        refused = true;
      }
    }
    ++s.samples;
    s.refused += refused;
  }
  return s;
}

int run(const PermissivenessOptions& o) {
  auto policies = loadPolicies(o.policy_files, o.policy_dirs);
  if (!policies) {
    std::cerr << "ioreq-filter permissiveness: " << policies.error().message() << "\n";
    return kExitBadInput;
  }
  if (policies->empty() || o.samples == 0 || o.length == 0) {
    std::cerr << "ioreq-filter permissiveness: need policies, --samples > 0 and --length > 0\n";
    return kExitBadInput;
  }
  nlohmann::ordered_json out = nlohmann::ordered_json::array();
  if (!o.json) std::printf("%-20s %-48s %8s %9s %8s\n", "device", "policy", "samples", "refused", "score");
  for (const auto& p : *policies) {
    auto s = measure(p, o);
    if (!s) {
      std::cerr << "ioreq-filter permissiveness: " << s.error().message() << "\n";
      return kExitBadInput;
    }
    if (o.json)
      out.push_back({{"device", s->device}, {"policy", s->policy}, {"samples", s->samples}, {"length", o.length},
                     {"seed", o.seed}, {"sequences_refused", s->refused}, {"requests", s->requests},
                     {"requests_refused", s->requests_refused}, {"score", s->score()}});
    else
      std::printf("%-20s %-48s %8u %9u %8.3f\n", s->device.c_str(), s->policy.c_str(), s->samples, s->refused, s->score());
  }
  if (o.json) std::cout << out.dump(2) << "\n";
  return kExitOk;
}

RunFn setup(CLI::App& app) {
  auto o = std::make_shared<PermissivenessOptions>();
  auto* sub = app.add_subcommand("permissiveness", "Share of random request sequences within a device's ranges that a policy refuses");
  addPolicyOptions(*sub, o->policy_files, o->policy_dirs);
  sub->add_option("--samples", o->samples, "Random sequences per device (default 2000)");
  sub->add_option("--length", o->length, "Requests per sequence (default 4)");
  sub->add_option("--seed", o->seed, "Random seed (default 1; results are reproducible)");
  sub->add_flag("--json", o->json, "Machine-readable output");
  return [o] { return run(*o); };
}

IOF_REGISTER_COMMAND(setup);

}  // namespace
}  // namespace iof::cli
