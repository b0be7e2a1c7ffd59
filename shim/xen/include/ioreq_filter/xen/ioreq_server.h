// One device-model endpoint of an ioreq server, brought up in named stages and torn down in exactly
// the reverse order (STYLE.md rule 4, after Xen's demu):
//   handle -> server (created, or adopted by id) -> pages -> ranges -> enabled -> ports bound.
// Teardown: ports unbound -> disabled -> ranges kept (they die with the server) -> pages unmapped ->
// server destroyed. Only stages this session performed are undone: an adopted server (QEMU's, in
// proxy mode) is neither disabled nor destroyed.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ioreq_filter/core/error.h"
#include "ioreq_filter/xen/hypervisor.h"

namespace iof::xen {

struct IoRange {
  RangeKind kind = RangeKind::Pio;
  std::uint64_t start = 0, end = 0;  // inclusive
};

struct SessionOptions {
  DomId domid = 0;
  std::optional<ServerId> adopt;  // attach to this existing server instead of creating one
  BufioreqMode bufioreq = BufioreqMode::Atomic;
  std::vector<IoRange> ranges;
  std::vector<Sbdf> pci_devices;
  bool enable = true;     // set_ioreq_server_state(1) (ignored when adopting)
  unsigned vcpus = 0;     // 0: ask the hypervisor (xendevicemodel_nr_vcpus)
  bool bind_ports = true;
  std::function<void(std::string_view)> log;  // one line per stage
};

class IoreqServerSession {
 public:
  static Result<std::unique_ptr<IoreqServerSession>> open(Hypervisor& hv, SessionOptions options);
  ~IoreqServerSession();
  IoreqServerSession(const IoreqServerSession&) = delete;
  IoreqServerSession& operator=(const IoreqServerSession&) = delete;

  DomId domid() const noexcept { return options_.domid; }
  ServerId id() const noexcept { return id_; }
  unsigned vcpus() const noexcept { return vcpus_; }
  IoreqPages pages() const noexcept { return pagesOf(pages_); }
  EventChannel& events() noexcept { return *events_; }
  // Local port bound to vCPU i's vp_eport; the buffered channel's local port.
  Port vcpuPort(unsigned i) const noexcept { return vcpu_ports_[i]; }
  Port bufferedPort() const noexcept { return buf_port_; }
  int vcpuOfPort(Port local) const noexcept;
  // Binds the ports now (when options.bind_ports was false, e.g. before the server was enabled).
  Result<void> bindPorts();
  Hypervisor& hypervisor() noexcept { return hv_; }

 private:
  IoreqServerSession(Hypervisor& hv, SessionOptions options) : hv_(hv), options_(std::move(options)) {}
  void log(const std::string& line) const;

  Hypervisor& hv_;
  SessionOptions options_;
  ServerId id_ = 0;
  bool created_ = false, enabled_ = false;
  unsigned vcpus_ = 0;
  Port guest_buf_port_ = 0;
  Mapping pages_;
  std::unique_ptr<EventChannel> events_;
  std::vector<Port> vcpu_ports_;
  Port buf_port_ = 0;
};

}  // namespace iof::xen
