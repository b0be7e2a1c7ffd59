// The simulator reproduces Xen 4.17's ioreq rules (see the rule list in sim_hypervisor.cpp).
#include <gtest/gtest.h>

#include <future>
#include <poll.h>

#include "ioreq_filter/sim/qemu_model.h"
#include "ioreq_filter/sim/sim_hypervisor.h"
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

std::uint64_t echoAddress(const IoRequest& r) { return r.addr & 0xffff; }

struct OneServer {
  SimHypervisor hv;
  xen::DomId dom = hv.createDomain({.vcpus = 2});
  xen::ServerId id = 0;
  std::unique_ptr<QemuModel> qemu;

  explicit OneServer(std::uint64_t lo = 0x3f0, std::uint64_t hi = 0x3f7) {
    id = hv.createServer(dom, xen::BufioreqMode::Atomic).value();
    (void)hv.mapIoreqPages(dom, id);  // allocates the pages, as QEMU's first mapping does
    EXPECT_TRUE(hv.mapIoRange(dom, id, xen::RangeKind::Pio, lo, hi));
    EXPECT_TRUE(hv.setServerState(dom, id, true));
    qemu = QemuModel::direct(hv, dom, id, 2, echoAddress).value();
  }
};

TEST(SimRules, ServerIdsAreHandedOutLowestFreeFirstAndAtMostEight) {
  SimHypervisor hv;
  const auto dom = hv.createDomain({});
  for (unsigned i = 0; i < 8; ++i) EXPECT_EQ(hv.createServer(dom, xen::BufioreqMode::Off).value(), i);
  const auto ninth = hv.createServer(dom, xen::BufioreqMode::Off);
  ASSERT_FALSE(ninth);
  EXPECT_NE(ninth.error().message().find("ENOSPC"), std::string::npos) << ninth.error().message();
  ASSERT_TRUE(hv.destroyServer(dom, 3));
  EXPECT_EQ(hv.createServer(dom, xen::BufioreqMode::Off).value(), 3u);
}

TEST(SimRules, HighestEnabledServerWinsOverlappingRanges) {
  SimHypervisor hv;
  const auto dom = hv.createDomain({.vcpus = 1});
  const auto early = hv.createServer(dom, xen::BufioreqMode::Off).value();  // id 0: a filter created first
  const auto late = hv.createServer(dom, xen::BufioreqMode::Off).value();   // id 1: QEMU's
  for (auto id : {early, late}) {
    (void)hv.mapIoreqPages(dom, id);
    ASSERT_TRUE(hv.mapIoRange(dom, id, xen::RangeKind::Pio, 0x3f0, 0x3f7));
    ASSERT_TRUE(hv.setServerState(dom, id, true));
  }
  auto q0 = QemuModel::direct(hv, dom, early, 1, [](const IoRequest&) { return 0x10; }).value();
  auto q1 = QemuModel::direct(hv, dom, late, 1, [](const IoRequest&) { return 0x11; }).value();
  q0->start();
  q1->start();
  auto r = hv.guestIo(dom, 0, pio(0x3f4, Dir::Read));
  EXPECT_EQ(r.status, GuestStatus::Completed);
  EXPECT_EQ(r.server, 1);
  EXPECT_EQ(r.data, 0x11u);
  ASSERT_TRUE(hv.setServerState(dom, late, false));  // disabled servers are skipped
  r = hv.guestIo(dom, 0, pio(0x3f4, Dir::Read));
  EXPECT_EQ(r.server, 0);
  EXPECT_EQ(r.data, 0x10u);
}

TEST(SimRules, AccessMustLieWhollyInsideOneRangeAndThereIsNoDefaultServer) {
  OneServer s(0x3f0, 0x3f5);
  s.qemu->start();
  EXPECT_EQ(s.hv.guestIo(s.dom, 0, pio(0x3f5, Dir::Read, 1)).status, GuestStatus::Completed);
  const auto straddling = s.hv.guestIo(s.dom, 0, pio(0x3f5, Dir::Read, 2));
  EXPECT_EQ(straddling.status, GuestStatus::Unclaimed);
  EXPECT_EQ(straddling.data, 0xffffu);
  const auto nobody = s.hv.guestIo(s.dom, 1, pio(0x60, Dir::Read, 4));
  EXPECT_EQ(nobody.status, GuestStatus::Unclaimed);
  EXPECT_EQ(nobody.data, 0xffffffffu);
  EXPECT_EQ(s.hv.guestIo(s.dom, 1, pio(0x60, Dir::Write, 1, 0x12)).status, GuestStatus::Unclaimed);
  EXPECT_EQ(s.qemu->seenCount(), 1u);
}

