// The proxy (daemon side) between the simulated Xen and a QEMU-7.2-like device model on the shadow
// channel: every test asserts exact slot states and responses.
#include <gtest/gtest.h>

#include <future>
#include <poll.h>
#include <thread>

#include "ioreq_filter/sim/qemu_model.h"
#include "ioreq_filter/sim/sim_hypervisor.h"
#include "ioreq_filter/xen/proxy.h"
#include "test_support.h"

namespace iof {
namespace {

using namespace std::chrono_literals;
using sim::GuestStatus;
using sim::QemuModel;
using sim::SimHypervisor;
using test::mmio;
using test::pio;
using xen::SlotState;

std::uint64_t deviceValue(const IoRequest& r) { return 0xa5a5a5a5a5a5a5a5ull ^ r.addr; }

// A guest with QEMU's server (id 0: fdc ports, PCI host, VGA window, one PCI device) behind the proxy.
struct ProxiedGuest {
  SimHypervisor hv;
  unsigned vcpus;
  xen::DomId dom;
  xen::ServerId id = 0;
  std::string shadow_path = test::tempPath("iof-shadow");
  std::unique_ptr<xen::ProxyEndpoint> proxy;
  std::unique_ptr<QemuModel> qemu;
  std::unique_ptr<test::ProxyThread> loop;
  std::vector<std::string> log;

  std::chrono::nanoseconds reply_poll_max{0};

