#include "ioreq_filter/interposer/interposer.h"

#include <algorithm>
#include <cstdio>
#include <cerrno>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "ioreq_filter/daemon/client.h"

namespace iof::interposer {

using namespace xen;

Interposer::Interposer(Hypervisor& hv, InterposerConfig config) : hv_(hv), cfg_(std::move(config)) {}

Interposer::~Interposer() {
  stopWatch();
  closeEvents();
  relay_.reset();
}

int Interposer::createServer(DomId domid, int bufioreq, ServerId* id) {
  if (server_ >= 0) return -EEXIST;  // QEMU creates exactly one; a second would escape the filter
  if (bufioreq == int(BufioreqMode::Off)) return -EINVAL;  // QEMU 7.2 insists on buffered (xen-hvm.c:1381)
  auto r = hv_.createServer(domid, BufioreqMode(bufioreq));
  if (!r) {
    log(r.error().message());
    return -EIO;
  }
  domid_ = domid;
  server_ = *r;
  *id = *r;
  log("created ioreq server " + std::to_string(*r) + " for domid " + std::to_string(domid));
  return 0;
}

bool Interposer::ownsServer(DomId domid, ServerId id) const noexcept { return server_ >= 0 && domid == domid_ && id == server_; }

int Interposer::serverInfo(DomId domid, ServerId id, Port* bufport) {
  if (!ownsServer(domid, id)) return -ENOENT;
  auto info = hv_.serverInfo(domid, id);
  if (!info) return -EIO;
  real_buf_remote_ = info->bufioreq_port;
  // Inline: QEMU binds the real buffered port through us. Proxy: the daemon's port is not known yet.
  if (bufport) *bufport = cfg_.mode == Deployment::Inline ? info->bufioreq_port : kProxyBufferedPlaceholder;
  return 0;
}

void* Interposer::mapResource(DomId domid, ServerId id, unsigned long frame, unsigned long frames, int* err) {
  *err = 0;
  if (!ownsServer(domid, id) || frame != 0 || frames != 2) {
    *err = EINVAL;  // QEMU maps both frames at once (xen-hvm.c xen_map_ioreq_server)
    return nullptr;
  }
  auto vc = hv_.vcpuCount(domid);
  if (!vc) {
    *err = EIO;
    return nullptr;
  }
  vcpus_ = std::min(*vc, kMaxVcpus);
  vcpu_local_.assign(vcpus_, 0);
  if (cfg_.mode == Deployment::Inline) {
    auto real = hv_.mapIoreqPages(domid, id);
    if (!real) {
      log(real.error().message());
      *err = EIO;
      return nullptr;
    }
    real_pages_ = std::move(*real);
    auto sh = ShadowFile::open("");
    if (!sh) {
      *err = ENOMEM;
      return nullptr;
    }
    shadow_ = std::make_unique<ShadowFile>(std::move(*sh));
    initJournal(shadow_->journal(), domid, id, vcpus_, true);
  } else {
    // Xen allocates the ioreq pages on their first mapping and writes vp_eport at enable only into
    // pages that exist (ioreq.c:810, 353): map once now, so the daemon finds the ports after enable.
    if (auto real = hv_.mapIoreqPages(domid, id); !real) {
      log(real.error().message());
      *err = EIO;
      return nullptr;
    }
    auto sh = ShadowFile::open(daemon::shadowPath(cfg_.run_dir, domid));
    if (!sh) {
      log(sh.error().message());
      *err = EACCES;
      return nullptr;
    }
    shadow_ = std::make_unique<ShadowFile>(std::move(*sh));
  }
  return shadow_->pages().buffered;
}

void Interposer::unmapResource() {
  stopWatch();
  relay_.reset();
  real_pages_ = Mapping();
  shadow_.reset();
}

int Interposer::setServerState(DomId domid, ServerId id, bool enabled) {
  if (!ownsServer(domid, id)) return -ENOENT;
  if (auto ok = hv_.setServerState(domid, id, enabled); !ok) {
    log(ok.error().message());
    return -EIO;
  }
  // QEMU enables again on every run-state change (xen_hvm_change_state_handler): set up only once.
  if (!enabled || relay_ || proxy_attached_ || !shadow_) return 0;
  auto ev = hv_.openEventChannel();
  if (!ev) return -EIO;
  events_ = std::move(*ev);
  if (cfg_.mode == Deployment::Inline) {
    const IoreqPages real = pagesOf(real_pages_);
    IoreqPages sh = shadow_->pages();
    for (unsigned i = 0; i < vcpus_; ++i) {
      // QEMU binds what it reads here; we recognise the real vp_eport in the bind wrapper.
      sh.sync->vcpu[i].vp_eport = real.sync->vcpu[i].vp_eport;
    }
    relay_ = std::make_unique<Relay>(hv_, domid, real, sh, shadow_->journal(), vcpus_, cfg_.filter);
    kick_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
    epoll_event e{};
    e.events = EPOLLIN;
    e.data.fd = events_->fd();
    epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, events_->fd(), &e);
    e.data.fd = kick_fd_;
    epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, kick_fd_, &e);
    log("inline filtering enabled for " + std::to_string(vcpus_) + " vCPUs");
    startWatch();
    return 0;
  }
  // Proxy: the daemon adopts the server now that vp_eport is valid, and fills in the shadow ports.
  auto r = daemon::request(daemon::socketPath(cfg_.run_dir, domid),
                           {{"cmd", "attach"}, {"domid", domid}, {"server", id}, {"vcpus", vcpus_}},
                           std::chrono::milliseconds(10000));
  if (!r) {
    log("ioreq-filterd did not attach: " + r.error().message());
    events_.reset();
    return -EIO;  // QEMU exits: the guest never runs unfiltered
  }
  proxy_attached_ = true;
  log("proxy attached by ioreq-filterd");
  return 0;
}