TEST(SimRules, Cf8LatchTurnsCfcIntoPciConfigRoutedBySbdf) {
  OneServer s;
  ASSERT_TRUE(s.hv.mapPciDev(s.dom, s.id, Sbdf{0, 0, 4, 0}));
  s.qemu->start();
  // The CF8 write itself is latched and still looked up as a port (nobody claims 0xcf8 here).
  EXPECT_EQ(s.hv.guestIo(s.dom, 0, pio(0xcf8, Dir::Write, 4, 0x80002010)).status, GuestStatus::Unclaimed);
  EXPECT_EQ(s.hv.cf8(s.dom), 0x80002010u);
  const auto r = s.hv.guestIo(s.dom, 0, pio(0xcfe, Dir::Read, 2));
  ASSERT_EQ(r.status, GuestStatus::Completed);
  const auto seen = s.qemu->seen();
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0].request.type, IoType::PciConfig);
  EXPECT_EQ(seen[0].request.addr, pciConfigAddress(Sbdf{0, 0, 4, 0}, 0x12));
  EXPECT_EQ(seen[0].request.size, 2);
  // Another device's SBDF is nobody's.
  s.hv.guestIo(s.dom, 0, pio(0xcf8, Dir::Write, 4, 0x80002810));
  EXPECT_EQ(s.hv.guestIo(s.dom, 0, pio(0xcfc, Dir::Read, 4)).status, GuestStatus::Unclaimed);
  // With the enable bit clear, 0xcfc is a plain port.
  s.hv.guestIo(s.dom, 0, pio(0xcf8, Dir::Write, 4, 0x00002010));
  EXPECT_EQ(s.hv.guestIo(s.dom, 0, pio(0xcfc, Dir::Read, 4)).status, GuestStatus::Unclaimed);
}

TEST(SimRules, VpEportIsWrittenOnlyWhenTheServerIsEnabled) {
  SimHypervisor hv;
  const auto dom = hv.createDomain({.vcpus = 2});
  const auto id = hv.createServer(dom, xen::BufioreqMode::Atomic).value();
  auto pages = hv.mapIoreqPages(dom, id).value();
  EXPECT_EQ(xen::pagesOf(pages).sync->vcpu[0].vp_eport, 0u);
  ASSERT_TRUE(hv.setServerState(dom, id, true));
  EXPECT_NE(xen::pagesOf(pages).sync->vcpu[0].vp_eport, 0u);
  EXPECT_NE(xen::pagesOf(pages).sync->vcpu[1].vp_eport, xen::pagesOf(pages).sync->vcpu[0].vp_eport);
}

TEST(SimRules, VpEportStaysZeroWhenTheServerIsEnabledBeforeItsPagesExist) {
  SimHypervisor hv;
  const auto dom = hv.createDomain({.vcpus = 1});
  const auto id = hv.createServer(dom, xen::BufioreqMode::Atomic).value();
  ASSERT_TRUE(hv.setServerState(dom, id, true));
  auto pages = hv.mapIoreqPages(dom, id).value();  // first mapping allocates cleared pages
  EXPECT_EQ(xen::pagesOf(pages).sync->vcpu[0].vp_eport, 0u);
}

TEST(SimRules, VcpuBlocksUntilTheDeviceModelAnswers) {
  OneServer s;
  auto r = s.hv.guestIo(s.dom, 1, pio(0x3f4, Dir::Read), 50ms);
  EXPECT_EQ(r.status, GuestStatus::StillBlocked);
  EXPECT_EQ(s.hv.slotState(s.dom, s.id, 1), SlotState::Ready);
  s.qemu->handleEvents();
  r = s.hv.guestWait(s.dom, 1, 1000ms);
  EXPECT_EQ(r.status, GuestStatus::Completed);
  EXPECT_EQ(r.data, 0xf4u);
  EXPECT_EQ(s.hv.slotState(s.dom, s.id, 1), SlotState::None);
}

TEST(SimRules, SlotStateMovingBackwardsCrashesTheDomain) {
  SimHypervisor hv;
  const auto dom = hv.createDomain({.vcpus = 1});
  const auto id = hv.createServer(dom, xen::BufioreqMode::Off).value();
  (void)hv.mapIoreqPages(dom, id);  // allocates the pages, as QEMU's first mapping does
  ASSERT_TRUE(hv.mapIoRange(dom, id, xen::RangeKind::Pio, 0x3f0, 0x3f7));
  ASSERT_TRUE(hv.setServerState(dom, id, true));
  xen::SessionOptions o;
  o.domid = dom;
  o.adopt = id;
  o.vcpus = 1;
  auto rogue = xen::IoreqServerSession::open(hv, o).value();
  auto guest = std::async(std::launch::async, [&] { return hv.guestIo(dom, 0, pio(0x3f4, Dir::Read), 2000ms); });
  auto& slot = rogue->pages().sync->vcpu[0];
  while (xen::loadState(slot) != SlotState::Ready) std::this_thread::yield();
  xen::storeState(slot, SlotState::InProcess);
  (void)rogue->events().notify(rogue->vcpuPort(0));
  std::this_thread::sleep_for(30ms);  // let the vCPU observe INPROCESS
  xen::storeState(slot, SlotState::Ready);
  (void)rogue->events().notify(rogue->vcpuPort(0));
  EXPECT_EQ(guest.get().status, GuestStatus::Crashed);
  EXPECT_EQ(hv.crashReason(dom), "Weird HVM ioreq state transition INPROCESS -> READY");
}

