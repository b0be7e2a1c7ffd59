// ioreq-filter-xen-bench: p50/p99 latency per synchronous request on the simulated pipeline, in one
// run, for
//   baseline   a bare two-process eventfd ping-pong (the physical cost of one wake-up round trip)
//   no-filter  guest vCPU -> QEMU model on the real (simulated) server
//   inline     guest vCPU -> interposer (vets, copies into the shadow) -> QEMU model, same process
//   proxy      guest vCPU -> daemon's relay -> QEMU model on the shadow -> relay -> guest
// plus the in-process cost of the inline wrappers' relay work per request (ns), where the pipeline's
// noise would hide it. The pipelines are sampled in interleaved rounds (the machine is shared and
// noisy: each pipeline must see the same load), with the CPU time each one spends per request, and
// two instrumented runs break no-filter's and proxy's p50 down hop by hop.
// Same measurement rules for every pipeline: the same guest thread issues the same request and
// times it with the same clock; each pipeline is built once and sampled in the same interleaved
// rounds (order rotating); pipelines not being sampled sleep in poll() with >= 10 ms timeouts;
// no thread of any pipeline is pinned (the scheduler places all of them on both CPUs alike), or
// with --pin all of them are, alike: the guest vCPU thread on CPU 0, every device-model-side thread
// (QEMU, the daemon, the baseline's child process) on CPU 1.
// Usage: ioreq-filter-xen-bench [--pin] [requests] [rounds] [pipelines|all] (default 20000 100 all).
#include <algorithm>
#include <atomic>
#include <memory>
#include <string>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <sys/resource.h>
#include <time.h>
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

double medianUs(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2] / 1000.0;
}

double cpuNs(clockid_t clock) {
  timespec ts{};
  clock_gettime(clock, &ts);
  return double(ts.tv_sec) * 1e9 + double(ts.tv_nsec);
}
double threadCpuNs(std::thread& t) {
  clockid_t c;
  return pthread_getcpuclockid(t.native_handle(), &c) == 0 ? cpuNs(c) : 0;
}

// One pipeline, set up once and sampled in rounds interleaved with the others, so that every
// pipeline sees the same background load of this shared machine.
class Pipeline {
 public:
  virtual ~Pipeline() = default;
  virtual const char* name() const = 0;
  virtual const char* note() const = 0;
  // Issues k synchronous requests, appending each one's latency (ns).
  virtual void sample(int k, std::vector<double>& ns) = 0;
  // CPU time (ns) spent by every thread and process of the pipeline so far, when known.
  virtual double cpuTotalNs() { return cpuNs(CLOCK_PROCESS_CPUTIME_ID); }
  // CPU time (ns) of the daemon's thread, for the proxy pipelines.
  virtual double daemonCpuNs() { return 0; }
  virtual double daemonWakes() { return 0; }  // returns from the daemon's poll()
  // After finish(): what the daemon's polling cost and won, for the proxy pipelines ("" if none).
  virtual std::string pollingSummary(int /*requests*/) const { return ""; }
  // Times a thread of the pipeline found the simulator's lock taken (0 for the baseline).
  virtual std::uint64_t lockContentions() const { return 0; }
  virtual void finish() {}
};

// --pin: the guest's vCPU thread on CPU 0 and every device-model-side thread (QEMU, the daemon, the
// baseline's child) on CPU 1, for every pipeline alike: a dom0 whose device models share one CPU
// apart from the guest's. Threads inherit the affinity of the thread that creates them.
bool g_pin = false;
constexpr int kGuestCpu = 0, kDeviceModelCpu = 1;
void pinSelf(int cpu) {
  if (!g_pin) return;
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  if (pthread_setaffinity_np(pthread_self(), sizeof set, &set) != 0) {
    std::fprintf(stderr, "--pin: cannot pin to CPU %d\n", cpu);
    std::exit(2);
  }
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

void timeGuest(sim::SimHypervisor& hv, xen::DomId dom, int k, std::vector<double>& ns) {
  for (int i = 0; i < k; ++i) {
    const auto t0 = Clock::now();
    const auto r = hv.guestIo(dom, 0, readReq());
    if (r.status != sim::GuestStatus::Completed) {
      std::fprintf(stderr, "request %zu: %s\n", ns.size(), sim::toString(r.status));
      std::exit(1);
    }
    ns.push_back(double(std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t0).count()));
  }
}

