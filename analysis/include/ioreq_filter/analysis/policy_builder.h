// Turns a module analysis into the core policy model: one region per device base, one channel per
// group of entry points that share a stateful register (union-find), writes as sequence nodes,
// device reads as stateless `anywhere` nodes, cycles as loops with their inferred bounds.
#pragma once

#include <string>
#include <vector>

#include "ioreq_filter/analysis/io_analysis.h"
#include "ioreq_filter/core/error.h"
#include "ioreq_filter/core/policy.h"

namespace iof::analysis {

struct PolicyOptions {
  std::string device_name;   // policy name; defaults to the module name
  std::string guest_os;      // DerivedFrom::guest_os, e.g. "Debian 12 (Linux 6.1.0-56-amd64)"
  std::string isa_kind;      // ISA devices: QOM kind for DeviceMatch ("isa-fdc")
  std::optional<std::uint16_t> pci_vendor, pci_device;  // choose one of the ids the driver claims
  std::vector<std::string> dependencies;  // other modules analysed with it (named in derived_from)
};

// The ISA drivers the analyser knows how to match by QOM kind (a driver's binary does not say which
// emulated device it drives when it has no id table).
std::string defaultIsaKind(const std::string& module_name);

Result<DevicePolicy> buildPolicy(ModuleAnalysis& analysis, const PolicyOptions& options);

}  // namespace iof::analysis
