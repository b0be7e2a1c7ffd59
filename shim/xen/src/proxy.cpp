#include "ioreq_filter/xen/proxy.h"

#include <algorithm>
#include <sched.h>

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

  // The shadow ports go on the session's handle: one fd and one pending() loop serve both sides.
  p->events_ = &p->session_->events();
  auto bindShadow = [&](std::uint32_t qemuPort) -> Result<Port> {
    // QEMU's end survives us: after a restart it is unbound again and we connect to it.
    if (qemuPort != 0) return p->events_->bindInterdomain(0, qemuPort);
    return p->events_->bindUnbound(0);
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
  p->awaiting_.assign(vcpus, 0);
  p->shadow_masked_.assign(vcpus, 0);
  p->relay_ = std::make_unique<Relay>(hv, o.domid, p->session_->pages(), p->shadow_.pages(), j, vcpus, o.filter);
  for (unsigned i = 0; i < vcpus; ++i) p->apply(i, p->relay_->recover(i));
  if (p->relay_->pumpBuffered()) (void)p->events_->notify(p->shadow_buf_port_);
  if (p->relay_->counters().recovered.load()) log("recovered " + std::to_string(p->relay_->counters().recovered.load()) + " in-flight slots");
  return p;
}

ProxyEndpoint::~ProxyEndpoint() {
  relay_.reset();
  // Shadow ports unbound first (QEMU's ends wait for the next daemon), then the session: real
  // ports unbound, pages unmapped (QEMU's server stays).
  for (Port port : shadow_port_) (void)events_->unbind(port);
  if (shadow_buf_port_) (void)events_->unbind(shadow_buf_port_);
  session_.reset();
}

namespace {
std::int64_t nowNs() noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}
}  // namespace

void ProxyEndpoint::apply(unsigned v, Step step) noexcept {
  if (step.notify_shadow && v < shadow_port_.size()) {
    awaiting_[v] = 1;
    if (reply_poll_max_ns_ && !forwarded_at_[v]) forwarded_at_[v] = nowNs();
    (void)events_->notify(shadow_port_[v]);
  }
  if (step.notify_real) (void)events_->notify(session_->vcpuPort(v));
}

// QEMU's answer was taken (by its event or by polling): learn how long QEMU took.
void ProxyEndpoint::onShadowStep(unsigned v, Step step) noexcept {
  if (step.notify_real) {
    awaiting_[v] = 0;
    if (reply_poll_max_ns_ && forwarded_at_[v]) {
      const std::int64_t took = nowNs() - forwarded_at_[v];
      turnaround_ns_ += (took - turnaround_ns_) / 8;
    }
    forwarded_at_[v] = 0;
  }
  apply(v, step);  // a split request forwards its next rep: awaiting again
}

std::chrono::nanoseconds ProxyEndpoint::replyPollBudget() const noexcept {
  // Twice the usual turnaround catches most answers; a QEMU slower than the bound is not waited for.
  if (!reply_poll_max_ns_ || turnaround_ns_ > reply_poll_max_ns_) return std::chrono::nanoseconds(0);
  return std::chrono::nanoseconds(std::min(reply_poll_max_ns_, 2 * turnaround_ns_ + 1000));
}

int ProxyEndpoint::vcpuOfShadowPort(Port port) const noexcept {
  const auto it = std::find(shadow_port_.begin(), shadow_port_.end(), port);
  return it == shadow_port_.end() ? -1 : int(it - shadow_port_.begin());
}

void ProxyEndpoint::unmaskShadow(unsigned v) noexcept {
  if (!shadow_masked_[v]) return;
  shadow_masked_[v] = 0;
  (void)events_->unmask(shadow_port_[v]);  // a notification latched meanwhile is delivered now
}

// One delivered port. A delivered port stays masked until unmasked (the Linux evtchn driver's
// lateeoi); the unmask comes after the notification the event caused, off the woken side's path.
void ProxyEndpoint::dispatch(Port port) noexcept {
  if (const int v = session_->vcpuOfPort(port); v >= 0) {
    apply(unsigned(v), relay_->onRealEvent(unsigned(v)));
    (void)events_->unmask(port);
    return;
  }
  if (port == session_->bufferedPort()) {
    if (relay_->pumpBuffered()) (void)events_->notify(shadow_buf_port_);
    (void)events_->unmask(port);
    return;
  }
  if (const int v = vcpuOfShadowPort(port); v >= 0) {
    shadow_masked_[unsigned(v)] = 1;
    onShadowStep(unsigned(v), relay_->onShadowEvent(unsigned(v)));
    // With reply polling on, the port stays masked while no answer is awaited: QEMU's next
    // notification then only latches, unless a poll gives up and unmasks it (awaitReplies).
    if (awaiting_[unsigned(v)] || !reply_poll_max_ns_) unmaskShadow(unsigned(v));
    return;
  }
  (void)events_->unmask(port);  // our shadow buffered port, or a port we no longer know
}

void ProxyEndpoint::awaitReplies() noexcept {
  const unsigned n = unsigned(awaiting_.size());
  const std::int64_t budget = replyPollBudget().count();
  bool awaiting = std::find(awaiting_.begin(), awaiting_.end(), 1) != awaiting_.end();
  if (budget && awaiting) {
    const IoreqPages real = session_->pages();
    const IoreqPages sh = shadow_.pages();
    const std::int64_t t0 = nowNs();
    std::int64_t now = t0;
    for (unsigned spin = 0;; ++spin) {
      awaiting = false;
      bool qemuRunning = false, guestWaiting = false;
      for (unsigned v = 0; v < n; ++v) {
        if (awaiting_[v]) {
          const SlotState st = loadState(sh.sync->vcpu[v]);
          if (st == SlotState::RespReady) {
            ++reply_.hits;
            onShadowStep(v, relay_->onShadowEvent(v));
          } else if (st == SlotState::InProcess) {
            qemuRunning = true;
          }
          awaiting |= awaiting_[v] != 0;
        }
        guestWaiting |= loadState(real.sync->vcpu[v]) == SlotState::Ready;
      }
      now = nowNs();
      // A new request from another vCPU is not kept waiting behind this one.
      if (!awaiting || guestWaiting || now - t0 >= budget) break;
      if (qemuRunning && spin % 16 != 15) {
        for (int i = 0; i < 8; ++i) __builtin_ia32_pause();
      } else {
        // QEMU has not taken the request yet (or has been spun on for a while): if it waits for
        // our CPU, let it have it; with the other CPU free this returns at once.
        ++reply_.yields;
        sched_yield();
      }
    }
    if (awaiting) ++reply_.misses;
    reply_.spent_ns += std::uint64_t(now - t0);
  }
  // Never sleep with an answer we wait for unable to wake us.
  for (unsigned v = 0; v < n; ++v)
    if (awaiting_[v]) unmaskShadow(v);
}

void ProxyEndpoint::handleEvents() noexcept {
  // Bounded so a guest that keeps its vCPUs busy cannot starve the control socket and signals.
  for (int i = 0; i < 256; ++i) {
    const std::int64_t port = events_->pending();
    if (port < 0) break;
    dispatch(Port(port));
  }
  // QEMU frees shadow ring space silently; move anything the real ring still holds.
  if (relay_->pumpBuffered()) (void)events_->notify(shadow_buf_port_);
  awaitReplies();
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
      // The caller may sleep next: an answer we forwarded here must be able to wake it.
      for (unsigned v = 0; v < n; ++v)
        if (awaiting_[v]) unmaskShadow(v);
      return found;
    }
    __builtin_ia32_pause();
  }
}

}  // namespace iof::xen
