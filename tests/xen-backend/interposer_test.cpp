// libioreq-interposer.so's symbol wrappers, driven exactly as QEMU 7.2's xen-hvm.c drives libxen
// (xen_hvm_init_pc, cpu_get_ioreq, handle_buffered_iopage, cpu_handle_ioreq), against the
// simulated Xen: inline mode, and proxy mode with the whole daemon.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <filesystem>
#include <future>
#include <poll.h>
#include <sys/mman.h>

extern "C" {
#include <xendevicemodel.h>
#include <xenevtchn.h>
#include <xenforeignmemory.h>
#include <xen/hvm/hvm_op.h>
#include <xen/hvm/ioreq.h>
#include <xen/memory.h>
}

#include "ioreq_filter/daemon/daemon.h"
#include "ioreq_filter/interposer/preload.h"
#include "ioreq_filter/sim/sim_hypervisor.h"
#include "test_support.h"

namespace iof {
namespace {

using namespace std::chrono_literals;
using sim::GuestStatus;
using test::mmio;
using test::pio;

std::uint64_t deviceValue(std::uint64_t addr) { return 0x30 + (addr & 0xf); }

// The QEMU side, in QEMU's own terms (ioreq_t, buffered_iopage_t, the libxen C API).
struct FakeQemu {
  xendevicemodel_handle* dmod = nullptr;
  xenforeignmemory_handle* fmem = nullptr;
  xenevtchn_handle* xce = nullptr;
  xenforeignmemory_resource_handle* fres = nullptr;
  ioservid_t id = 0;
  shared_iopage_t* shared = nullptr;
  buffered_iopage_t* buffered = nullptr;
  evtchn_port_t buf_remote = 0, buf_local = 0;
  std::vector<evtchn_port_t> local;
  std::mutex mu;
  std::vector<ioreq_t> seen;  // every access handled, in order (buffered ones included)
  std::atomic<bool> running{false};
  std::thread thread;

  // xen_hvm_init_pc up to the enable; `ranges` stands for QEMU's memory listeners.
  int init(xen::DomId domid, unsigned vcpus, const std::function<void(ioservid_t)>& ranges) {
    xce = xenevtchn_open(nullptr, 0);
    dmod = xendevicemodel_open(nullptr, 0);
    fmem = xenforeignmemory_open(nullptr, 0);
    if (xendevicemodel_create_ioreq_server(dmod, domid, 2 /* HVM_IOREQSRV_BUFIOREQ_ATOMIC */, &id) != 0) return -1;
    void* addr = nullptr;
    fres = xenforeignmemory_map_resource(fmem, domid, XENMEM_resource_ioreq_server, id, 0, 2, &addr,
                                         PROT_READ | PROT_WRITE, 0);
    if (!fres) return -2;
    buffered = static_cast<buffered_iopage_t*>(addr);
    shared = reinterpret_cast<shared_iopage_t*>(static_cast<char*>(addr) + 4096);
    if (xendevicemodel_get_ioreq_server_info(dmod, domid, id, nullptr, nullptr, &buf_remote) != 0) return -3;
    ranges(id);
    if (xendevicemodel_set_ioreq_server_state(dmod, domid, id, 1) != 0) return -4;
    for (unsigned i = 0; i < vcpus; ++i) {
      const int rc = xenevtchn_bind_interdomain(xce, domid, shared->vcpu_ioreq[i].vp_eport);
      if (rc == -1) return -5;
      local.push_back(evtchn_port_t(rc));
    }
    const int rc = xenevtchn_bind_interdomain(xce, domid, buf_remote);
    if (rc == -1) return -6;
    buf_local = evtchn_port_t(rc);
    // The VM starts running: xen_hvm_change_state_handler enables the server once more.
    if (xendevicemodel_set_ioreq_server_state(dmod, domid, id, 1) != 0) return -7;
    return 0;
  }