int Interposer::destroyServer(DomId domid, ServerId id) {
  if (!ownsServer(domid, id)) return -ENOENT;
  stopWatch();
  closeEvents();
  relay_.reset();
  real_pages_ = Mapping();
  if (auto ok = hv_.destroyServer(domid, id); !ok) return -EIO;
  server_ = -1;
  return 0;
}

// Inline mode has no daemon to watch for a second ioreq server, so a thread in QEMU's process does,
// on its own: it only reads the domain's server list and, on a finding, crashes the domain.
void Interposer::startWatch() {
  if (watch_.joinable() || cfg_.watch_period.count() <= 0) return;
  watch_stop_ = false;
  const xen::ServerWatch watch(domid_, xen::ServerId(server_), cfg_.allowed_servers);
  // The same thread gives QEMU's log exact totals: the per-refusal lines stop at powers of two, so
  // at most once a second, when they changed, and once more when the watch stops.
  const RelayCounters* counters = relay_ ? &relay_->counters() : nullptr;
  watch_ = std::thread([this, watch, counters] {
    std::unique_lock lk(watch_mu_);
    std::uint64_t reported = 0;
    auto report = [&](const char* when, bool always) {
      if (!counters) return;
      const std::uint64_t requests = counters->requests.load(std::memory_order_relaxed);
      if (requests == reported && !always) return;
      reported = requests;
      log(std::string("counters") + when + ": requests " + std::to_string(requests) + " forwarded " +
          std::to_string(counters->forwarded.load()) + " refused " + std::to_string(counters->refused.load()) +
          " monitored " + std::to_string(counters->monitored.load()) + " malformed " +
          std::to_string(counters->malformed.load()) + " buffered " + std::to_string(counters->buffered.load()) +
          " buffered_refused " + std::to_string(counters->buffered_refused.load()));
    };
    auto last = std::chrono::steady_clock::now();
    while (!watch_cv_.wait_for(lk, cfg_.watch_period, [this] { return watch_stop_; })) {
      const std::string why = watch.check(hv_);
      if (!why.empty()) {
        const int rc = hv_.shutdown(domid_, xen::kShutdownCrash);
        log(why + "; crashed the domain (rc " + std::to_string(rc) + ")");
        report(" (final)", true);
        return;
      }
      if (std::chrono::steady_clock::now() - last >= std::chrono::seconds(1)) {
        last = std::chrono::steady_clock::now();
        report("", false);
      }
    }
    report(" (final)", true);
  });
}

void Interposer::stopWatch() {
  if (!watch_.joinable()) return;
  {
    std::lock_guard lk(watch_mu_);
    watch_stop_ = true;
  }
  watch_cv_.notify_all();
  watch_.join();
}

bool Interposer::isIoreqPort(DomId domid, Port remote) const noexcept {
  if (!shadow_ || server_ < 0) return false;
  if (cfg_.mode == Deployment::Inline) {
    if (domid != domid_) return false;
    if (remote == real_buf_remote_) return true;
    const IoreqPages real = pagesOf(real_pages_);
    for (unsigned i = 0; i < vcpus_; ++i)
      if (real.sync->vcpu[i].vp_eport == remote) return true;
    return false;
  }
  if (remote == kProxyBufferedPlaceholder) return true;
  for (unsigned i = 0; i < vcpus_; ++i)
    if (shadow_->pages().sync->vcpu[i].vp_eport == remote) return true;
  return false;
}

long Interposer::bind(DomId domid, Port remote) {
  if (!events_ || !isIoreqPort(domid, remote)) return -EINVAL;
  Journal& j = shadow_->journal();
  if (cfg_.mode == Deployment::Inline) {
    auto p = events_->bindInterdomain(domid, remote);
    if (!p) return -EINVAL;
    if (remote == real_buf_remote_) {
      buf_local_ = *p;
    } else {
      const IoreqPages real = pagesOf(real_pages_);
      for (unsigned i = 0; i < vcpus_; ++i)
        if (real.sync->vcpu[i].vp_eport == remote) vcpu_local_[i] = *p;
    }
    return *p;
  }
  const bool buffered = remote == kProxyBufferedPlaceholder;
  auto p = events_->bindInterdomain(0, buffered ? j.shadow_buf_port : remote);
  if (!p) return -EINVAL;
  // The daemon needs QEMU's ends to reconnect after a restart.
  if (buffered) {
    buf_local_ = *p;
    j.qemu_buf_port = *p;
  } else {
    for (unsigned i = 0; i < vcpus_; ++i)
      if (shadow_->pages().sync->vcpu[i].vp_eport == remote) {
        vcpu_local_[i] = *p;
        j.qemu_vcpu_port[i] = *p;
      }
  }
  return *p;
}