// The physical cost of one wake-up round trip: two processes, blocking read/write on eventfds.
class Baseline final : public Pipeline {
 public:
  Baseline() {
    child_ = fork();
    if (child_ == 0) {
      std::uint64_t v;
      for (;;) {
        if (read(a_, &v, 8) != 8 || v == kStop) _exit(0);
        if (write(b_, &v, 8) != 8) _exit(1);
      }
    }
  }
  ~Baseline() override {
    finish();
    close(a_);
    close(b_);
  }
  const char* name() const override { return "baseline"; }
  const char* note() const override { return "two-process eventfd ping-pong"; }
  void sample(int k, std::vector<double>& ns) override {
    std::uint64_t v = 1;
    for (int i = 0; i < k; ++i) {
      const auto t0 = Clock::now();
      if (write(a_, &v, 8) != 8 || read(b_, &v, 8) != 8) std::exit(1);
      ns.push_back(double(std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t0).count()));
    }
  }
  // Only the parent's side is readable while the child runs; the child's CPU is added at the end.
  double cpuTotalNs() override { return cpuNs(CLOCK_THREAD_CPUTIME_ID) + child_cpu_ns_; }
  void finish() override {
    if (child_ <= 0) return;
    const std::uint64_t stop = kStop;
    (void)!write(a_, &stop, 8);
    int status;
    rusage ru{};
    wait4(child_, &status, 0, &ru);
    child_cpu_ns_ = (double(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e6 + double(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec)) * 1e3;
    child_ = 0;
  }

 private:
  static constexpr std::uint64_t kStop = 2;
  int a_ = eventfd(0, 0), b_ = eventfd(0, 0);
  pid_t child_ = 0;
  double child_cpu_ns_ = 0;
};

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

class NoFilter final : public Pipeline {
 public:
  std::uint64_t lockContentions() const override { return g_.hv.lockContentions(); }
  NoFilter() {
    q_ = sim::QemuModel::direct(g_.hv, g_.dom, g_.id, 1, device).value();
    q_->start();
  }
  const char* name() const override { return "no-filter"; }
  const char* note() const override { return "guest -> QEMU"; }
  void sample(int k, std::vector<double>& ns) override { timeGuest(g_.hv, g_.dom, k, ns); }

 private:
  Guest g_;
  std::unique_ptr<sim::QemuModel> q_;
};