TEST(SimRules, OnlyDataTravelsBackToTheVcpu) {
  SimHypervisor hv;
  const auto dom = hv.createDomain({.vcpus = 1});
  const auto id = hv.createServer(dom, xen::BufioreqMode::Off).value();
  (void)hv.mapIoreqPages(dom, id);  // allocates the pages, as QEMU's first mapping does
  ASSERT_TRUE(hv.mapIoRange(dom, id, xen::RangeKind::Pio, 0x3f0, 0x3f7));
  ASSERT_TRUE(hv.setServerState(dom, id, true));
  xen::SessionOptions o;
  o.domid = dom;
  o.adopt = id;
  o.vcpus = 1;
  auto dm = xen::IoreqServerSession::open(hv, o).value();
  auto guest = std::async(std::launch::async, [&] { return hv.guestIo(dom, 0, pio(0x3f4, Dir::Read, 1), 2000ms); });
  auto& slot = dm->pages().sync->vcpu[0];
  while (xen::loadState(slot) != SlotState::Ready) std::this_thread::yield();
  xen::storeState(slot, SlotState::InProcess);
  slot.data = 0x5a;
  slot.count = 0;      // a device model cannot shorten a request…
  slot.addr = 0x60;    // …or move it
  xen::storeState(slot, SlotState::RespReady);
  (void)dm->events().notify(dm->vcpuPort(0));
  const auto r = guest.get();
  EXPECT_EQ(r.status, GuestStatus::Completed);
  EXPECT_EQ(r.data, 0x5au);
  EXPECT_EQ(hv.ignoredFieldChanges(dom), 1u);
  EXPECT_FALSE(hv.crashed(dom));
}

TEST(SimRules, BufferedRingFallsBackToSynchronousWhenFull) {
  OneServer s;
  ASSERT_TRUE(s.hv.mapIoRange(s.dom, s.id, xen::RangeKind::Mmio, 0xa0000, 0xbffff));
  for (unsigned i = 0; i < xen::kBufferedSlots; ++i)
    ASSERT_EQ(s.hv.guestIo(s.dom, 0, mmio(0xa0000 + i, Dir::Write, 1, i & 0xff)).status, GuestStatus::Buffered) << i;
  // Ring full: the 512th write takes the synchronous path and blocks the vCPU.
  auto r = s.hv.guestIo(s.dom, 0, mmio(0xa0000 + 511, Dir::Write, 1, 0x77), 50ms);
  EXPECT_EQ(r.status, GuestStatus::StillBlocked);
  EXPECT_EQ(s.hv.slotState(s.dom, s.id, 0), SlotState::Ready);
  s.qemu->handleEvents();  // drains the ring first, then the slot (xen-hvm.c cpu_handle_ioreq)
  EXPECT_EQ(s.hv.guestWait(s.dom, 0, 1000ms).status, GuestStatus::Completed);
  const auto seen = s.qemu->seen();
  ASSERT_EQ(seen.size(), 512u);
  for (unsigned i = 0; i < 511; ++i) {
    EXPECT_TRUE(seen[i].buffered);
    EXPECT_EQ(seen[i].request.addr, 0xa0000u + i);
  }
  EXPECT_FALSE(seen[511].buffered);
  EXPECT_EQ(seen[511].request.addr, 0xa0000u + 511);
}

TEST(SimRules, EightByteBufferedWriteTakesTwoSlots) {
  OneServer s;
  ASSERT_TRUE(s.hv.mapIoRange(s.dom, s.id, xen::RangeKind::Mmio, 0xa0000, 0xbffff));
  ASSERT_EQ(s.hv.guestIo(s.dom, 0, mmio(0xa0008, Dir::Write, 8, 0x1122334455667788ull)).status, GuestStatus::Buffered);
  s.qemu->handleEvents();
  const auto seen = s.qemu->seen();
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0].request.size, 8);
  EXPECT_EQ(seen[0].request.data, 0x1122334455667788ull);
}