int Interposer::vcpuOf(Port local) const noexcept {
  for (unsigned i = 0; i < vcpu_local_.size(); ++i)
    if (vcpu_local_[i] == local) return int(i);
  return -1;
}

int Interposer::fd() const noexcept {
  if (!events_) return -1;
  return cfg_.mode == Deployment::Inline ? epoll_fd_ : events_->fd();
}

void Interposer::kick(Port port) noexcept {
  if (kick_head_ - kick_tail_ >= kicked_.size()) return;
  kicked_[kick_head_++ % kicked_.size()] = port;
  const std::uint64_t one = 1;
  (void)!write(kick_fd_, &one, sizeof one);
}

long Interposer::pending() noexcept {
  if (!events_) {
    errno = EBADF;
    return -1;
  }
  if (cfg_.mode == Deployment::Proxy) return events_->pending();
  if (kick_tail_ != kick_head_) {
    const Port p = kicked_[kick_tail_++ % kicked_.size()];
    if (kick_tail_ == kick_head_) {
      std::uint64_t v;
      (void)!read(kick_fd_, &v, sizeof v);
    }
    return p;
  }
  for (;;) {
    const std::int64_t p = events_->pending();
    if (p < 0) {
      errno = EAGAIN;
      return -1;
    }
    if (Port(p) == buf_local_) {
      relay_->pumpBuffered();
      return p;  // QEMU arms its buffered-io timer and drains the shadow ring
    }
    const int v = vcpuOf(Port(p));
    if (v < 0) return p;
    const Step s = relay_->onRealEvent(unsigned(v));
    if (s.notify_real) {
      // Refused and completed here: QEMU never hears of it.
      (void)events_->notify(Port(p));
      (void)events_->unmask(Port(p));
      reportRefusal(unsigned(v));
      continue;
    }
    return p;  // READY in the shadow slot (or spurious: QEMU finds nothing READY and moves on)
  }
}

int Interposer::unmask(Port port) noexcept {
  if (!events_) return -EBADF;
  if (cfg_.mode == Deployment::Inline && port == buf_local_ && relay_ && relay_->pumpBuffered()) {
    // QEMU found its shadow ring empty and re-enabled the port; more arrived meanwhile.
    const int rc = events_->unmask(port);
    kick(port);
    return rc;
  }
  return events_->unmask(port);
}

int Interposer::notify(Port port) noexcept {
  if (!events_) return -EBADF;
  if (cfg_.mode == Deployment::Proxy) return events_->notify(port);
  const int v = vcpuOf(port);
  if (v < 0) return events_->notify(port);
  const Step s = relay_->onShadowEvent(unsigned(v));
  if (s.notify_shadow) kick(port);  // the next rep of a split request waits in the shadow slot
  return s.notify_real ? events_->notify(port) : 0;
}

void Interposer::reportRefusal(unsigned v) noexcept {
  // QEMU's log is the only channel inline mode has: the 1st, 2nd, 4th, 8th... refusal, so a guest
  // cannot flood it. No allocation: a stack buffer and write(2).
  const std::uint64_t n = relay_->counters().refused.load(std::memory_order_relaxed);
  if (n == 0 || (n & (n - 1)) != 0) return;
  const IoreqSlot& r = shadow_->journal().entry[v].request;
  char line[200];
  const int len = std::snprintf(line, sizeof line,
                                "ioreq-interposer: refused %llu so far; latest: type %u %s addr 0x%llx size %u data 0x%llx "
                                "vcpu %u (forwarded %llu)\n",
                                static_cast<unsigned long long>(n), unsigned(r.type), r.dir ? "read" : "write",
                                static_cast<unsigned long long>(r.addr), unsigned(r.size),
                                static_cast<unsigned long long>(r.data), v,
                                static_cast<unsigned long long>(relay_->counters().forwarded.load()));
  if (len > 0) (void)!write(2, line, std::size_t(std::min(len, int(sizeof line) - 1)));
}

void Interposer::closeEvents() {
  events_.reset();
  if (epoll_fd_ >= 0) close(epoll_fd_);
  if (kick_fd_ >= 0) close(kick_fd_);
  epoll_fd_ = kick_fd_ = -1;
}

void Interposer::setFilter(RequestFilter* f) noexcept {
  cfg_.filter = f;
  if (relay_) relay_->setFilter(f);
}

}  // namespace iof::interposer
