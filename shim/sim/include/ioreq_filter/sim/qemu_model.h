// The device-model side of an ioreq channel as QEMU 7.2 speaks it (hw/i386/xen/xen-hvm.c:
// cpu_get_ioreq -> unmask -> READY->INPROCESS, handle_buffered_iopage before the synchronous slot,
// only data written back, IORESP_READY, notify). It serves either a real (simulated) server
// directly, or a daemon's shadow channel exactly as QEMU does under the proxy-mode interposer.
// Devices are a callback; data_is_ptr requests are carried out on guest memory like QEMU does.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "ioreq_filter/xen/hypervisor.h"
#include "ioreq_filter/xen/ioreq_server.h"
#include "ioreq_filter/xen/shadow.h"

namespace iof::sim {

struct SeenRequest {
  IoRequest request;
  std::uint64_t value;  // written value (writes) or returned value (reads)
  bool buffered;
};

class QemuModel {
 public:
  // Returns the value of a read; called for every access including each data_is_ptr rep.
  using Device = std::function<std::uint64_t(const IoRequest&)>;

  // Serves a real server directly (no filter): binds its vp_eports like xen_hvm_init_pc.
  static Result<std::unique_ptr<QemuModel>> direct(xen::Hypervisor& hv, xen::DomId domid, xen::ServerId id,
                                                   unsigned vcpus, Device device);
  // Serves a daemon's shadow channel: binds the dom0-local ports named in the shadow page/journal
  // and records its own ends in the journal (what the proxy-mode interposer does inside QEMU).
  static Result<std::unique_ptr<QemuModel>> shadow(xen::Hypervisor& hv, xen::DomId domid, int shadowFd,
                                                   unsigned vcpus, Device device);
  ~QemuModel();

  void start();  // a thread polling the event-channel fd
  void stop();
  void handleEvents();  // one cpu_handle_ioreq round per pending port
  std::vector<SeenRequest> seen() const;
  std::size_t seenCount() const;

 private:
  QemuModel() = default;
  void handle(IoRequest& r, bool buffered);
  void drainBuffered();

  xen::Hypervisor* hv_ = nullptr;
  xen::DomId domid_ = 0;
  Device device_;
  std::unique_ptr<xen::IoreqServerSession> session_;  // direct mode
  std::unique_ptr<xen::ShadowFile> shadow_;           // shadow mode
  std::unique_ptr<xen::EventChannel> events_;         // shadow mode
  xen::IoreqPages pages_;
  std::vector<xen::Port> vcpu_ports_;
  xen::Port buf_port_ = 0;
  mutable std::mutex mu_;
  std::vector<SeenRequest> seen_;
  std::atomic<bool> running_{false};
  std::thread thread_;
};

}  // namespace iof::sim
