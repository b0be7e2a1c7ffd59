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
  // Adaptive reply polling: after forwarding a request to QEMU, watch the shadow slot (memory only)
  // for QEMU's answer for about twice the recent QEMU turnaround, never longer than this, instead
  // of sleeping until QEMU's notification wakes us: one wake-up less per request, paid in CPU
  // (pollNanoseconds()). A QEMU slower than this bound turns it off until it is fast again.
  // Zero: always sleep.
  std::chrono::nanoseconds reply_poll_max{0};
};

class ProxyEndpoint {
 public:
  static Result<std::unique_ptr<ProxyEndpoint>> open(Hypervisor& hv, ProxyOptions options);
  ~ProxyEndpoint();

  int realFd() noexcept { return session_->events().fd(); }
  int shadowFd() noexcept { return shadow_events_->fd(); }
  // Drains both event-channel handles; noexcept, never blocks.
  void handleEvents() noexcept;
  // One request or reply per port per call; returns whether anything was pending.
  bool handleRealEvents() noexcept;
  bool handleShadowEvents() noexcept;

  // Bounded adaptive polling: after handling events, watch the slots themselves (no system calls)
  // for up to `budget` before the caller sleeps again; returns whether it found work. Its CPU cost
  // is visible in pollNanoseconds() / pollHits() (reported by `ioreq-filter stats`).
  bool pollFor(std::chrono::nanoseconds budget) noexcept;
  std::uint64_t pollNanoseconds() const noexcept { return poll_ns_; }
  std::uint64_t pollHits() const noexcept { return poll_hits_; }
  // The reply-polling budget learnt so far (zero when off or QEMU is too slow for it).
  std::chrono::nanoseconds replyPollBudget() const noexcept;

  Relay& relay() noexcept { return *relay_; }
  const ShadowFile& shadow() const noexcept { return shadow_; }
  IoreqServerSession& session() noexcept { return *session_; }
  bool resumed() const noexcept { return resumed_; }  // adopted a journal from an earlier daemon
  void setFilter(RequestFilter* f) noexcept { relay_->setFilter(f); }

 private:
  ProxyEndpoint(ShadowFile shadow) : shadow_(std::move(shadow)) {}
  void apply(unsigned vcpu, Step step) noexcept;
  void onShadowStep(unsigned vcpu, Step step) noexcept;
  void awaitReplies() noexcept;

  ShadowFile shadow_;
  std::unique_ptr<IoreqServerSession> session_;
  std::unique_ptr<EventChannel> shadow_events_;
  std::vector<Port> shadow_port_;  // our local end per vCPU
  Port shadow_buf_port_ = 0;
  std::unique_ptr<Relay> relay_;
  bool resumed_ = false;
  std::uint64_t poll_ns_ = 0, poll_hits_ = 0;
  std::int64_t reply_poll_max_ns_ = 0;
  std::int64_t turnaround_ns_ = 0;  // moving average of forward -> QEMU's answer seen
  std::vector<std::int64_t> forwarded_at_;  // per vCPU, ns; 0: no answer awaited
};

}  // namespace iof::xen
