#include "policy_set.h"

#include <CLI/CLI.hpp>

#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include "ioreq_filter/policy/policy_json.h"

namespace iof::cli {

void addPolicyOptions(CLI::App& sub, std::vector<std::string>& files, std::vector<std::string>& dirs) {
  sub.add_option("--policy", files, "Policy file (repeatable)")->allow_extra_args(false)->check(CLI::ExistingFile);
  sub.add_option("--policy-dir", dirs, "Load every *.json below DIR (repeatable)")->allow_extra_args(false)->check(CLI::ExistingDirectory);
}

Result<std::vector<DevicePolicy>> loadPolicies(const std::vector<std::string>& files, const std::vector<std::string>& dirs) {
  std::vector<DevicePolicy> out;
  for (const auto& dir : dirs) {
    auto set = loadPolicyDir(dir);
    if (!set) return std::unexpected(set.error());
    for (auto& p : *set) out.push_back(std::move(p));
  }
  auto listed = loadPolicyFiles(files);
  if (!listed) return std::unexpected(listed.error());
  for (auto& p : *listed) out.push_back(std::move(p));
  return out;
}

namespace {
Result<std::uint64_t> parseNumber(const std::string& text, const std::string& where) {
  if (text.empty()) return fail(where, "empty number");
  std::size_t used = 0;
  unsigned long long v = 0;
  try {
    v = std::stoull(text, &used, 0);
  } catch (...) {
    return fail(where, "'" + text + "' is not a number");
  }
  if (used != text.size()) return fail(where, "'" + text + "' is not a number");
  return v;
}
}  // namespace

Result<DeviceInstance> parseBinding(const std::string& spec, const std::vector<DevicePolicy>& policies) {
  const std::string where = "--bind " + spec;
  const auto eq = spec.find('=');
  if (eq == std::string::npos) return fail(where, "expected NAME=isa:BASE or NAME=pci:BB:DD.F");
  const std::string name = spec.substr(0, eq), location = spec.substr(eq + 1);
  const DevicePolicy* policy = nullptr;
  for (const auto& p : policies)
    if (p.name == name) policy = &p;
  if (!policy) return fail(where, "no policy for a device named '" + name + "'");
  DeviceInstance d;
  d.name = name;
  if (location.rfind("isa:", 0) == 0) {
    if (policy->match.isa_kind.empty()) return fail(where, "policy '" + name + "' is for a PCI device");
    auto base = parseNumber(location.substr(4), where);
    if (!base) return std::unexpected(base.error());
    d.kind = policy->match.isa_kind;
    std::uint64_t lowest = ~0ull, highest = 0;
    for (const auto& r : policy->regions)
      if (r.bar < 0 && r.space != RegionSpace::Config) lowest = std::min(lowest, r.base), highest = std::max(highest, r.base + r.length);
    d.isa_ports.push_back(PortRange{*base, highest > lowest ? highest - lowest : 0});
    return d;
  }
  if (location.rfind("pci:", 0) == 0) {
    if (!policy->match.pci_vendor) return fail(where, "policy '" + name + "' is for an ISA device");
    unsigned bus = 0, dev = 0, fn = 0;
    char tail = 0;
    if (std::sscanf(location.c_str() + 4, "%x:%x.%x%c", &bus, &dev, &fn, &tail) != 3 || bus > 255 || dev > 31 || fn > 7)
      return fail(where, "PCI location must be BB:DD.F (hex), e.g. 00:04.0");
    d.kind = name;
    d.pci = PciIdentity{*policy->match.pci_vendor, *policy->match.pci_device, policy->match.pci_class.value_or(0), 0, 0};
    d.sbdf = Sbdf{0, std::uint8_t(bus), std::uint8_t(dev), std::uint8_t(fn)};
    for (const auto& r : policy->regions) {
      if (r.bar < 0) continue;
      auto& bar = d.bars[std::size_t(r.bar)];
      bar.kind = r.space == RegionSpace::Io ? BarKind::Io : BarKind::Mem32;
      bar.size = r.length;
    }
    return d;
  }
  return fail(where, "location must start with isa: or pci:");
}

Result<std::string> readTraceText(const std::string& path) {
  if (path.size() > 3 && path.compare(path.size() - 3, 3, ".xz") == 0) {
    std::ifstream probe(path);
    if (!probe) return fail(path, std::string("cannot open trace: ") + std::strerror(errno));
    const std::string cmd = "xz -dc -- '" + path + "'";
    if (path.find('\'') != std::string::npos) return fail(path, "file name contains a quote");
    std::FILE* pipe = ::popen(cmd.c_str(), "r");
    if (!pipe) return fail(path, std::string("cannot run xz: ") + std::strerror(errno));
    std::string text;
    std::array<char, 65536> buf{};
    std::size_t n;
    while ((n = std::fread(buf.data(), 1, buf.size(), pipe)) > 0) text.append(buf.data(), n);
    const int status = ::pclose(pipe);
    if (status != 0) return fail(path, "xz could not decompress it (exit status " + std::to_string(status) + ")");
    return text;
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return fail(path, std::string("cannot open trace: ") + std::strerror(errno));
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace iof::cli
