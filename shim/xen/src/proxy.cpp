#include "ioreq_filter/xen/proxy.h"

#include <algorithm>

namespace iof::xen {

Result<std::unique_ptr<ProxyEndpoint>> ProxyEndpoint::open(Hypervisor& hv, ProxyOptions o) {
  auto log = [&](const std::string& s) {
    if (o.log) o.log(s);
  };
  SessionOptions so;
  so.domid = o.domid;
  so.adopt = o.server;
  so.vcpus = o.vcpus;
  so.log = o.log;
  auto session = IoreqServerSession::open(hv, so);
  if (!session) return std::unexpected(session.error());

  bool created = false;
  auto shadow = ShadowFile::open(o.shadow_path, &created);
  if (!shadow) return std::unexpected(shadow.error());
  std::unique_ptr<ProxyEndpoint> p(new ProxyEndpoint(std::move(*shadow)));
  p->session_ = std::move(*session);
  const unsigned vcpus = p->session_->vcpus();
  Journal& j = p->shadow_.journal();
  const bool hadJournal = !created && j.magic == kJournalMagic;
  if (!initJournal(j, o.domid, o.server, vcpus, !hadJournal))
    return fail(o.shadow_path, "journal belongs to domid " + std::to_string(j.domid) + " server " +
                                   std::to_string(j.server) + " with " + std::to_string(j.vcpus) + " vCPUs, not domid " +
                                   std::to_string(o.domid) + " server " + std::to_string(o.server));
  p->resumed_ = hadJournal;
  log(std::string("stage shadow: ") + (hadJournal ? "adopted journal generation " + std::to_string(j.generation) : "fresh"));

  auto ev = hv.openEventChannel();
  if (!ev) return std::unexpected(ev.error());
  p->shadow_events_ = std::move(*ev);
  auto bindShadow = [&](std::uint32_t qemuPort) -> Result<Port> {
    // QEMU's end survives us: after a restart it is unbound again and we connect to it.
    if (qemuPort != 0) return p->shadow_events_->bindInterdomain(0, qemuPort);
    return p->shadow_events_->bindUnbound(0);
  };
  for (unsigned i = 0; i < vcpus; ++i) {
    auto port = bindShadow(hadJournal ? j.qemu_vcpu_port[i] : 0);
    if (!port) return std::unexpected(port.error());
    p->shadow_port_.push_back(*port);
    if (!hadJournal || j.qemu_vcpu_port[i] == 0) p->shadow_.pages().sync->vcpu[i].vp_eport = *port;
  }
  auto buf = bindShadow(hadJournal ? j.qemu_buf_port : 0);
  if (!buf) return std::unexpected(buf.error());
  p->shadow_buf_port_ = *buf;
  if (!hadJournal || j.qemu_buf_port == 0) j.shadow_buf_port = *buf;
  log("stage shadow ports: " + std::to_string(vcpus) + " vCPU + buffered (dom0-local)");

  p->reply_poll_max_ns_ = std::max<std::int64_t>(0, o.reply_poll_max.count());
  p->turnaround_ns_ = p->reply_poll_max_ns_ / 4;  // optimistic until measured
  p->forwarded_at_.assign(vcpus, 0);
  p->relay_ = std::make_unique<Relay>(hv, o.domid, p->session_->pages(), p->shadow_.pages(), j, vcpus, o.filter);
  for (unsigned i = 0; i < vcpus; ++i) p->apply(i, p->relay_->recover(i));
  if (p->relay_->pumpBuffered()) (void)p->shadow_events_->notify(p->shadow_buf_port_);
  if (p->relay_->counters().recovered.load()) log("recovered " + std::to_string(p->relay_->counters().recovered.load()) + " in-flight slots");
  return p;
}

ProxyEndpoint::~ProxyEndpoint() {
  relay_.reset();
  shadow_events_.reset();  // shadow ports unbound; QEMU's ends wait for the next daemon
  session_.reset();        // real ports unbound, pages unmapped (QEMU's server stays)
}

namespace {
std::int64_t nowNs() noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}
}  // namespace

void ProxyEndpoint::apply(unsigned v, Step step) noexcept {
  if (step.notify_shadow && v < shadow_port_.size()) {
    if (reply_poll_max_ns_ && v < forwarded_at_.size() && !forwarded_at_[v]) forwarded_at_[v] = nowNs();
    (void)shadow_events_->notify(shadow_port_[v]);
  }
  if (step.notify_real) (void)session_->events().notify(session_->vcpuPort(v));
}