TEST(SimRules, BadAccessSizeIsUnhandleable) {
  OneServer s;
  EXPECT_EQ(s.hv.guestIo(s.dom, 0, pio(0x3f4, Dir::Read, 3)).status, GuestStatus::Unhandleable);
}

TEST(SimRules, ClosingAHandleReturnsPortsToUnboundAndRebindingMarksThemPending) {
  SimHypervisor hv;
  const auto dom = hv.createDomain({.vcpus = 1});
  const auto id = hv.createServer(dom, xen::BufioreqMode::Off).value();
  (void)hv.mapIoreqPages(dom, id);  // allocates the pages, as QEMU's first mapping does
  ASSERT_TRUE(hv.setServerState(dom, id, true));
  auto pages = hv.mapIoreqPages(dom, id).value();
  const auto remote = xen::pagesOf(pages).sync->vcpu[0].vp_eport;
  auto a = hv.openEventChannel().value();
  const auto local = a->bindInterdomain(dom, remote).value();
  EXPECT_EQ(a->pending(), std::int64_t(local));  // pending right after binding
  auto b = hv.openEventChannel().value();
  EXPECT_FALSE(b->bindInterdomain(dom, remote)) << "a port binds once";
  a.reset();  // the binder exits
  const auto again = b->bindInterdomain(dom, remote);
  ASSERT_TRUE(again) << again.error().message();
  EXPECT_EQ(b->pending(), std::int64_t(*again));
  EXPECT_EQ(b->pending(), -1);
}

bool readable(int fd) {
  pollfd p{fd, POLLIN, 0};
  return poll(&p, 1, 0) == 1;
}

// R13's doorbell: a handle's fd is readable exactly while a port waits in its queue, so a poll loop
// neither misses an event nor spins on a drained handle; a masked port is latched, not queued.
TEST(SimRules, HandleFdIsReadableWhileAnEventWaitsAndQuietOnceDrained) {
  SimHypervisor hv;
  auto daemon = hv.openEventChannel().value();
  auto qemu = hv.openEventChannel().value();
  const auto daemonEnd = daemon->bindUnbound(0).value();
  const auto qemuEnd = qemu->bindInterdomain(0, daemonEnd).value();
  EXPECT_EQ(qemu->pending(), std::int64_t(qemuEnd)) << "the binder's end is pending at once";
  ASSERT_EQ(qemu->unmask(qemuEnd), 0);
  EXPECT_FALSE(readable(daemon->fd()));
  EXPECT_FALSE(readable(qemu->fd()));

  ASSERT_EQ(qemu->notify(qemuEnd), 0);
  EXPECT_TRUE(readable(daemon->fd()));
  EXPECT_EQ(daemon->pending(), std::int64_t(daemonEnd));
  EXPECT_FALSE(readable(daemon->fd())) << "drained: a poll loop must sleep";
  EXPECT_EQ(daemon->pending(), -1);

  ASSERT_EQ(qemu->notify(qemuEnd), 0);  // still masked: latched
  EXPECT_FALSE(readable(daemon->fd()));
  ASSERT_EQ(daemon->unmask(daemonEnd), 0);
  EXPECT_TRUE(readable(daemon->fd())) << "unmasking delivers the latched event";
  EXPECT_EQ(daemon->pending(), std::int64_t(daemonEnd));
  EXPECT_FALSE(readable(daemon->fd()));
}

// The vCPU blocks on its own wake-up and is released by the device model's notification from
// another thread, however late it comes (no lost wake-up between the slot check and the sleep).
TEST(SimRules, BlockedVcpuWakesOnTheNotificationFromAnotherThread) {
  OneServer s;
  for (int i = 0; i < 200; ++i) {
    auto guest = std::async(std::launch::async, [&] { return s.hv.guestIo(s.dom, 0, pio(0x3f4, Dir::Read), 2000ms); });
    while (s.hv.slotState(s.dom, s.id, 0) != SlotState::Ready) std::this_thread::yield();
    if (i % 2) std::this_thread::sleep_for(100us);  // sometimes after the vCPU went to sleep
    s.qemu->handleEvents();
    const auto r = guest.get();
    ASSERT_EQ(r.status, GuestStatus::Completed) << "request " << i;
    EXPECT_EQ(r.data, 0xf4u);
  }
}

TEST(SimRules, ErrorsNameTheCallAndErrno) {
  SimHypervisor hv;
  const auto dom = hv.createDomain({});
  const auto r = hv.mapIoreqPages(dom, 5);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().message(), "xenforeignmemory_map_resource(domid 1, server 5): ENOENT (No such file or directory)");
}

}  // namespace
}  // namespace iof
