// Device discovery the way production does it: ask the QEMU that serves the guest.
//   PCI: QMP query-pci (identity, location, BAR kinds and sizes), the QOM tree (the device's type),
//        and, if a qtest client is given, config space itself (prog-if, command register, BARs as
//        programmed; the CF8 latch is restored afterwards).
//   ISA: the QOM tree (type, `iobase`) and the I/O address space's flat view with owners
//        (`info mtree -f -o`), which lists exactly the ports each device decodes. The first range is
//        extended down to `iobase` when QEMU leaves the block's lowest ports undecoded (isa-fdc decodes
//        0x3f1-0x3f5 and 0x3f7 of its 0x3f0 block), because the engine places a policy's fixed regions
//        relative to isa_ports.front().base.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "ioreq_filter/core/device.h"
#include "ioreq_filter/core/error.h"
#include "ioreq_filter/qemu/qmp_client.h"
#include "ioreq_filter/qemu/qtest_client.h"

namespace iof::qemu {

// PCI devices first (by bus:dev.fn), then ISA devices that decode ports (by first port).
Result<std::vector<DeviceInstance>> discoverDevices(QmpClient& qmp, QtestClient* qtest = nullptr);

// Starts the machine `machine_args` describes paused under qtest, discovers its devices, and quits it.
Result<std::vector<DeviceInstance>> discoverMachine(const std::vector<std::string>& machine_args);

// The pieces, separately testable on captured QEMU output.
Result<std::vector<DeviceInstance>> parseQueryPci(const nlohmann::json& reply);
// Port ranges of the "I/O" address space by owning device's QOM path; adjacent ranges merged.
Result<std::vector<std::pair<std::string, PortRange>>> parseIoOwners(std::string_view mtree_text);

}  // namespace iof::qemu