// QEMU's answer was taken (by its event or by polling): learn how long QEMU took.
void ProxyEndpoint::onShadowStep(unsigned v, Step step) noexcept {
  if (reply_poll_max_ns_ && v < forwarded_at_.size() && forwarded_at_[v] && step.notify_real) {
    const std::int64_t took = nowNs() - forwarded_at_[v];
    forwarded_at_[v] = 0;
    turnaround_ns_ += (took - turnaround_ns_) / 8;
  }
  apply(v, step);
}

std::chrono::nanoseconds ProxyEndpoint::replyPollBudget() const noexcept {
  // Twice the usual turnaround catches most answers; a QEMU slower than the bound is not waited for.
  if (!reply_poll_max_ns_ || turnaround_ns_ > reply_poll_max_ns_) return std::chrono::nanoseconds(0);
  return std::chrono::nanoseconds(std::min(reply_poll_max_ns_, 2 * turnaround_ns_ + 1000));
}

void ProxyEndpoint::awaitReplies() noexcept {
  const std::int64_t budget = replyPollBudget().count();
  if (!budget) return;
  const IoreqPages sh = shadow_.pages();
  const unsigned n = unsigned(forwarded_at_.size());
  const std::int64_t t0 = nowNs();
  std::int64_t now = t0;
  for (;;) {
    bool awaiting = false;
    for (unsigned v = 0; v < n; ++v) {
      if (!forwarded_at_[v]) continue;
      if (loadState(sh.sync->vcpu[v]) == SlotState::RespReady) {
        ++poll_hits_;
        onShadowStep(v, relay_->onShadowEvent(v));
      }
      awaiting |= forwarded_at_[v] != 0;
    }
    now = nowNs();
    if (!awaiting || now - t0 >= budget) break;
    __builtin_ia32_pause();
  }
  poll_ns_ += std::uint64_t(now - t0);
}

bool ProxyEndpoint::handleRealEvents() noexcept {
  bool any = false;
  EventChannel& ev = session_->events();
  for (std::int64_t p; (p = ev.pending()) >= 0;) {
    any = true;
    (void)ev.unmask(Port(p));
    if (Port(p) == session_->bufferedPort()) {
      if (relay_->pumpBuffered()) (void)shadow_events_->notify(shadow_buf_port_);
      continue;
    }
    const int v = session_->vcpuOfPort(Port(p));
    if (v >= 0) apply(unsigned(v), relay_->onRealEvent(unsigned(v)));
  }
  return any;
}

bool ProxyEndpoint::handleShadowEvents() noexcept {
  bool any = false;
  for (std::int64_t p; (p = shadow_events_->pending()) >= 0;) {
    any = true;
    (void)shadow_events_->unmask(Port(p));
    const auto it = std::find(shadow_port_.begin(), shadow_port_.end(), Port(p));
    if (it != shadow_port_.end()) {
      const unsigned v = unsigned(it - shadow_port_.begin());
      onShadowStep(v, relay_->onShadowEvent(v));
    }
  }
  // QEMU frees shadow ring space silently; move anything the real ring still holds.
  if (relay_->pumpBuffered()) (void)shadow_events_->notify(shadow_buf_port_);
  return any;
}

bool ProxyEndpoint::pollFor(std::chrono::nanoseconds budget) noexcept {
  using Clock = std::chrono::steady_clock;
  const auto t0 = Clock::now();
  const IoreqPages real = session_->pages();
  const IoreqPages sh = shadow_.pages();
  const unsigned n = relay_->vcpus();
  for (;;) {
    bool found = false;
    for (unsigned v = 0; v < n; ++v) {
      if (loadState(real.sync->vcpu[v]) == SlotState::Ready) {
        apply(v, relay_->onRealEvent(v));
        found = true;
      }
      if (loadState(sh.sync->vcpu[v]) == SlotState::RespReady) {
        onShadowStep(v, relay_->onShadowEvent(v));
        found = true;
      }
    }
    const auto spent = Clock::now() - t0;
    if (found || spent >= budget) {
      poll_ns_ += std::uint64_t(std::chrono::duration_cast<std::chrono::nanoseconds>(spent).count());
      if (found) ++poll_hits_;
      return found;
    }
    __builtin_ia32_pause();
  }
}

void ProxyEndpoint::handleEvents() noexcept {
  // Bounded so a guest that keeps its vCPUs busy cannot starve the control socket and signals.
  for (int round = 0; round < 64 && (handleRealEvents() | handleShadowEvents()); ++round) {
  }
  awaitReplies();
}

}  // namespace iof::xen