class Proxy final : public Pipeline {
 public:
  std::uint64_t lockContentions() const override { return g_.hv.lockContentions(); }
  Proxy(int poll_us, int reply_poll_us) : poll_us_(poll_us), reply_poll_us_(reply_poll_us) {
    xen::ProxyOptions o;
    o.domid = g_.dom;
    o.server = g_.id;
    o.vcpus = 1;
    o.reply_poll_max = std::chrono::microseconds(reply_poll_us);
    p_ = xen::ProxyEndpoint::open(g_.hv, o).value();
    q_ = sim::QemuModel::shadow(g_.hv, g_.dom, p_->shadow().fd(), 1, device).value();
    q_->start();
    loop_ = std::thread([this] {  // the daemon's event loop, as in ioreq-filterd
      pollfd pfd{p_->fd(), POLLIN, 0};
      while (run_) {
        if (poll(&pfd, 1, 10) <= 0) continue;
        wakes_.fetch_add(1, std::memory_order_relaxed);
        p_->handleEvents();
        if (poll_us_)
          while (p_->pollFor(std::chrono::microseconds(poll_us_))) {
          }
      }
    });
  }
  ~Proxy() override { finish(); }
  const char* name() const override { return poll_us_ ? "proxy+poll" : reply_poll_us_ ? "proxy+reply" : "proxy"; }
  const char* note() const override {
    return poll_us_        ? "--poll-us 50: daemon polls every slot 50 us before sleeping"
           : reply_poll_us_ ? "--reply-poll-us: daemon watches for QEMU's answer, adaptive"
                            : "guest -> daemon -> QEMU -> daemon -> guest";
  }
  void sample(int k, std::vector<double>& ns) override { timeGuest(g_.hv, g_.dom, k, ns); }
  double daemonCpuNs() override { return loop_.joinable() ? threadCpuNs(loop_) : 0; }
  double daemonWakes() override { return double(wakes_.load()); }
  void finish() override {
    run_ = false;
    if (loop_.joinable()) loop_.join();
  }
  std::string pollingSummary(int requests) const override {
    char line[200] = "";
    if (reply_poll_us_) {
      const auto& r = p_->replyPolling();
      std::snprintf(line, sizeof line, "reply polling: %.1f us CPU/request spinning, %.0f%% of answers taken from the slot, "
                    "%.2f misses and %.2f sched_yield per request",
                    double(r.spent_ns) / requests / 1000, 100.0 * double(r.hits) / requests, double(r.misses) / requests,
                    double(r.yields) / requests);
    } else if (poll_us_) {
      std::snprintf(line, sizeof line, "slot polling: %.1f us CPU/request spinning, %.2f finds per request",
                    double(p_->pollNanoseconds()) / requests / 1000, double(p_->pollHits()) / requests);
    }
    return line;
  }

 private:
  Guest g_;
  int poll_us_, reply_poll_us_;
  std::unique_ptr<xen::ProxyEndpoint> p_;
  std::unique_ptr<sim::QemuModel> q_;
  std::atomic<bool> run_{true};
  std::atomic<std::uint64_t> wakes_{0};
  std::thread loop_;
};

class Inline final : public Pipeline {
 public:
  std::uint64_t lockContentions() const override { return g_.hv.lockContentions(); }
  Inline() : ip_(g_.hv, {}) {  // the server is created again by the interposer, as QEMU would
    sim::SimHypervisor& hv = g_.hv;
    xen::ServerId id = 0;
    (void)hv.destroyServer(g_.dom, g_.id);
    if (ip_.createServer(g_.dom, 2, &id) != 0) std::exit(1);
    (void)hv.mapIoRange(g_.dom, id, xen::RangeKind::Pio, 0x3f0, 0x3f7);
    int err = 0;
    auto* shadow = static_cast<unsigned char*>(ip_.mapResource(g_.dom, id, 0, 2, &err));
    xen::Port buf = 0;
    (void)ip_.serverInfo(g_.dom, id, &buf);
    if (ip_.setServerState(g_.dom, id, true) != 0) std::exit(1);
    sync_ = reinterpret_cast<xen::SharedIoPage*>(shadow + xen::kPageSize);
    port_ = ip_.bind(g_.dom, sync_->vcpu[0].vp_eport);
    (void)ip_.bind(g_.dom, buf);
    qemu_ = std::thread([this] {  // QEMU's cpu_handle_ioreq loop on the interposer's fd
      pollfd pfd{ip_.fd(), POLLIN, 0};
      while (run_) {
        if (poll(&pfd, 1, 10) <= 0) continue;
        const long p = ip_.pending();
        if (p < 0) continue;
        (void)ip_.unmask(xen::Port(p));
        if (p != port_) continue;
        auto& slot = sync_->vcpu[0];
        if (xen::loadState(slot) != xen::SlotState::Ready) continue;
        xen::storeState(slot, xen::SlotState::InProcess);
        slot.data = device(xen::toRequest(slot, 0));
        xen::storeState(slot, xen::SlotState::RespReady);
        (void)ip_.notify(xen::Port(p));
      }
    });
  }
  ~Inline() override { finish(); }
  const char* name() const override { return "inline"; }
  const char* note() const override { return "guest -> interposer -> QEMU, one process"; }
  void sample(int k, std::vector<double>& ns) override { timeGuest(g_.hv, g_.dom, k, ns); }
  void finish() override {
    run_ = false;
    if (qemu_.joinable()) qemu_.join();
  }

