// Proxy mode, daemon side, for one domain: adopts the real ioreq server QEMU created (any dom0
// process may map and bind it: ownership is per domain), binds its ports, offers QEMU a shadow
// channel (ShadowFile + dom0-local event channels) and moves requests between them through the
// Relay. Bring-up: real session (pages, ports) -> shadow file + journal -> shadow ports -> recovery
// of slots left in flight by a previous daemon. Teardown is the reverse (RAII members).
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "ioreq_filter/xen/ioreq_server.h"
#include "ioreq_filter/xen/relay.h"
#include "ioreq_filter/xen/shadow.h"

namespace iof::xen {

struct ProxyOptions {
  DomId domid = 0;
  ServerId server = 0;
  unsigned vcpus = 0;          // 0: ask the hypervisor
  std::string shadow_path;     // empty: memfd (then the journal dies with the daemon)
  RequestFilter* filter = nullptr;
  std::function<void(std::string_view)> log;
  // Adaptive reply polling (ioreq-filterd --reply-poll-us): after forwarding a request, the daemon
  // watches the vCPU's shadow slot (memory only) for QEMU's answer instead of sleeping until QEMU's
  // notification wakes it: one wake-up less per request, paid in CPU (replyPolling()). It spins only
  // while QEMU holds the request (slot READY: sched_yield, so a QEMU queued on our CPU runs first;
  // INPROCESS: pause), for about twice the recent QEMU turnaround, never longer than this bound, and
  // stops at once when a guest vCPU issues a new request. A QEMU slower than the bound turns it off
  // until it is fast again. While it keeps hitting, the shadow port stays masked, so QEMU's
  // notification only latches (Xen sets the pending bit of a masked port without an upcall) and
  // wakes nobody. Zero: always sleep.
  std::chrono::nanoseconds reply_poll_max{0};
};

class ProxyEndpoint {
 public:
  static Result<std::unique_ptr<ProxyEndpoint>> open(Hypervisor& hv, ProxyOptions options);
  ~ProxyEndpoint();

  // One event-channel handle carries the real ports (Xen's, per vCPU + buffered) and the
  // dom0-local shadow ports to QEMU: one fd to wait on and one pending() loop per wake-up.
  int fd() noexcept { return events_->fd(); }
  // Drains the handle (bounded), then reply-polls if enabled; noexcept, never sleeps. Before it
  // returns, every port whose event the daemon still waits for is unmasked.
  void handleEvents() noexcept;

  // Bounded speculative polling (ioreq-filterd --poll-us): after handling events, watch every slot
  // (no system calls) for up to `budget` before the caller sleeps again; returns whether it found
  // work. Its CPU cost is visible in pollNanoseconds() / pollHits().
  bool pollFor(std::chrono::nanoseconds budget) noexcept;
  std::uint64_t pollNanoseconds() const noexcept { return poll_ns_; }
  std::uint64_t pollHits() const noexcept { return poll_hits_; }

  struct ReplyPolling {
    std::uint64_t spent_ns = 0;   // CPU the daemon spent watching shadow slots
    std::uint64_t hits = 0;       // answers taken from the slot (no wake-up)
    std::uint64_t misses = 0;     // gave up within the budget: slept until QEMU's event
    std::uint64_t yields = 0;     // sched_yield() calls while QEMU had not taken the request yet
  };
  const ReplyPolling& replyPolling() const noexcept { return reply_; }
  // The reply-polling budget learnt so far (zero when off or QEMU is too slow for it).
  std::chrono::nanoseconds replyPollBudget() const noexcept;
  std::chrono::nanoseconds replyPollMax() const noexcept { return std::chrono::nanoseconds(reply_poll_max_ns_); }

  Relay& relay() noexcept { return *relay_; }
  const ShadowFile& shadow() const noexcept { return shadow_; }
  IoreqServerSession& session() noexcept { return *session_; }
  bool resumed() const noexcept { return resumed_; }  // adopted a journal from an earlier daemon
  void setFilter(RequestFilter* f) noexcept { relay_->setFilter(f); }

 private:
  ProxyEndpoint(ShadowFile shadow) : shadow_(std::move(shadow)) {}
  void dispatch(Port port) noexcept;
  void apply(unsigned vcpu, Step step) noexcept;
  void onShadowStep(unsigned vcpu, Step step) noexcept;
  void awaitReplies() noexcept;
  void unmaskShadow(unsigned vcpu) noexcept;
  int vcpuOfShadowPort(Port port) const noexcept;

  ShadowFile shadow_;
  std::unique_ptr<IoreqServerSession> session_;
  EventChannel* events_ = nullptr;  // the session's handle, shared by the shadow ports
  std::vector<Port> shadow_port_;  // our local end per vCPU
  Port shadow_buf_port_ = 0;
  std::unique_ptr<Relay> relay_;
  bool resumed_ = false;
  std::uint64_t poll_ns_ = 0, poll_hits_ = 0;
  ReplyPolling reply_;
  std::int64_t reply_poll_max_ns_ = 0;
  std::int64_t turnaround_ns_ = 0;        // moving average of forward -> QEMU's answer taken
  std::vector<std::int64_t> forwarded_at_;  // per vCPU, ns (when reply polling is configured)
  std::vector<std::uint8_t> awaiting_;      // per vCPU: QEMU holds a request we forwarded
  std::vector<std::uint8_t> shadow_masked_;  // per vCPU: delivered and not unmasked since
};

}  // namespace iof::xen