  void handle(ioreq_t& req) {
    if (req.dir == IOREQ_READ && !req.data_is_ptr) req.data = deviceValue(req.addr);
    std::lock_guard lk(mu);
    seen.push_back(req);
  }
  void drainBuffered() {
    for (;;) {
      const uint32_t rd = __atomic_load_n(&buffered->read_pointer, __ATOMIC_ACQUIRE);
      const uint32_t wr = __atomic_load_n(&buffered->write_pointer, __ATOMIC_ACQUIRE);
      if (rd == wr) return;
      const buf_ioreq_t b = buffered->buf_ioreq[rd % IOREQ_BUFFER_SLOT_NUM];
      ioreq_t req{};
      req.size = 1u << b.size;
      req.addr = b.addr;
      req.data = b.data;
      req.type = b.type;
      req.count = 1;
      req.dir = IOREQ_WRITE;
      const int qw = req.size == 8;
      if (qw) req.data |= uint64_t(buffered->buf_ioreq[(rd + 1) % IOREQ_BUFFER_SLOT_NUM].data) << 32;
      handle(req);
      __atomic_fetch_add(&buffered->read_pointer, qw + 1, __ATOMIC_ACQ_REL);
    }
  }
  // cpu_handle_ioreq
  void handleEvents() {
    const int port = xenevtchn_pending(xce);
    if (port == -1) return;
    if (evtchn_port_t(port) == buf_local) {
      drainBuffered();  // QEMU does this from its buffered_io_timer, then unmasks
      xenevtchn_unmask(xce, port);
      return;
    }
    unsigned i = 0;
    while (i < local.size() && local[i] != evtchn_port_t(port)) ++i;
    ASSERT_LT(i, local.size()) << "pending() named a port QEMU never bound";
    xenevtchn_unmask(xce, port);
    ioreq_t* req = &shared->vcpu_ioreq[i];
    drainBuffered();
    if (__atomic_load_n(reinterpret_cast<uint8_t*>(req) + 30, __ATOMIC_ACQUIRE) % 16 != STATE_IOREQ_READY) return;
    req->state = STATE_IOREQ_INPROCESS;
    ioreq_t copy = *req;
    handle(copy);
    req->data = copy.data;
    __atomic_thread_fence(__ATOMIC_RELEASE);
    req->state = STATE_IORESP_READY;
    xenevtchn_notify(xce, port);
  }
  void start() {
    running = true;
    thread = std::thread([this] {
      pollfd p{xenevtchn_fd(xce), POLLIN, 0};
      while (running) {
        if (poll(&p, 1, 10) > 0) handleEvents();
        drainBuffered();
      }
    });
  }
  void stop() {
    running = false;
    if (thread.joinable()) thread.join();
  }
  ~FakeQemu() {
    stop();
    if (xce) xenevtchn_close(xce);
    if (fres) xenforeignmemory_unmap_resource(fmem, fres);
  }
  std::size_t seenCount() {
    std::lock_guard lk(mu);
    return seen.size();
  }
};

struct Filters : RequestFilter {
  test::RefusePortFilter port{0x3f5};
  test::ValueFilter value{0x3f2, 0x66};
  test::RefuseMmioFilter vga{0xb8000, 0x100};
  Verdict onRequest(const IoRequest& r) noexcept override {
    for (RequestFilter* f : std::initializer_list<RequestFilter*>{&port, &value, &vga}) {
      const Verdict v = f->onRequest(r);
      if (!v.forwarded()) return v;
    }
    return Verdict{};
  }
};

struct InlineFixture : ::testing::Test {
  test::LogCapture logs;
  std::vector<std::string> logLines(const std::string& needle) { return logs.lines(needle); }
  sim::SimHypervisor hv;
  xen::DomId dom = hv.createDomain({.vcpus = 2});
  Filters filter;
  FakeQemu qemu;