 private:
  Guest g_;
  interposer::Interposer ip_;
  xen::SharedIoPage* sync_ = nullptr;
  long port_ = 0;
  std::atomic<bool> run_{true};
  std::thread qemu_;
};

// Where the proxy's time goes: one instrumented run stamps each request at every hand-over on
// the thread that performs it (steady_clock reads cost ~30 ns here, against hops of microseconds).
struct Stamps {
  std::vector<std::int64_t> issue, daemonWake1, forwarded, device, daemonWake2, replied, done;
  explicit Stamps(int n)
      : issue(n), daemonWake1(n), forwarded(n), device(n), daemonWake2(n), replied(n), done(n) {}
};
std::int64_t nowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count();
}

void proxyBreakdown(int n, int reply_poll_us) {
  pinSelf(kDeviceModelCpu);  // QEMU's and the daemon's threads are created below
  Guest g;
  Stamps st(n);
  std::atomic<int> current{0};
  xen::ProxyOptions o;
  o.domid = g.dom;
  o.server = g.id;
  o.vcpus = 1;
  o.reply_poll_max = std::chrono::microseconds(reply_poll_us);
  auto p = xen::ProxyEndpoint::open(g.hv, o).value();
  auto q = sim::QemuModel::shadow(g.hv, g.dom, p->shadow().fd(), 1, [&](const IoRequest& r) {
             st.device[std::size_t(current.load(std::memory_order_relaxed))] = nowNs();
             return device(r);
           }).value();
  q->start();
  std::atomic<bool> run{true};
  const xen::IoreqPages real = p->session().pages(), shadow = p->shadow().pages();
  std::thread loop([&] {
    pollfd pfd{p->fd(), POLLIN, 0};
    while (run) {
      if (poll(&pfd, 1, 10) <= 0) continue;
      const auto woke = nowNs();
      const auto i = std::size_t(current.load(std::memory_order_relaxed));
      // Which hop woke us, from the slots (one handle carries both sides' events).
      const bool request = xen::loadState(real.sync->vcpu[0]) == xen::SlotState::Ready;
      const bool answer = xen::loadState(shadow.sync->vcpu[0]) == xen::SlotState::RespReady;
      p->handleEvents();
      if (request) st.daemonWake1[i] = woke, st.forwarded[i] = nowNs();
      if (answer) st.daemonWake2[i] = woke, st.replied[i] = nowNs();
    }
  });
  pinSelf(kGuestCpu);
  for (int i = 0; i < n; ++i) {
    current.store(i, std::memory_order_relaxed);
    st.issue[std::size_t(i)] = nowNs();
    if (g.hv.guestIo(g.dom, 0, readReq()).status != sim::GuestStatus::Completed) std::exit(1);
    st.done[std::size_t(i)] = nowNs();
  }
  run = false;
  loop.join();
  // Segments that add up to the request: each ends when the next thread runs. The daemon's own
  // handling calls are shown apart: they return late when the thread they woke took their CPU.
  std::vector<double> hop[4], handling[2], total, answer;
  for (std::size_t i = 0; i < std::size_t(n); ++i) {
    total.push_back(double(st.done[i] - st.issue[i]));
    if (!st.daemonWake1[i] || !st.device[i]) continue;
    hop[0].push_back(double(st.daemonWake1[i] - st.issue[i]));
    hop[1].push_back(double(st.device[i] - st.daemonWake1[i]));
    handling[0].push_back(double(st.forwarded[i] - st.daemonWake1[i]));
    answer.push_back(double(st.done[i] - st.device[i]));
    if (!st.daemonWake2[i]) continue;
    hop[2].push_back(double(st.daemonWake2[i] - st.device[i]));
    hop[3].push_back(double(st.done[i] - st.daemonWake2[i]));
    handling[1].push_back(double(st.replied[i] - st.daemonWake2[i]));
  }
  std::printf("proxy%s breakdown (instrumented run, medians; p50 %.1f us):\n"
              "  guest issues, daemon wakes                      %5.1f us\n"
              "  daemon vets + copies + notifies, QEMU wakes     %5.1f us  (daemon's call returns after %.1f us)\n",
              reply_poll_us ? "+reply" : "", medianUs(total), medianUs(hop[0]), medianUs(hop[1]), medianUs(handling[0]));
  if (reply_poll_us) {
    const auto& rp = p->replyPolling();
    std::printf("  QEMU answers, daemon takes it from the slot,\n"
                "  completes + notifies, guest runs again          %5.1f us  (%.0f%% of answers taken from the slot)\n",
                medianUs(answer), 100.0 * double(rp.hits) / n);
  } else if (!hop[2].empty()) {
    std::printf("  QEMU answers + notifies, daemon wakes           %5.1f us\n"
                "  daemon completes + notifies, guest runs again   %5.1f us  (daemon's call returns after %.1f us)\n",
                medianUs(hop[2]), medianUs(hop[3]), medianUs(handling[1]));
  }
}

