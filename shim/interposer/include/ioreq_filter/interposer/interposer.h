// What the LD_PRELOAD interposer does inside an unmodified QEMU 7.2 (hw/i386/xen/xen-hvm.c reaches
// Xen's ioreq machinery only through the libxen calls wrapped in wrappers.cpp). QEMU only ever sees
// shadow pages and ports the interposer hands it; the real ioreq pages stay out of its reach.
//
//  inline  the interposer maps the real pages and binds the real ports on its own handle; a port is
//          reported pending only after a vetted READY request was copied into its shadow slot; a
//          refused request is completed here (port unmasked, nothing reported); the notify wrapper
//          copies the reply back; the buffered ring is pumped into QEMU's shadow ring, in order,
//          inside the wrappers. QEMU polls an epoll fd (real events + our own re-kick eventfd).
//  proxy   QEMU's shadow pages are the daemon's shadow file; enabling the server asks ioreq-filterd
//          to attach (the call fails, and QEMU with it, if no daemon answers: never unfiltered);
//          QEMU's ports are dom0-local channels to the daemon.
#pragma once

#include <array>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>
#include <memory>
#include <string>
#include <vector>

#include "ioreq_filter/core/request_filter.h"
#include "ioreq_filter/xen/hypervisor.h"
#include "ioreq_filter/xen/relay.h"
#include "ioreq_filter/xen/shadow.h"

namespace iof::interposer {

enum class Deployment { Inline, Proxy };

struct InterposerConfig {
  Deployment mode = Deployment::Inline;
  std::string run_dir = "/run/ioreq-filter";  // proxy: where the daemon's socket and shadow file live
  RequestFilter* filter = nullptr;            // inline: the engine (null forwards everything)
  std::function<void(const std::string&)> log;
  // Inline: ioreq servers of the domain besides QEMU's that may exist (IOREQ_FILTER_ALLOW_SERVERS),
  // and how often a watch thread checks that no other appeared (it crashes the domain if one did;
  // in proxy mode the daemon keeps this watch).
  std::vector<xen::ServerId> allowed_servers;
  std::chrono::milliseconds watch_period{100};
};

// The buffered port QEMU is told in proxy mode before the daemon has allocated the real one.
inline constexpr xen::Port kProxyBufferedPlaceholder = 0x7ffffff0;

class Interposer {
 public:
  Interposer(xen::Hypervisor& hv, InterposerConfig config);
  ~Interposer();

  // Each returns 0 or -errno, like the wrapped libxen calls' errno.
  int createServer(xen::DomId domid, int bufioreq, xen::ServerId* id);
  bool ownsServer(xen::DomId domid, xen::ServerId id) const noexcept;
  int serverInfo(xen::DomId domid, xen::ServerId id, xen::Port* bufport);
  int setServerState(xen::DomId domid, xen::ServerId id, bool enabled);
  int destroyServer(xen::DomId domid, xen::ServerId id);
  void* mapResource(xen::DomId domid, xen::ServerId id, unsigned long frame, unsigned long frames, int* err);
  void unmapResource();
  bool isIoreqPort(xen::DomId domid, xen::Port remote) const noexcept;
  long bind(xen::DomId domid, xen::Port remote);  // QEMU's local port, or -errno

  // QEMU's ioreq event-channel handle, emulated.
  int fd() const noexcept;
  long pending() noexcept;  // -1 (errno EAGAIN) when nothing is pending
  int unmask(xen::Port port) noexcept;
  int notify(xen::Port port) noexcept;
  void closeEvents();

  void setFilter(RequestFilter* f) noexcept;
  const xen::RelayCounters* counters() const noexcept { return relay_ ? &relay_->counters() : nullptr; }
  Deployment mode() const noexcept { return cfg_.mode; }
  xen::IoreqPages shadowPages() const noexcept { return shadow_ ? shadow_->pages() : xen::IoreqPages{}; }

 private:
  int vcpuOf(xen::Port local) const noexcept;
  void kick(xen::Port port) noexcept;  // make QEMU come back for `port`
  void reportRefusal(unsigned vcpu) noexcept;
  void log(const std::string& s) const {
    if (cfg_.log) cfg_.log(s);
  }
  void startWatch();
  void stopWatch();

  xen::Hypervisor& hv_;
  InterposerConfig cfg_;
  xen::DomId domid_ = 0;
  int server_ = -1;
  bool proxy_attached_ = false;
  unsigned vcpus_ = 0;
  xen::Mapping real_pages_;
  std::unique_ptr<xen::ShadowFile> shadow_;
  std::unique_ptr<xen::EventChannel> events_;  // inline: real ports; proxy: dom0-local shadow ports
  std::vector<xen::Port> vcpu_local_;          // QEMU-visible local port per vCPU (0 = not bound)
  xen::Port buf_local_ = 0;
  xen::Port real_buf_remote_ = 0;
  std::unique_ptr<xen::Relay> relay_;
  int epoll_fd_ = -1, kick_fd_ = -1;
  std::array<xen::Port, 256> kicked_{};
  unsigned kick_head_ = 0, kick_tail_ = 0;
  std::mutex watch_mu_;
  std::condition_variable watch_cv_;
  bool watch_stop_ = false;
  std::thread watch_;  // inline: the second-server watch (xen::ServerWatch)
};

}  // namespace iof::interposer
