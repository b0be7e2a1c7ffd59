// A simulated Xen 4.17 for the ioreq path: it implements the same Hypervisor seam as libxen and
// reproduces the hypervisor's rules for ioreq servers, slots and event channels. Each rule cites the
// Xen 4.17 source (Debian bookworm's 4.17.5) it models; see sim_hypervisor.cpp.
// Guest vCPUs are threads calling guestIo(), each blocking on its own eventfd; device models (the
// daemon, the interposer, test consumers) reach it through the Hypervisor interface, with pages in
// shared memory and eventfds. Every wake-up is an eventfd, rung after the simulator's lock is
// released, like the baseline the benchmark compares against.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "ioreq_filter/xen/hypervisor.h"

namespace iof::sim {

using xen::DomId;
using xen::Port;
using xen::ServerId;

struct DomainConfig {
  unsigned vcpus = 2;
  std::size_t ram_bytes = 1 << 20;
  bool stdvga = true;  // direct VGA-window writes travel the buffered ring (stdvga.c:50-87)
};

enum class GuestStatus : std::uint8_t {
  Completed,      // a device model answered (data valid for reads)
  Buffered,       // went through the buffered ring; the vCPU did not wait
  Unclaimed,      // no enabled server contains it: reads all-ones, writes dropped (emulate.c:323-331)
  StillBlocked,   // the vCPU is still waiting for a device model (call guestWait to go on waiting)
  Crashed,        // Xen crashed (or shut down) the domain
  DeviceModelError,  // ioreq_send refused: slot not NONE or vp_eport wrong (ioreq.c:1276-1288)
  Unhandleable,   // bad access size (emulate.c:178)
};
const char* toString(GuestStatus s) noexcept;

struct GuestResult {
  GuestStatus status = GuestStatus::Completed;
  std::uint64_t data = 0;
  int server = -1;  // the server Xen selected
};

class SimHypervisor final : public xen::Hypervisor {
 public:
  SimHypervisor();
  ~SimHypervisor() override;

  DomId createDomain(const DomainConfig& config);
  // xl destroy: the domain, its servers and their guest-side ports go away (no vCPU may be waiting).
  void destroyDomain(DomId domid);

  // --- guest side (a vCPU thread) ---
  // Issues one request as hvmemul_do_io would and waits up to `limit` for its completion.
  GuestResult guestIo(DomId domid, unsigned vcpu, const IoRequest& request,
                      std::chrono::milliseconds limit = std::chrono::milliseconds(5000));
  // Keeps waiting for a vCPU left StillBlocked.
  GuestResult guestWait(DomId domid, unsigned vcpu, std::chrono::milliseconds limit);
  void guestWrite(DomId domid, std::uint64_t gpa, const void* data, std::size_t len);
  void guestRead(DomId domid, std::uint64_t gpa, void* data, std::size_t len);

  // --- observation, for tests ---
  bool crashed(DomId domid) const;
  std::string crashReason(DomId domid) const;
  std::optional<unsigned> shutdownReason(DomId domid) const;
  xen::SlotState slotState(DomId domid, ServerId id, unsigned vcpu) const;
  std::uint64_t restrictedTo() const;  // ~0 when never restricted
  // How often a thread found the simulator's lock taken (benchmarks: is the lock a factor?).
  std::uint64_t lockContentions() const;
  // Device models changed fields Xen ignores (only data and state travel back: ioreq.c:181,203).
  std::uint64_t ignoredFieldChanges(DomId domid) const;
  std::uint32_t cf8(DomId domid) const;

  // --- Hypervisor ---
  std::string name() const override { return "simulator"; }
  Result<ServerId> createServer(DomId domid, xen::BufioreqMode mode) override;
  Result<bool> serverExists(DomId domid, ServerId id) override;
  Result<xen::ServerInfo> serverInfo(DomId domid, ServerId id) override;
  Result<void> mapIoRange(DomId domid, ServerId id, xen::RangeKind kind, std::uint64_t start, std::uint64_t end) override;
  Result<void> unmapIoRange(DomId domid, ServerId id, xen::RangeKind kind, std::uint64_t start, std::uint64_t end) override;
  Result<void> mapPciDev(DomId domid, ServerId id, Sbdf sbdf) override;
  Result<void> unmapPciDev(DomId domid, ServerId id, Sbdf sbdf) override;
  Result<void> setServerState(DomId domid, ServerId id, bool enabled) override;
  Result<void> destroyServer(DomId domid, ServerId id) override;
  Result<unsigned> vcpuCount(DomId domid) override;
  int shutdown(DomId domid, unsigned reason) noexcept override;
  Result<xen::Mapping> mapIoreqPages(DomId domid, ServerId id) override;
  int readGuest(DomId domid, std::uint64_t gpa, void* out, std::size_t len) noexcept override;
  int writeGuest(DomId domid, std::uint64_t gpa, const void* in, std::size_t len) noexcept override;
  Result<std::unique_ptr<xen::EventChannel>> openEventChannel() override;
  Result<void> restrictTo(DomId domid) override;

  struct State;  // shared with the event-channel handles

 private:
  std::shared_ptr<State> state_;
};

}  // namespace iof::sim
