// Shared by the subcommands that take policies: --policy FILE... and --policy-dir DIR.
#pragma once

#include <string>
#include <vector>

#include "ioreq_filter/core/device.h"
#include "ioreq_filter/core/error.h"
#include "ioreq_filter/core/policy.h"

namespace CLI {
class App;
}

namespace iof::cli {

// --policy FILE (repeatable, one value each) and --policy-dir DIR, as every policy-taking command spells them.
void addPolicyOptions(CLI::App& sub, std::vector<std::string>& files, std::vector<std::string>& dirs);

Result<std::vector<DevicePolicy>> loadPolicies(const std::vector<std::string>& files, const std::vector<std::string>& dirs);

// --bind NAME=LOCATION: a device instance without starting QEMU. NAME is a policy's device name;
// LOCATION is `isa:BASE` or `pci:BB:DD.F` (BAR kinds and sizes come from the policy's regions,
// their addresses from the guest's own config writes in the trace).
Result<DeviceInstance> parseBinding(const std::string& spec, const std::vector<DevicePolicy>& policies);

// Reads a trace file; `.xz` files are decompressed with xz(1).
Result<std::string> readTraceText(const std::string& path);

}  // namespace iof::cli