void noFilterBreakdown(int n) {
  pinSelf(kDeviceModelCpu);
  Guest g;
  Stamps st(n);
  std::atomic<int> current{0};
  auto q = sim::QemuModel::direct(g.hv, g.dom, g.id, 1, [&](const IoRequest& r) {
             st.device[std::size_t(current.load(std::memory_order_relaxed))] = nowNs();
             return device(r);
           }).value();
  q->start();
  pinSelf(kGuestCpu);
  for (int i = 0; i < n; ++i) {
    current.store(i, std::memory_order_relaxed);
    st.issue[std::size_t(i)] = nowNs();
    if (g.hv.guestIo(g.dom, 0, readReq()).status != sim::GuestStatus::Completed) std::exit(1);
    st.done[std::size_t(i)] = nowNs();
  }
  std::vector<double> a, b, total;
  for (std::size_t i = 0; i < std::size_t(n); ++i) {
    a.push_back(double(st.device[i] - st.issue[i]));
    b.push_back(double(st.done[i] - st.device[i]));
    total.push_back(double(st.done[i] - st.issue[i]));
  }
  std::printf("no-filter breakdown (instrumented run, medians; p50 %.1f us):\n"
              "  guest issues, QEMU wakes and reaches the device %5.1f us\n"
              "  QEMU answers + notifies, guest runs again       %5.1f us\n",
              medianUs(total), medianUs(a), medianUs(b));
}

