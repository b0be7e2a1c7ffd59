// The narrow seam between the filter and a hypervisor: exactly the libxen calls a device model
// makes (libxendevicemodel, libxenforeignmemory, libxenevtchn, libxentoolcore), behind an abstract
// interface so the simulator (shim/sim) implements the same contract as Debian's libxen 4.17
// (libxen_hypervisor.h). Control-plane calls return Result<T> whose Error names the call and errno;
// data-plane calls (notify/pending/unmask/readGuest/shutdown) are noexcept and return -errno.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "ioreq_filter/core/error.h"
#include "ioreq_filter/core/io_request.h"
#include "ioreq_filter/xen/ioreq_abi.h"

namespace iof::xen {

// Error for a failed libxen (or simulated) call: "xendevicemodel_create_ioreq_server(domid 5): EPERM (...)".
Error callError(const std::string& call, int err);

// A mapping of foreign pages. Move-only; unmaps exactly once.
class Mapping {
 public:
  Mapping() = default;
  Mapping(void* addr, std::size_t pages, std::function<void(void*, std::size_t)> unmap)
      : addr_(addr), pages_(pages), unmap_(std::move(unmap)) {}
  Mapping(Mapping&& o) noexcept { swap(o); }
  Mapping& operator=(Mapping&& o) noexcept {
    Mapping tmp(std::move(o));
    swap(tmp);
    return *this;
  }
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  ~Mapping() {
    if (addr_ && unmap_) unmap_(addr_, pages_);
  }
  void* get() const noexcept { return addr_; }
  std::size_t pages() const noexcept { return pages_; }
  explicit operator bool() const noexcept { return addr_ != nullptr; }

 private:
  void swap(Mapping& o) noexcept {
    std::swap(addr_, o.addr_);
    std::swap(pages_, o.pages_);
    std::swap(unmap_, o.unmap_);
  }
  void* addr_ = nullptr;
  std::size_t pages_ = 0;
  std::function<void(void*, std::size_t)> unmap_;
};

// A libxenevtchn handle. Closing it unbinds every port bound through it, as a process exit does:
// the remote ends return to "unbound" and may be bound again (how a restarted daemon reconnects).
class EventChannel {
 public:
  virtual ~EventChannel() = default;
  virtual int fd() const noexcept = 0;
  virtual Result<Port> bindInterdomain(DomId remote, Port remotePort) = 0;
  // A fresh port that `remote` may bind to; remote 0 gives a dom0-local channel.
  virtual Result<Port> bindUnbound(DomId remote) = 0;
  virtual Result<void> unbind(Port local) = 0;
  virtual Result<void> restrictTo(DomId domid) = 0;
  // Data plane.
  virtual int notify(Port local) noexcept = 0;
  // A local port, or -1 with errno EAGAIN when none. Never blocks (the libxen implementation makes
  // its fd non-blocking: a blocking read would wait for the guest's next event).
  virtual std::int64_t pending() noexcept = 0;
  virtual int unmask(Port local) noexcept = 0;
};

enum class RangeKind : std::uint8_t { Pio = 0, Mmio = 1 };  // is_mmio of map_io_range_to_ioreq_server
enum class BufioreqMode : std::uint8_t { Off = 0, Legacy = 1, Atomic = 2 };  // HVM_IOREQSRV_BUFIOREQ_*

inline constexpr unsigned kShutdownCrash = 3;  // SHUTDOWN_crash (xen/include/public/sched.h)

struct ServerInfo {
  Port bufioreq_port = 0;  // the guest-side port of the buffered channel
};

class Hypervisor {
 public:
  virtual ~Hypervisor() = default;
  virtual std::string name() const = 0;  // "libxen 4.17", "simulator"

  // libxendevicemodel
  virtual Result<ServerId> createServer(DomId domid, BufioreqMode mode) = 0;
  virtual Result<ServerInfo> serverInfo(DomId domid, ServerId id) = 0;
  // Whether server `id` of domid exists, asked with get_ioreq_server_info: ENOENT is "no"; EPERM is
  // "yes" (it belongs to another domain: Xen checks s->emulator != current->domain).
  virtual Result<bool> serverExists(DomId domid, ServerId id) = 0;
  virtual Result<void> mapIoRange(DomId domid, ServerId id, RangeKind kind, std::uint64_t start, std::uint64_t end) = 0;
  virtual Result<void> unmapIoRange(DomId domid, ServerId id, RangeKind kind, std::uint64_t start,
                                    std::uint64_t end) = 0;
  virtual Result<void> mapPciDev(DomId domid, ServerId id, Sbdf sbdf) = 0;
  virtual Result<void> unmapPciDev(DomId domid, ServerId id, Sbdf sbdf) = 0;
  virtual Result<void> setServerState(DomId domid, ServerId id, bool enabled) = 0;
  virtual Result<void> destroyServer(DomId domid, ServerId id) = 0;
  virtual Result<unsigned> vcpuCount(DomId domid) = 0;
  // XEN_DMOP_remote_shutdown: the only DMOP with a lasting effect on the guest that a restricted
  // handle keeps (there is no pause DMOP). reason: SHUTDOWN_* (0 poweroff, 1 reboot, 3 crash).
  virtual int shutdown(DomId domid, unsigned reason) noexcept = 0;

  // libxenforeignmemory
  virtual Result<Mapping> mapIoreqPages(DomId domid, ServerId id) = 0;  // 2 frames: buffered, sync
  // Copies guest-physical memory (data_is_ptr buffers). Data plane: -errno on failure.
  virtual int readGuest(DomId domid, std::uint64_t gpa, void* out, std::size_t len) noexcept = 0;
  virtual int writeGuest(DomId domid, std::uint64_t gpa, const void* in, std::size_t len) noexcept = 0;

  // libxenevtchn
  virtual Result<std::unique_ptr<EventChannel>> openEventChannel() = 0;

  // xentoolcore_restrict_all / the per-library restrict calls: after this only this domain can be
  // touched and only DMOPs a device model needs remain (a pause needs an unrestricted helper).
  virtual Result<void> restrictTo(DomId domid) = 0;
};

IoreqPages pagesOf(const Mapping& m) noexcept;

// Fail closed against a second ioreq server. Xen hands an access to the highest-id *enabled* server
// whose ranges hold it (ioreq.c ioreq_server_select), so any server of the domain other than the one
// the filter adopted - made by another dom0 process, a second device model, a compromised QEMU - may
// take requests past the filter. check() enumerates ids 0..kMaxServers-1 (8 get_ioreq_server_info
// calls) and names the first server that is neither `own` nor in `allowed`; a check that itself fails
// counts as a finding (an unverifiable domain is not a filtered one).
class ServerWatch {
 public:
  ServerWatch(DomId domid, ServerId own, std::vector<ServerId> allowed = {})
      : domid_(domid), own_(own), allowed_(std::move(allowed)) {}
  // Empty when only the adopted (and allowed) servers exist; otherwise why the domain must stop.
  std::string check(Hypervisor& hv) const;

 private:
  DomId domid_;
  ServerId own_;
  std::vector<ServerId> allowed_;
};

}  // namespace iof::xen
