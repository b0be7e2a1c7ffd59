// ioreq-filter-xen-bench: p50/p99 latency per synchronous request on the simulated pipeline, in one
// run, for
//   baseline   a bare two-process eventfd ping-pong (the physical cost of one wake-up round trip)
//   no-filter  guest vCPU -> QEMU model on the real (simulated) server
//   inline     guest vCPU -> interposer (vets, copies into the shadow) -> QEMU model, same process
//   proxy      guest vCPU -> daemon's relay -> QEMU model on the shadow -> relay -> guest
// plus the in-process cost of the inline wrappers' relay work per request (ns), where the pipeline's
// noise would hide it. Usage: ioreq-filter-xen-bench [requests] (default 20000).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

#include "ioreq_filter/interposer/interposer.h"
#include "ioreq_filter/sim/qemu_model.h"
#include "ioreq_filter/sim/sim_hypervisor.h"
#include "ioreq_filter/xen/proxy.h"

using namespace iof;
using Clock = std::chrono::steady_clock;

namespace {

struct Percentiles {
  double p50, p99;
};

Percentiles summarise(std::vector<double>& ns) {
  std::sort(ns.begin(), ns.end());
  return {ns[ns.size() / 2] / 1000.0, ns[ns.size() * 99 / 100] / 1000.0};
}

void report(const char* name, Percentiles p, const char* note = "") {
  std::printf("%-10s p50 %8.1f us   p99 %8.1f us  %s\n", name, p.p50, p.p99, note);
}

Percentiles eventfdPingPong(int n) {
  const int a = eventfd(0, 0), b = eventfd(0, 0);
  const pid_t child = fork();
  if (child == 0) {
    std::uint64_t v;
    for (int i = 0; i < n; ++i) {
      if (read(a, &v, 8) != 8) _exit(1);
      if (write(b, &v, 8) != 8) _exit(1);
    }
    _exit(0);
  }
  std::vector<double> ns;
  ns.reserve(std::size_t(n));
  std::uint64_t v = 1;
  for (int i = 0; i < n; ++i) {
    const auto t0 = Clock::now();
    if (write(a, &v, 8) != 8 || read(b, &v, 8) != 8) break;
    ns.push_back(double(std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t0).count()));
  }
  waitpid(child, nullptr, 0);
  close(a);
  close(b);
  return summarise(ns);
}

IoRequest readReq() {
  IoRequest r;
  r.type = IoType::Pio;
  r.addr = 0x3f4;
  r.dir = Dir::Read;
  r.size = 1;
  return r;
}

std::uint64_t device(const IoRequest& r) { return r.addr & 0xff; }

Percentiles timeGuest(sim::SimHypervisor& hv, xen::DomId dom, int n) {
  std::vector<double> ns;
  ns.reserve(std::size_t(n));
  for (int i = 0; i < n; ++i) {
    const auto t0 = Clock::now();
    const auto r = hv.guestIo(dom, 0, readReq());
    if (r.status != sim::GuestStatus::Completed) {
      std::fprintf(stderr, "request %d: %s\n", i, sim::toString(r.status));
      std::exit(1);
    }
    ns.push_back(double(std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t0).count()));
  }
  return summarise(ns);
}

struct Guest {
  sim::SimHypervisor hv;
  xen::DomId dom = hv.createDomain({.vcpus = 1});
  xen::ServerId id = 0;
  Guest() {
    id = hv.createServer(dom, xen::BufioreqMode::Atomic).value();
    (void)hv.mapIoreqPages(dom, id);  // as QEMU: map first, then enable
    (void)hv.mapIoRange(dom, id, xen::RangeKind::Pio, 0x3f0, 0x3f7);
    (void)hv.setServerState(dom, id, true);
  }
};

Percentiles noFilter(int n) {
  Guest g;
  auto q = sim::QemuModel::direct(g.hv, g.dom, g.id, 1, device).value();
  q->start();
  return timeGuest(g.hv, g.dom, n);
}

Percentiles proxy(int n, int poll_us = 0, double* cpu_share = nullptr) {
  Guest g;
  xen::ProxyOptions o;
  o.domid = g.dom;
  o.server = g.id;
  o.vcpus = 1;
  auto p = xen::ProxyEndpoint::open(g.hv, o).value();
  auto q = sim::QemuModel::shadow(g.hv, g.dom, p->shadow().fd(), 1, device).value();
  q->start();
  std::atomic<bool> run{true};
  std::thread loop([&] {
    pollfd fds[2] = {{p->realFd(), POLLIN, 0}, {p->shadowFd(), POLLIN, 0}};
    while (run) {
      if (poll(fds, 2, 10) <= 0) continue;
      p->handleEvents();
      if (poll_us)
        while (p->pollFor(std::chrono::microseconds(poll_us))) {
        }
    }
  });
  const auto t0 = Clock::now();
  const auto r = timeGuest(g.hv, g.dom, n);
  const double wall = double(std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t0).count());
  run = false;
  loop.join();
  if (cpu_share) *cpu_share = double(p->pollNanoseconds()) / wall;
  return r;
}