// The relay work the inline wrappers add per request, in-process: pending() vets and copies into
// the shadow slot, notify() copies the reply back. Same pages, one thread, no wake-ups. Thread CPU
// time, not wall time: on this shared machine the thread is preempted for most of the wall time.
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
    const double t0 = cpuNs(CLOCK_THREAD_CPUTIME_ID);
    for (int i = 0; i < n; ++i) {
      xen::storeState(rs, xen::SlotState::Ready);  // what Xen does
      (void)relay.onRealEvent(0);
      xen::storeState(ss, xen::SlotState::RespReady);  // what QEMU does
      (void)relay.onShadowEvent(0);
      xen::storeState(rs, xen::SlotState::None);  // what Xen does
    }
    const double ns = (cpuNs(CLOCK_THREAD_CPUTIME_ID) - t0) / n;
    best = std::min(best, ns);
  }
  // Subtract what Xen's and QEMU's own slot writes in the loop cost.
  const double t0 = cpuNs(CLOCK_THREAD_CPUTIME_ID);
  for (int i = 0; i < n; ++i) {
    xen::storeState(rs, xen::SlotState::Ready);
    xen::storeState(ss, xen::SlotState::RespReady);
    xen::storeState(rs, xen::SlotState::None);
  }
  const double base = (cpuNs(CLOCK_THREAD_CPUTIME_ID) - t0) / n;
  return best - base;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args;
  for (int i = 1; i < argc; ++i) {
    if (std::string(argv[i]) == "--pin") g_pin = true;
    else args.emplace_back(argv[i]);
  }
  const int n = args.size() > 0 ? std::atoi(args[0].c_str()) : 20000;
  const int rounds = args.size() > 1 ? std::atoi(args[1].c_str()) : 100;
  // Optional third argument: the pipelines to run besides baseline and no-filter (the ratios need
  // both), comma-separated, e.g. "proxy" to trace one pipeline alone (strace -c -f); "all": all.
  const std::string only = args.size() > 2 && args[2] != "all" ? args[2] : "";
  if (n < 100 || rounds < 1 || n % rounds) {
    std::fprintf(stderr, "usage: ioreq-filter-xen-bench [--pin] [requests >= 100] [rounds dividing requests] [pipelines|all]\n");
    return 2;
  }
  // The reply-polling bound of proxy+reply (ioreq-filterd --reply-poll-us); tracing runs raise it so
  // a traced (slowed) QEMU still counts as fast enough to wait for.
  const char* bound = std::getenv("IOREQ_FILTER_BENCH_REPLY_POLL_US");
  const int replyPollUs = bound ? std::atoi(bound) : 20;
  auto wanted = [&](const std::string& name) {
    if (only.empty() || name == "baseline" || name == "no-filter") return true;
    return ("," + only + ",").find("," + name + ",") != std::string::npos;
  };
  double load[3] = {0, 0, 0};
  (void)getloadavg(load, 3);
  std::printf("ioreq-filter-xen-bench: %d synchronous PIO reads per pipeline in %d interleaved rounds, 1 vCPU, "
              "simulated Xen; %s; load average %.2f %.2f %.2f\n",
              n, rounds, g_pin ? "pinned: guest CPU 0, device models CPU 1" : "not pinned", load[0], load[1], load[2]);
  pinSelf(kDeviceModelCpu);  // every pipeline's own threads (and the baseline's child) start here
  std::vector<std::unique_ptr<Pipeline>> ps;
  ps.push_back(std::make_unique<Baseline>());
  ps.push_back(std::make_unique<NoFilter>());
  if (wanted("inline")) ps.push_back(std::make_unique<Inline>());
  if (wanted("proxy")) ps.push_back(std::make_unique<Proxy>(0, 0));
  if (wanted("proxy+poll")) ps.push_back(std::make_unique<Proxy>(50, 0));
  if (wanted("proxy+reply")) ps.push_back(std::make_unique<Proxy>(0, replyPollUs));
  pinSelf(kGuestCpu);  // this thread is every pipeline's guest vCPU
  std::vector<std::string> names;
  for (auto& p : ps) names.push_back(p->name());
  auto index = [&](const std::string& name) -> int {
    for (std::size_t i = 0; i < names.size(); ++i)
      if (names[i] == name) return int(i);
    return -1;
  };
  std::vector<std::vector<double>> ns(ps.size());
  std::vector<double> cpu(ps.size(), 0), daemon(ps.size(), 0), wakes(ps.size(), 0);
  // Per round, each pipeline's median: paired comparisons within a round cancel the load drift.
  std::vector<std::vector<double>> roundMedian(ps.size());
  for (auto& v : ns) v.reserve(std::size_t(n));
  for (int r = 0; r < rounds; ++r)
    for (std::size_t j = 0; j < ps.size(); ++j) {
      const std::size_t i = (j + std::size_t(r)) % ps.size();  // rotate who goes first
      const double c0 = ps[i]->cpuTotalNs(), d0 = ps[i]->daemonCpuNs(), w0 = ps[i]->daemonWakes();
      const std::size_t from = ns[i].size();
      ps[i]->sample(n / rounds, ns[i]);
      cpu[i] += ps[i]->cpuTotalNs() - c0;
      daemon[i] += ps[i]->daemonCpuNs() - d0;
      wakes[i] += ps[i]->daemonWakes() - w0;
      roundMedian[i].push_back(medianUs(std::vector<double>(ns[i].begin() + long(from), ns[i].end())));
    }
  const double childCpu0 = ps[0]->cpuTotalNs();
  ps[0]->finish();  // the child's CPU is only known once it has exited
  cpu[0] += ps[0]->cpuTotalNs() - childCpu0;
  for (auto& p : ps) p->finish();  // the daemons' counters are read once their threads are gone
  std::vector<Percentiles> pct;
  std::printf("%-11s %9s %9s %12s %22s  %s\n", "pipeline", "p50", "p99", "CPU/request", "daemon CPU, wake-ups", "");
  for (std::size_t i = 0; i < ps.size(); ++i) {
    pct.push_back(summarise(ns[i]));
    char d[48] = "";
    if (daemon[i] > 0) std::snprintf(d, sizeof d, "%.1f us %.2f wakes", daemon[i] / n / 1000, wakes[i] / n);
    std::printf("%-11s %6.1f us %6.1f us %9.1f us %22s  (%s)\n", ps[i]->name(), pct[i].p50, pct[i].p99,
                cpu[i] / n / 1000, d, ps[i]->note());
  }
  for (auto& p : ps)
    if (const std::string s = p->pollingSummary(n); !s.empty()) std::printf("%-11s %s\n", p->name(), s.c_str());
  std::printf("simulator lock found taken, per request:");
  for (std::size_t i = 1; i < ps.size(); ++i)
    std::printf("%s %s %.3f", i == 1 ? "" : ",", ps[i]->name(), double(ps[i]->lockContentions()) / n);
  std::printf("\n");
  ps.clear();
  for (const char* name : {"proxy", "proxy+poll", "proxy+reply"}) {
    const int i = index(name);
    if (i < 0) continue;
    std::printf("%s adds %.1f us at p50 over no-filter (baseline round trip %.1f us): %.2f round trips\n", name,
                pct[std::size_t(i)].p50 - pct[1].p50, pct[0].p50, (pct[std::size_t(i)].p50 - pct[1].p50) / pct[0].p50);
  }
  // Within each round: (pipeline - no-filter) / baseline, then the median over rounds.
  auto paired = [&](std::size_t i) {
    std::vector<double> x;
    for (int r = 0; r < rounds; ++r) x.push_back((roundMedian[i][std::size_t(r)] - roundMedian[1][std::size_t(r)]) / roundMedian[0][std::size_t(r)]);
    std::sort(x.begin(), x.end());
    return x[x.size() / 2];
  };
  std::printf("paired per round (median over %d rounds of the added p50 in baseline round trips):", rounds);
  for (std::size_t i = 2; i < names.size(); ++i) std::printf("%s %s %.2f", i == 2 ? "" : ",", names[i].c_str(), paired(i));
  std::printf("\n");
  if (!only.empty()) return 0;  // a selective run (tracing) skips the instrumented runs
  std::printf("inline relay work: %.0f ns per request (in-process, pending+notify wrappers' relay steps)\n",
              relayNsPerRequest(1000000));
  noFilterBreakdown(n);
  proxyBreakdown(n, 0);
  proxyBreakdown(n, replyPollUs);
  return 0;
}