  explicit ProxiedGuest(RequestFilter* filter, unsigned n = 2, bool start = true,
                        std::chrono::nanoseconds replyPollMax = {}, QemuModel::Device device = deviceValue)
      : vcpus(n), dom(hv.createDomain({.vcpus = n})), reply_poll_max(replyPollMax) {
    id = hv.createServer(dom, xen::BufioreqMode::Atomic).value();
    (void)hv.mapIoreqPages(dom, id);  // QEMU maps before enabling: that allocates the pages
    EXPECT_TRUE(hv.mapIoRange(dom, id, xen::RangeKind::Pio, 0x3f0, 0x3f7));
    EXPECT_TRUE(hv.mapIoRange(dom, id, xen::RangeKind::Pio, 0xcf8, 0xcff));
    EXPECT_TRUE(hv.mapIoRange(dom, id, xen::RangeKind::Mmio, 0xa0000, 0xbffff));
    EXPECT_TRUE(hv.mapIoRange(dom, id, xen::RangeKind::Mmio, 0xfebf0000, 0xfebf0fff));
    EXPECT_TRUE(hv.mapPciDev(dom, id, Sbdf{0, 0, 4, 0}));
    EXPECT_TRUE(hv.setServerState(dom, id, true));
    startProxy(filter);
    qemu = QemuModel::shadow(hv, dom, proxy->shadow().fd(), vcpus, std::move(device)).value();
    if (start) {
      qemu->start();
      loop = std::make_unique<test::ProxyThread>(*proxy);
    }
  }
  ~ProxiedGuest() {
    loop.reset();
    qemu.reset();
    proxy.reset();
    std::remove(shadow_path.c_str());
  }
  void startProxy(RequestFilter* filter) {
    xen::ProxyOptions o;
    o.domid = dom;
    o.server = id;
    o.vcpus = vcpus;
    o.shadow_path = shadow_path;
    o.filter = filter;
    o.reply_poll_max = reply_poll_max;
    o.log = [this](std::string_view l) { log.emplace_back(l); };
    auto p = xen::ProxyEndpoint::open(hv, o);
    ASSERT_TRUE(p) << p.error().message();
    proxy = std::move(*p);
  }
  // What a SIGKILL does to the daemon: its handles close and its mappings go; the shadow file stays.
  void killProxy() {
    loop.reset();
    proxy.reset();
  }
  SlotState realState(unsigned v) { return hv.slotState(dom, id, v); }
  SlotState shadowState(unsigned v) { return xen::loadState(proxy->shadow().pages().sync->vcpu[v]); }
};

TEST(Proxy, ForwardsEveryRequestOfFourVcpusAndLeavesAllSlotsIdle) {
  test::RefusePortFilter filter(0x60);  // refuses nothing these vCPUs touch
  ProxiedGuest g(&filter, 4);
  constexpr int kPerVcpu = 200;
  std::vector<std::future<int>> vcpus;
  for (unsigned v = 0; v < 4; ++v)
    vcpus.push_back(std::async(std::launch::async, [&, v] {
      int ok = 0;
      for (int i = 0; i < kPerVcpu; ++i) {
        const std::uint64_t port = 0x3f0 + ((v + i) & 7);
        if (i % 2) {
          ok += g.hv.guestIo(g.dom, v, pio(port, Dir::Write, 1, i & 0xff)).status == GuestStatus::Completed;
        } else {
          const auto r = g.hv.guestIo(g.dom, v, pio(port, Dir::Read, 1));
          ok += r.status == GuestStatus::Completed && r.data == (deviceValue(pio(port, Dir::Read)) & 0xff);
        }
      }
      return ok;
    }));
  for (auto& f : vcpus) EXPECT_EQ(f.get(), kPerVcpu);
  EXPECT_EQ(g.qemu->seenCount(), 4u * kPerVcpu);
  EXPECT_EQ(g.proxy->relay().counters().forwarded.load(), 4u * kPerVcpu);
  EXPECT_EQ(g.proxy->relay().counters().refused.load(), 0u);
  for (unsigned v = 0; v < 4; ++v) {
    EXPECT_EQ(g.realState(v), SlotState::None);
    EXPECT_EQ(g.shadowState(v), SlotState::None);
  }
  EXPECT_EQ(g.hv.ignoredFieldChanges(g.dom), 0u) << "the proxy changed a field other than data/state";
  EXPECT_FALSE(g.hv.crashed(g.dom));
}

// Reply polling takes QEMU's answer from the shadow slot while QEMU's notification is still on its
// way; the notification then finds nothing and every request is still answered exactly once.
TEST(Proxy, ReplyPollingAnswersEveryRequestOfFourVcpusExactlyOnce) {
  test::ValueFilter filter(0x3f5, 0x66);  // makes rep outs on 0x3f5 split, one answer per rep
  ProxiedGuest g(&filter, 4, true, 50us);
  constexpr int kPerVcpu = 200;
  std::vector<std::future<int>> vcpus;
  for (unsigned v = 0; v < 4; ++v)
    vcpus.push_back(std::async(std::launch::async, [&, v] {
      int ok = 0;
      for (int i = 0; i < kPerVcpu; ++i) {
        const std::uint64_t port = 0x3f0 + ((v + i) & 7);
        const auto r = g.hv.guestIo(g.dom, v, pio(port, Dir::Read, 1));
        ok += r.status == GuestStatus::Completed && r.data == (deviceValue(pio(port, Dir::Read)) & 0xff);
      }
      return ok;
    }));
  for (auto& f : vcpus) EXPECT_EQ(f.get(), kPerVcpu);
  const std::uint8_t reps[3] = {1, 2, 3};
  g.hv.guestWrite(g.dom, 0x7000, reps, 3);
  IoRequest outs = pio(0x3f5, Dir::Write, 1);
  outs.count = 3;
  outs.data_is_ptr = true;
  outs.data = 0x7000;
  ASSERT_EQ(g.hv.guestIo(g.dom, 0, outs).status, GuestStatus::Completed);
  EXPECT_EQ(g.qemu->seenCount(), 4u * kPerVcpu + 3);
  EXPECT_EQ(g.proxy->relay().counters().split_requests.load(), 1u);
  EXPECT_EQ(g.proxy->relay().counters().split_reps.load(), 3u);
  const auto& rp = g.proxy->replyPolling();
  EXPECT_GT(rp.spent_ns, 0u) << "polling CPU is accounted";
  EXPECT_GT(rp.hits + rp.misses, 0u);
  for (unsigned v = 0; v < 4; ++v) {
    EXPECT_EQ(g.realState(v), SlotState::None);
    EXPECT_EQ(g.shadowState(v), SlotState::None);
  }
  EXPECT_EQ(g.hv.ignoredFieldChanges(g.dom), 0u);
  EXPECT_FALSE(g.hv.crashed(g.dom));
}

// A QEMU slower than the bound (a device that takes milliseconds) is not waited for by spinning.
TEST(Proxy, ReplyPollingTurnsItselfOffForAQemuSlowerThanItsBound) {
  test::RefusePortFilter filter(0x60);
  ProxiedGuest g(&filter, 1, true, 50us, [](const IoRequest& r) {
    std::this_thread::sleep_for(2ms);
    return deviceValue(r);
  });
  EXPECT_GT(g.proxy->replyPollBudget().count(), 0) << "optimistic before anything was measured";
  for (int i = 0; i < 20; ++i) ASSERT_EQ(g.hv.guestIo(g.dom, 0, pio(0x3f4, Dir::Read, 1)).status, GuestStatus::Completed);
  g.loop.reset();  // the budget is read off the daemon's thread
  EXPECT_EQ(g.proxy->replyPollBudget().count(), 0);
  EXPECT_EQ(g.qemu->seenCount(), 20u);
}

// The daemon's own loop, driven from the test thread until `done` (at most 5 s).
template <class Done>
bool serveUntil(xen::ProxyEndpoint& p, Done done) {
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    pollfd pfd{p.fd(), POLLIN, 0};
    if (poll(&pfd, 1, 10) > 0) p.handleEvents();
  }
  return true;
}
template <class T>
bool ready(std::future<T>& f) {
  return f.wait_for(0ms) == std::future_status::ready;
}

// An answer taken from the slot leaves the shadow port masked: QEMU's notification only latches
// (Xen: pending bit of a masked port, no upcall) and the daemon's handle stays quiet.
TEST(Proxy, ReplyPollingHitLeavesQemusNotificationLatchedSoItWakesNobody) {
  test::RefusePortFilter filter(0x60);
  ProxiedGuest g(&filter, 1, /*start=*/false, 1s);  // a bound no QEMU thread misses
  g.qemu->start();
  for (int i = 0; i < 4; ++i) {
    const auto hits = g.proxy->replyPolling().hits;
    auto guest = std::async(std::launch::async, [&] { return g.hv.guestIo(g.dom, 0, pio(0x3f4, Dir::Read, 1)); });
    ASSERT_TRUE(serveUntil(*g.proxy, [&] { return ready(guest); }));
    const auto r = guest.get();
    ASSERT_EQ(r.status, GuestStatus::Completed);
    EXPECT_EQ(r.data, deviceValue(pio(0x3f4, Dir::Read)) & 0xff);
    // The first request may meet the events of the daemon's own bring-up (a bound port starts
    // pending) and have its answer handled as an event; from then on the port stays masked.
    if (i == 0) continue;
    EXPECT_EQ(g.proxy->replyPolling().hits, hits + 1) << "request " << i;
    std::this_thread::sleep_for(20ms);  // QEMU's notify has long been sent
    pollfd pfd{g.proxy->fd(), POLLIN, 0};
    EXPECT_EQ(poll(&pfd, 1, 0), 0) << "QEMU's notification woke the daemon after request " << i;
  }
  EXPECT_EQ(g.proxy->replyPolling().misses, 0u);
  EXPECT_EQ(g.shadowState(0), SlotState::None);
}

// A poll that gives up unmasks the shadow port: the notification latched by an earlier hit is
// delivered at once (and found stale), and QEMU's late answer still wakes the daemon.
TEST(Proxy, ReplyPollingThatGivesUpLetsTheLateAnswerWakeTheDaemon) {
  test::RefusePortFilter filter(0x60);
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  std::atomic<int> calls{0};
  ProxiedGuest g(&filter, 1, /*start=*/false, 20ms, [&](const IoRequest& r) {
    if (calls.fetch_add(1) == 2) released.wait();  // the third request's device hangs
    return deviceValue(r);
  });
  g.qemu->start();
  for (int i = 0; i < 2; ++i) {
    auto guest = std::async(std::launch::async, [&] { return g.hv.guestIo(g.dom, 0, pio(0x3f4, Dir::Read, 1)); });
    ASSERT_TRUE(serveUntil(*g.proxy, [&] { return ready(guest); }));
    ASSERT_EQ(guest.get().status, GuestStatus::Completed);
  }
  auto slow = std::async(std::launch::async, [&] { return g.hv.guestIo(g.dom, 0, pio(0x3f2, Dir::Read, 1)); });
  const auto misses = g.proxy->replyPolling().misses;
  ASSERT_TRUE(serveUntil(*g.proxy, [&] { return g.proxy->replyPolling().misses > misses; }));
  EXPECT_FALSE(ready(slow));
  release.set_value();
  ASSERT_TRUE(serveUntil(*g.proxy, [&] { return ready(slow); }));
  const auto r = slow.get();
  ASSERT_EQ(r.status, GuestStatus::Completed);
  EXPECT_EQ(r.data, deviceValue(pio(0x3f2, Dir::Read)) & 0xff);
  EXPECT_EQ(g.qemu->seenCount(), 3u);
  EXPECT_EQ(g.proxy->relay().counters().forwarded.load(), 3u);
  EXPECT_GT(g.proxy->replyPolling().spent_ns, 0u);
  EXPECT_EQ(g.shadowState(0), SlotState::None);
  EXPECT_EQ(g.realState(0), SlotState::None);
}

TEST(Proxy, RefusedReadCompletesWithAllOnesAndRefusedWriteIsDropped) {
  test::RefusePortFilter filter(0x3f5);
  ProxiedGuest g(&filter);
  auto r = g.hv.guestIo(g.dom, 0, pio(0x3f5, Dir::Read, 1));
  EXPECT_EQ(r.status, GuestStatus::Completed);
  EXPECT_EQ(r.data, 0xffu);
  r = g.hv.guestIo(g.dom, 1, pio(0x3f4, Dir::Read, 2));  // overlaps 0x3f5
  EXPECT_EQ(r.status, GuestStatus::Completed);
  EXPECT_EQ(r.data, 0xffffu);
  r = g.hv.guestIo(g.dom, 0, pio(0x3f5, Dir::Write, 1, 0x8e));
  EXPECT_EQ(r.status, GuestStatus::Completed);
  EXPECT_EQ(g.qemu->seenCount(), 0u) << "a refused request reached the device";
  r = g.hv.guestIo(g.dom, 0, pio(0x3f2, Dir::Write, 1, 0x1c));  // accepted one still goes through
  EXPECT_EQ(r.status, GuestStatus::Completed);
  EXPECT_EQ(g.qemu->seenCount(), 1u);
  EXPECT_EQ(g.proxy->relay().counters().refused.load(), 3u);
  for (unsigned v = 0; v < 2; ++v) {
    EXPECT_EQ(g.realState(v), SlotState::None);
    EXPECT_EQ(g.shadowState(v), SlotState::None);
  }
}

TEST(Proxy, CrashEscalationShutsTheDomainDownAfterCompleting) {
  test::RefusePortFilter filter(0x3f5, Escalation::Crash);
  ProxiedGuest g(&filter, 1);
  const auto r = g.hv.guestIo(g.dom, 0, pio(0x3f5, Dir::Write, 1, 0x8e));
  EXPECT_EQ(g.hv.shutdownReason(g.dom), std::optional<unsigned>(3u));  // SHUTDOWN_crash
  EXPECT_EQ(g.proxy->relay().counters().crashes_requested.load(), 1u);
  (void)r;
}

TEST(Proxy, PciConfigReachesQemuDecodedBySbdf) {
  test::RefusePortFilter filter(0x60);
  ProxiedGuest g(&filter, 1);
  ASSERT_EQ(g.hv.guestIo(g.dom, 0, pio(0xcf8, Dir::Write, 4, 0x80002000)).status, GuestStatus::Completed);
  const auto r = g.hv.guestIo(g.dom, 0, pio(0xcfc, Dir::Read, 4));
  ASSERT_EQ(r.status, GuestStatus::Completed);
  const auto seen = g.qemu->seen();
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_EQ(seen[0].request.type, IoType::Pio);  // the CF8 write itself
  EXPECT_EQ(seen[1].request.type, IoType::PciConfig);
  EXPECT_EQ(seen[1].request.addr, pciConfigAddress(Sbdf{0, 0, 4, 0}, 0));
  EXPECT_EQ(r.data, deviceValue(seen[1].request) & 0xffffffffu);
}

TEST(Proxy, RepInsIsForwardedWholeInOneRoundTrip) {
  test::RefusePortFilter filter(0x60);
  ProxiedGuest g(&filter, 1);
  IoRequest ins = pio(0x3f4, Dir::Read, 2);
  ins.count = 256;
  ins.data_is_ptr = true;
  ins.data = 0x8000;
  ASSERT_EQ(g.hv.guestIo(g.dom, 0, ins).status, GuestStatus::Completed);
  EXPECT_EQ(g.qemu->seenCount(), 1u);
  EXPECT_EQ(g.proxy->relay().counters().forwarded.load(), 1u);
  std::uint16_t words[256];
  g.hv.guestRead(g.dom, 0x8000, words, sizeof words);
  EXPECT_EQ(words[0], std::uint16_t(deviceValue(pio(0x3f4, Dir::Read))));
  EXPECT_EQ(words[255], words[0]);
}

TEST(Proxy, RefusedRepInsFillsTheGuestBufferWithAllOnes) {
  test::RefusePortFilter filter(0x3f4);
  ProxiedGuest g(&filter, 1);
  IoRequest ins = pio(0x3f4, Dir::Read, 2);
  ins.count = 4;
  ins.data_is_ptr = true;
  ins.data = 0x9000;
  ASSERT_EQ(g.hv.guestIo(g.dom, 0, ins).status, GuestStatus::Completed);
  std::uint16_t words[5] = {};
  g.hv.guestRead(g.dom, 0x9000, words, sizeof words);
  EXPECT_EQ(words[0], 0xffff);
  EXPECT_EQ(words[3], 0xffff);
  EXPECT_EQ(words[4], 0) << "wrote past the request";
  EXPECT_EQ(g.qemu->seenCount(), 0u);
}

TEST(Proxy, RepOutsMeetingAValueConstraintIsSplitOnDataTheProxyReadItself) {
  test::ValueFilter filter(0x3f5, 0x66);
  ProxiedGuest g(&filter, 1);
  const std::uint8_t good[3] = {1, 2, 3};
  g.hv.guestWrite(g.dom, 0x7000, good, 3);
  IoRequest outs = pio(0x3f5, Dir::Write, 1);
  outs.count = 3;
  outs.data_is_ptr = true;
  outs.data = 0x7000;
  ASSERT_EQ(g.hv.guestIo(g.dom, 0, outs).status, GuestStatus::Completed);
  auto seen = g.qemu->seen();
  ASSERT_EQ(seen.size(), 3u);
  for (unsigned i = 0; i < 3; ++i) {
    EXPECT_FALSE(seen[i].request.data_is_ptr) << "QEMU would re-read guest memory (TOCTOU)";
    EXPECT_EQ(seen[i].request.data, good[i]);
  }
  const std::uint8_t bad[3] = {4, 0x66, 5};
  g.hv.guestWrite(g.dom, 0x7000, bad, 3);
  ASSERT_EQ(g.hv.guestIo(g.dom, 0, outs).status, GuestStatus::Completed);
  seen = g.qemu->seen();
  ASSERT_EQ(seen.size(), 4u) << "reps after the refused one must not reach the device";
  EXPECT_EQ(seen[3].request.data, 4u);
  EXPECT_EQ(g.proxy->relay().counters().split_reps.load(), 4u);
  EXPECT_EQ(g.realState(0), SlotState::None);
  EXPECT_EQ(g.shadowState(0), SlotState::None);
}

TEST(Proxy, BufferedWritesAreVettedAndReachQemuInOrderBeforeTheNextSyncRequest) {
  test::RefuseMmioFilter filter(0xb8000, 0x100);
  ProxiedGuest g(&filter, 1, /*start=*/false);
  for (std::uint64_t a : {0xa0000ull, 0xb8010ull, 0xa0001ull, 0xa0002ull})
    ASSERT_EQ(g.hv.guestIo(g.dom, 0, mmio(a, Dir::Write, 1, a & 0xff)).status, GuestStatus::Buffered);
  auto guest = std::async(std::launch::async, [&] { return g.hv.guestIo(g.dom, 0, pio(0x3f4, Dir::Read), 3000ms); });
  test::ProxyThread loop(*g.proxy);
  while (g.shadowState(0) != SlotState::Ready) std::this_thread::sleep_for(1ms);
  g.qemu->handleEvents();
  EXPECT_EQ(guest.get().status, GuestStatus::Completed);
  const auto seen = g.qemu->seen();
  ASSERT_EQ(seen.size(), 4u);
  EXPECT_EQ(seen[0].request.addr, 0xa0000u);
  EXPECT_EQ(seen[1].request.addr, 0xa0001u);
  EXPECT_EQ(seen[2].request.addr, 0xa0002u);
  EXPECT_TRUE(seen[2].buffered);
  EXPECT_EQ(seen[3].request.addr, 0x3f4u);
  EXPECT_EQ(g.proxy->relay().counters().buffered_refused.load(), 1u);
}

TEST(Proxy, InvalidateBroadcastIsForwardedWithoutAsking) {
  test::RefusePortFilter filter(0x60);
  ProxiedGuest g(&filter, 1);
  IoRequest inv;
  inv.type = IoType::Invalidate;
  inv.size = 4;
  inv.data = ~0ull;
  ASSERT_EQ(g.hv.guestIo(g.dom, 0, inv).status, GuestStatus::Completed);
  EXPECT_EQ(filter.seen.load(), 0);
  EXPECT_EQ(g.proxy->relay().counters().broadcasts.load(), 1u);
  ASSERT_EQ(g.qemu->seenCount(), 1u);
  EXPECT_EQ(g.qemu->seen()[0].request.type, IoType::Invalidate);
}

TEST(Proxy, GuestStaysBlockedWhileTheDaemonIsDownAndResumesOnRestart) {
  test::RefusePortFilter filter(0x3f5);
  ProxiedGuest g(&filter, 2);
  g.killProxy();
  auto r = g.hv.guestIo(g.dom, 1, pio(0x3f5, Dir::Read), 100ms);
  EXPECT_EQ(r.status, GuestStatus::StillBlocked) << "the guest ran unfiltered";
  EXPECT_EQ(g.realState(1), SlotState::Ready);
  EXPECT_EQ(g.qemu->seenCount(), 0u);
  g.startProxy(&filter);
  g.loop = std::make_unique<test::ProxyThread>(*g.proxy);
  EXPECT_TRUE(g.proxy->resumed());
  r = g.hv.guestWait(g.dom, 1, 3000ms);
  EXPECT_EQ(r.status, GuestStatus::Completed);
  EXPECT_EQ(r.data, 0xffu) << "refused by the restarted daemon";
  EXPECT_EQ(g.realState(1), SlotState::None);
  EXPECT_FALSE(g.hv.crashed(g.dom));
}

TEST(Proxy, KilledAfterForwardingIsAnsweredExactlyOnceAfterRestart) {
  test::RefusePortFilter filter(0x60);
  ProxiedGuest g(&filter, 1, /*start=*/false);
  auto guest = std::async(std::launch::async, [&] { return g.hv.guestIo(g.dom, 0, pio(0x3f3, Dir::Read), 5000ms); });
  while (g.realState(0) != SlotState::Ready) std::this_thread::sleep_for(1ms);
  g.proxy->handleEvents();  // vetted and forwarded into the shadow slot
  EXPECT_EQ(g.realState(0), SlotState::InProcess);
  EXPECT_EQ(g.shadowState(0), SlotState::Ready);
  EXPECT_EQ(g.proxy->shadow().journal().entry[0].phase, std::uint32_t(xen::JournalPhase::Forwarded));
  g.killProxy();
  g.qemu->handleEvents();  // QEMU answers while no daemon runs; its notify goes nowhere
  g.startProxy(&filter);  // recovery copies the answer back
  EXPECT_EQ(g.realState(0) == SlotState::RespReady || g.realState(0) == SlotState::None, true);
  const auto r = guest.get();
  EXPECT_EQ(r.status, GuestStatus::Completed);
  EXPECT_EQ(r.data, deviceValue(pio(0x3f3, Dir::Read)) & 0xff);
  EXPECT_EQ(g.qemu->seenCount(), 1u) << "answered more than once";
  EXPECT_EQ(g.proxy->relay().counters().recovered.load(), 1u);
  EXPECT_EQ(g.shadowState(0), SlotState::None);
  EXPECT_FALSE(g.hv.crashed(g.dom)) << g.hv.crashReason(g.dom);
}

TEST(Proxy, KilledWhileQemuHoldsTheRequestWaitsForQemuAfterRestart) {
  test::RefusePortFilter filter(0x60);
  ProxiedGuest g(&filter, 1, /*start=*/false);
  auto guest = std::async(std::launch::async, [&] { return g.hv.guestIo(g.dom, 0, pio(0x3f1, Dir::Read), 5000ms); });
  while (g.realState(0) != SlotState::Ready) std::this_thread::sleep_for(1ms);
  g.proxy->handleEvents();
  g.killProxy();
  g.startProxy(&filter);
  test::ProxyThread loop(*g.proxy);
  EXPECT_EQ(g.realState(0), SlotState::InProcess) << "never moves back to READY";
  g.qemu->handleEvents();  // QEMU answers to the restarted daemon
  const auto r = guest.get();
  EXPECT_EQ(r.status, GuestStatus::Completed);
  EXPECT_EQ(r.data, deviceValue(pio(0x3f1, Dir::Read)) & 0xff);
  EXPECT_EQ(g.qemu->seenCount(), 1u);
  EXPECT_FALSE(g.hv.crashed(g.dom));
}

TEST(Proxy, JournalOfAnotherDomainIsRefusedWithAClearError) {
  test::RefusePortFilter filter(0x60);
  ProxiedGuest g(&filter, 1, false);
  SimHypervisor other;
  other.createDomain({.vcpus = 1});
  const auto dom = other.createDomain({.vcpus = 1});  // domid 2: the journal is domid 1's
  const auto id = other.createServer(dom, xen::BufioreqMode::Atomic).value();
  (void)other.mapIoreqPages(dom, id);
  ASSERT_TRUE(other.setServerState(dom, id, true));
  xen::ProxyOptions o;
  o.domid = dom;
  o.server = id;
  o.vcpus = 1;
  o.shadow_path = g.shadow_path;
  const auto p = xen::ProxyEndpoint::open(other, o);
  ASSERT_FALSE(p);
  EXPECT_NE(p.error().message().find("journal belongs to domid"), std::string::npos) << p.error().message();
}

TEST(Proxy, BringUpIsStagedAndLogged) {
  test::RefusePortFilter filter(0x60);
  ProxiedGuest g(&filter, 1, false);
  ASSERT_GE(g.log.size(), 5u);
  EXPECT_EQ(g.log[0], "stage handle: simulator");
  EXPECT_EQ(g.log[1], "stage server: adopted id 0");
  EXPECT_EQ(g.log[2], "stage pages: mapped buffered + sync frames");
  EXPECT_EQ(g.log[3], "stage ports bound: 1 vCPU ports + buffered port");
  EXPECT_EQ(g.log[4], "stage shadow: fresh");
}

}  // namespace
}  // namespace iof
