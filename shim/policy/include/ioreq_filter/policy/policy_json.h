// Reading and writing policies (docs/policy-format.md). Every error names file:line:column.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "ioreq_filter/core/engine.h"
#include "ioreq_filter/core/error.h"
#include "ioreq_filter/core/policy.h"

namespace iof {

// Parses and validates one policy document. `file` is used in messages only.
Result<DevicePolicy> parsePolicy(std::string_view text, const std::string& file);
Result<DevicePolicy> loadPolicyFile(const std::string& path);
// The given files, in order; the first error ends loading.
Result<std::vector<DevicePolicy>> loadPolicyFiles(const std::vector<std::string>& paths);
// Every *.json below `dir` (recursively, in sorted path order).
Result<std::vector<DevicePolicy>> loadPolicyDir(const std::string& dir);

// Stable, pretty JSON (keys in schema order, numbers that are addresses or values in hex).
std::string policyToJson(const DevicePolicy& policy);
// Writes atomically: a temporary file in the same directory, fsync, rename.
Result<void> savePolicyFile(const DevicePolicy& policy, const std::string& path);
Result<void> writeFileAtomically(const std::string& path, std::string_view contents);

// Graphviz rendering of every graph of the policy.
std::string policyToDot(const DevicePolicy& policy);

// Binds policies to the machine's device instances by identity. Policies for the same device combine
// by their sets (docs/policy-format.md, "Policy sets"): every "union" policy joins set 0 (merged, see
// mergePolicies); the "intersect" policies of one directory are one more set, merged among themselves.
// A device gets one BoundDevice per set that covers it; the engine accepts a request only if every one
// of them does. `uncovered` receives the names of instances no policy matched.
Result<std::vector<BoundDevice>> bindPolicies(const std::vector<DeviceInstance>& devices,
                                              const std::vector<DevicePolicy>& policies,
                                              std::vector<std::string>* uncovered = nullptr);
bool policyMatches(const DevicePolicy& policy, const DeviceInstance& device);

}  // namespace iof