Percentiles inlineMode(int n) {
  Guest g;  // the server is created again by the interposer below, as QEMU would
  sim::SimHypervisor& hv = g.hv;
  interposer::Interposer ip(hv, {});
  xen::ServerId id = 0;
  (void)hv.destroyServer(g.dom, g.id);
  if (ip.createServer(g.dom, 2, &id) != 0) std::exit(1);
  (void)hv.mapIoRange(g.dom, id, xen::RangeKind::Pio, 0x3f0, 0x3f7);
  int err = 0;
  auto* shadow = static_cast<unsigned char*>(ip.mapResource(g.dom, id, 0, 2, &err));
  xen::Port buf = 0;
  (void)ip.serverInfo(g.dom, id, &buf);
  if (ip.setServerState(g.dom, id, true) != 0) std::exit(1);
  auto* sync = reinterpret_cast<xen::SharedIoPage*>(shadow + xen::kPageSize);
  const long port = ip.bind(g.dom, sync->vcpu[0].vp_eport);
  (void)ip.bind(g.dom, buf);
  std::atomic<bool> run{true};
  std::thread qemu([&] {  // QEMU's cpu_handle_ioreq loop on the interposer's fd
    pollfd pfd{ip.fd(), POLLIN, 0};
    while (run) {
      if (poll(&pfd, 1, 10) <= 0) continue;
      const long p = ip.pending();
      if (p < 0) continue;
      (void)ip.unmask(xen::Port(p));
      if (p != port) continue;
      auto& slot = sync->vcpu[0];
      if (xen::loadState(slot) != xen::SlotState::Ready) continue;
      xen::storeState(slot, xen::SlotState::InProcess);
      slot.data = device(xen::toRequest(slot, 0));
      xen::storeState(slot, xen::SlotState::RespReady);
      (void)ip.notify(xen::Port(p));
    }
  });
  const auto r = timeGuest(hv, g.dom, n);
  run = false;
  qemu.join();
  return r;
}

// The relay work the inline wrappers add per request, in-process: pending() vets and copies into
// the shadow slot, notify() copies the reply back. Same pages, one thread, no wake-ups.
double relayNsPerRequest(int n) {
  sim::SimHypervisor hv;
  alignas(4096) static unsigned char real[2 * 4096], shadow[2 * 4096];
  static xen::Journal journal;
  xen::initJournal(journal, 1, 0, 1, true);
  xen::IoreqPages rp{reinterpret_cast<xen::BufferedIoPage*>(real), reinterpret_cast<xen::SharedIoPage*>(real + 4096)};
  xen::IoreqPages sp{reinterpret_cast<xen::BufferedIoPage*>(shadow), reinterpret_cast<xen::SharedIoPage*>(shadow + 4096)};
  struct Pass : RequestFilter {
    Verdict onRequest(const IoRequest&) noexcept override { return Verdict{}; }
  } pass;
  xen::Relay relay(hv, 1, rp, sp, journal, 1, &pass);
  auto& rs = rp.sync->vcpu[0];
  auto& ss = sp.sync->vcpu[0];
  rs.addr = 0x3f4;
  rs.size = 1;
  rs.count = 1;
  rs.dir = 1;
  double best = 1e18;
  for (int round = 0; round < 5; ++round) {
    const auto t0 = Clock::now();
    for (int i = 0; i < n; ++i) {
      xen::storeState(rs, xen::SlotState::Ready);  // what Xen does
      (void)relay.onRealEvent(0);
      xen::storeState(ss, xen::SlotState::RespReady);  // what QEMU does
      (void)relay.onShadowEvent(0);
      xen::storeState(rs, xen::SlotState::None);  // what Xen does
    }
    const double ns = double(std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t0).count()) / n;
    best = std::min(best, ns);
  }
  // Subtract what Xen's and QEMU's own slot writes in the loop cost.
  const auto t0 = Clock::now();
  for (int i = 0; i < n; ++i) {
    xen::storeState(rs, xen::SlotState::Ready);
    xen::storeState(ss, xen::SlotState::RespReady);
    xen::storeState(rs, xen::SlotState::None);
  }
  const double base = double(std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t0).count()) / n;
  return best - base;
}

}  // namespace

int main(int argc, char** argv) {
  const int n = argc > 1 ? std::atoi(argv[1]) : 20000;
  std::printf("ioreq-filter-xen-bench: %d synchronous PIO reads per pipeline, 1 vCPU, simulated Xen\n", n);
  const auto base = eventfdPingPong(n);
  report("baseline", base, "(two-process eventfd ping-pong)");
  const auto nf = noFilter(n);
  report("no-filter", nf, "(guest -> QEMU)");
  const auto in = inlineMode(n);
  report("inline", in, "(guest -> interposer -> QEMU, one process)");
  const auto px = proxy(n);
  report("proxy", px, "(guest -> daemon -> QEMU -> daemon -> guest)");
  std::printf("proxy adds %.1f us at p50 over no-filter (baseline round trip %.1f us)\n", px.p50 - nf.p50, base.p50);
  double share = 0;
  const auto pp = proxy(n, 50, &share);
  char note[128];
  std::snprintf(note, sizeof note, "(daemon polls 50 us before sleeping: %.0f%% of a core spent polling)", share * 100);
  report("proxy+poll", pp, note);
  std::printf("proxy+poll adds %.1f us at p50 over no-filter\n", pp.p50 - nf.p50);
  std::printf("inline relay work: %.0f ns per request (in-process, pending+notify wrappers' relay steps)\n",
              relayNsPerRequest(1000000));
  return 0;
}