  void SetUp() override {
    interposer::InterposerConfig c;
    c.mode = interposer::Deployment::Inline;
    c.filter = &filter;
    c.log = logs.sink();
    interposer::useHypervisorForTesting(&hv, c);
    ASSERT_EQ(qemu.init(dom, 2, [&](ioservid_t id) {
      ASSERT_TRUE(hv.mapIoRange(dom, id, xen::RangeKind::Pio, 0x3f0, 0x3f7));
      ASSERT_TRUE(hv.mapIoRange(dom, id, xen::RangeKind::Mmio, 0xa0000, 0xbffff));
    }), 0);
    qemu.start();
  }
};

TEST_F(InlineFixture, QemuSeesOnlyShadowPagesAndVettedRequests) {
  EXPECT_EQ(hv.guestIo(dom, 0, pio(0x3f4, Dir::Read)).data, 0x34u);
  const auto refused = hv.guestIo(dom, 1, pio(0x3f5, Dir::Read));
  EXPECT_EQ(refused.status, GuestStatus::Completed);
  EXPECT_EQ(refused.data, 0xffu);
  EXPECT_EQ(hv.guestIo(dom, 0, pio(0x3f5, Dir::Write, 1, 0x8e)).status, GuestStatus::Completed);
  ASSERT_EQ(qemu.seenCount(), 1u);
  EXPECT_EQ(qemu.seen[0].addr, 0x3f4u);
  auto real = hv.mapIoreqPages(dom, qemu.id).value();
  EXPECT_NE(static_cast<void*>(qemu.shared), xen::pagesOf(real).sync) << "QEMU got the real page";
  const auto* c = interposer::current()->counters();
  ASSERT_NE(c, nullptr);
  EXPECT_EQ(c->refused.load(), 2u);
  EXPECT_EQ(c->forwarded.load(), 1u);
  EXPECT_EQ(hv.slotState(dom, qemu.id, 0), xen::SlotState::None);
  EXPECT_EQ(hv.slotState(dom, qemu.id, 1), xen::SlotState::None);
}

TEST_F(InlineFixture, VcpusReissuingAtOnceAreAllServed) {
  std::vector<std::future<int>> vcpus;
  for (unsigned v = 0; v < 2; ++v)
    vcpus.push_back(std::async(std::launch::async, [&, v] {
      int good = 0;
      for (int i = 0; i < 300; ++i) {
        const std::uint64_t port = (i % 3 == 0) ? 0x3f5 : 0x3f0 + (i % 5);
        const auto r = hv.guestIo(dom, v, pio(port, Dir::Read), 3000ms);
        good += r.status == GuestStatus::Completed && r.data == (port == 0x3f5 ? 0xffu : deviceValue(port));
      }
      return good;
    }));
  for (auto& f : vcpus) EXPECT_EQ(f.get(), 300);
  EXPECT_EQ(hv.ignoredFieldChanges(dom), 0u);
  EXPECT_FALSE(hv.crashed(dom));
}

TEST_F(InlineFixture, BufferedWritesArePumpedVettedAndInOrder) {
  for (std::uint64_t a : {0xa0000ull, 0xb8004ull, 0xa0001ull})
    ASSERT_EQ(hv.guestIo(dom, 0, mmio(a, Dir::Write, 1, 7)).status, GuestStatus::Buffered);
  EXPECT_EQ(hv.guestIo(dom, 0, pio(0x3f4, Dir::Read)).status, GuestStatus::Completed);
  std::lock_guard lk(qemu.mu);
  ASSERT_EQ(qemu.seen.size(), 3u);
  EXPECT_EQ(qemu.seen[0].addr, 0xa0000u);
  EXPECT_EQ(qemu.seen[1].addr, 0xa0001u);
  EXPECT_EQ(qemu.seen[2].addr, 0x3f4u);
}

TEST_F(InlineFixture, RepOutsWithAValueConstraintIsReplayedRepByRep) {
  const std::uint8_t bytes[4] = {1, 2, 0x66, 3};
  hv.guestWrite(dom, 0x6000, bytes, 4);
  IoRequest outs = pio(0x3f2, Dir::Write);
  outs.count = 4;
  outs.data_is_ptr = true;
  outs.data = 0x6000;
  EXPECT_EQ(hv.guestIo(dom, 1, outs, 3000ms).status, GuestStatus::Completed);
  std::lock_guard lk(qemu.mu);
  ASSERT_EQ(qemu.seen.size(), 2u);
  EXPECT_EQ(qemu.seen[0].data, 1u);
  EXPECT_EQ(qemu.seen[1].data, 2u);
  EXPECT_EQ(qemu.seen[1].data_is_ptr, 0);
}

// Inline mode reports refusals per request only at powers of two (a guest cannot flood QEMU's log), so
// exact totals go to the log at most once a second when they changed.
TEST_F(InlineFixture, QemusLogGetsExactCountersOnceASecond) {
  for (int i = 0; i < 3; ++i) EXPECT_EQ(hv.guestIo(dom, 0, pio(0x3f5, Dir::Read)).data, 0xffu);
  EXPECT_EQ(hv.guestIo(dom, 0, pio(0x3f4, Dir::Read)).data, 0x34u);
  for (int i = 0; i < 60 && logLines("counters: ").empty(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  const auto lines = logLines("counters: ");
  ASSERT_EQ(lines.size(), 1u) << "one line for one change";
  EXPECT_NE(lines[0].find("requests 4 forwarded 1 refused 3 "), std::string::npos) << lines[0];
}

// Inline mode has no daemon: QEMU's process watches for a second ioreq server itself.
TEST_F(InlineFixture, ASecondIoreqServerCrashesTheDomain) {
  EXPECT_EQ(hv.guestIo(dom, 0, pio(0x3f4, Dir::Read)).data, 0x34u);
  std::this_thread::sleep_for(std::chrono::milliseconds(250));
  EXPECT_FALSE(hv.shutdownReason(dom)) << "QEMU's own server alone must not trip the watch";
  auto rogue = hv.createServer(dom, xen::BufioreqMode::Atomic);
  ASSERT_TRUE(rogue) << rogue.error().message();
  for (int i = 0; i < 50 && !hv.shutdownReason(dom); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_EQ(hv.shutdownReason(dom), std::optional<unsigned>(xen::kShutdownCrash));
}

TEST(InterposerProxy, FailsClosedWhenNoDaemonAnswers) {
  sim::SimHypervisor hv;
  const auto dom = hv.createDomain({.vcpus = 1});
  const std::string run_dir = test::tempPath("iof-nodaemon");
  std::filesystem::create_directories(run_dir);
  interposer::InterposerConfig c;
  c.mode = interposer::Deployment::Proxy;
  c.run_dir = run_dir;
  interposer::useHypervisorForTesting(&hv, c);
  FakeQemu qemu;
  EXPECT_EQ(qemu.init(dom, 1, [](ioservid_t) {}), -4) << "enabling must fail without ioreq-filterd";
  std::filesystem::remove_all(run_dir);
}

TEST(InterposerProxy, QemuServesTheDaemonsShadowAndSurvivesADaemonRestart) {
  sim::SimHypervisor hv;
  const auto dom = hv.createDomain({.vcpus = 2});
  const std::string run_dir = test::tempPath("iof-proxy");
  std::filesystem::create_directories(run_dir);
  daemon::DaemonOptions o;
  o.domid = dom;
  o.run_dir = run_dir;
  o.log = [](const std::string&) {};
  o.filter_factory = [](const daemon::DaemonOptions&, bool, std::vector<std::string>*) -> Result<std::unique_ptr<RequestFilter>> {
    return std::unique_ptr<RequestFilter>(std::make_unique<test::RefusePortFilter>(0x3f5));
  };
  auto d = std::make_unique<daemon::Daemon>(hv, o);
  ASSERT_TRUE(d->start());
  std::thread loop([&] { d->run(); });

  interposer::InterposerConfig c;
  c.mode = interposer::Deployment::Proxy;
  c.run_dir = run_dir;
  interposer::useHypervisorForTesting(&hv, c);
  FakeQemu qemu;
  ASSERT_EQ(qemu.init(dom, 2, [&](ioservid_t id) { ASSERT_TRUE(hv.mapIoRange(dom, id, xen::RangeKind::Pio, 0x3f0, 0x3f7)); }), 0);
  qemu.start();
  EXPECT_EQ(hv.guestIo(dom, 0, pio(0x3f1, Dir::Read)).data, 0x31u);
  EXPECT_EQ(hv.guestIo(dom, 1, pio(0x3f5, Dir::Read)).data, 0xffu);

  d->stop();  // the daemon goes away…
  loop.join();
  d.reset();
  auto blocked = std::async(std::launch::async, [&] { return hv.guestIo(dom, 1, pio(0x3f3, Dir::Read), 5000ms); });
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(blocked.wait_for(0ms), std::future_status::timeout) << "ran unfiltered without the daemon";
  d = std::make_unique<daemon::Daemon>(hv, o);  // …and comes back: it re-attaches from the journal
  ASSERT_TRUE(d->start());
  std::thread loop2([&] { d->run(); });
  const auto r = blocked.get();
  EXPECT_EQ(r.status, GuestStatus::Completed);
  EXPECT_EQ(r.data, 0x33u);
  EXPECT_EQ(hv.guestIo(dom, 0, pio(0x3f5, Dir::Read)).data, 0xffu);
  EXPECT_EQ(qemu.seenCount(), 2u);
  EXPECT_FALSE(hv.crashed(dom));
  qemu.stop();
  d->stop();
  loop2.join();
  d.reset();
  std::filesystem::remove_all(run_dir);
}

}  // namespace
}  // namespace iof
