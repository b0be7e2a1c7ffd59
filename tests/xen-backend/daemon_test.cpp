// The whole daemon (control socket, event loop, journal, reload, modes) against the simulated Xen,
// with a QEMU-7.2-like device model attached the way the proxy-mode interposer attaches QEMU.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <future>
#include <random>
#include <sstream>

#include "ioreq_filter/daemon/client.h"
#include "ioreq_filter/daemon/daemon.h"
#include "ioreq_filter/daemon/refusal_log.h"
#include "ioreq_filter/policy/policy_json.h"
#include "ioreq_filter/sim/qemu_model.h"
#include "ioreq_filter/sim/sim_hypervisor.h"
#include "test_support.h"

namespace iof {
namespace {

using namespace std::chrono_literals;
using json = nlohmann::json;
using sim::GuestStatus;
using test::pio;

std::uint64_t deviceValue(const IoRequest& r) { return 0x40 + (r.addr & 0xf); }

// A graph of one stateless read node: enough for a policy whose device binds and accepts a status read.
GraphSpec oneReadGraph(const std::string& name, const std::string& node, std::uint64_t offset) {
  GraphSpec g;
  g.name = name;
  NodeSpec n;
  n.id = node;
  n.offset = offset;
  n.dir = Dir::Read;
  g.anywhere.push_back(n);
  return g;
}

// Swappable so reload can be observed: generation g refuses port 0x3f0 + g.
struct FakeFactory {
  std::atomic<int> generation{5};
  daemon::FilterFactory make() {
    return [this](const daemon::DaemonOptions&, bool, std::vector<std::string>* uncovered) -> Result<std::unique_ptr<RequestFilter>> {
      if (uncovered) uncovered->push_back("serial0");
      return std::unique_ptr<RequestFilter>(std::make_unique<test::RefusePortFilter>(0x3f0 + generation.load()));
    };
  }
};

struct DaemonFixture : ::testing::Test {
  sim::SimHypervisor hv;
  xen::DomId dom = hv.createDomain({.vcpus = 2});
  xen::ServerId id = 0;
  std::string run_dir = test::tempPath("iof-run");
  FakeFactory factory;
  test::LogCapture logs;
  std::unique_ptr<daemon::Daemon> d;
  std::thread loop;
  std::unique_ptr<sim::QemuModel> qemu;
  std::string record_path;
  bool restrict_after_attach = false;
  std::int64_t verify_restriction_domid = -1;
  unsigned reply_poll_us = 0;
  std::vector<unsigned> allowed_servers;
  std::string qmp_socket;
  daemon::FilterFactory factory_override;

  void SetUp() override {
    std::filesystem::create_directories(run_dir);
    id = hv.createServer(dom, xen::BufioreqMode::Atomic).value();
    (void)hv.mapIoreqPages(dom, id);  // QEMU maps before enabling: that allocates the pages
    ASSERT_TRUE(hv.mapIoRange(dom, id, xen::RangeKind::Pio, 0x3f0, 0x3f7));
    ASSERT_TRUE(hv.setServerState(dom, id, true));
    startDaemon();
  }
  void TearDown() override {
    qemu.reset();
    stopDaemon();
    std::filesystem::remove_all(run_dir);
  }
  daemon::DaemonOptions options() {
    daemon::DaemonOptions o;
    o.domid = dom;
    o.run_dir = run_dir;
    o.filter_factory = factory.make();
    o.refusals_per_second = 3;
    o.record_path = record_path;
    o.restrict_after_attach = restrict_after_attach;
    o.verify_restriction_domid = verify_restriction_domid;
    o.reply_poll_us = reply_poll_us;
    o.allowed_servers = allowed_servers;
    o.qmp_socket = qmp_socket;
    if (factory_override) o.filter_factory = factory_override;
    o.log = logs.sink();
    return o;
  }
  void startDaemon() {
    d = std::make_unique<daemon::Daemon>(hv, options());
    auto ok = d->start();
    ASSERT_TRUE(ok) << ok.error().message();
    loop = std::thread([this] { d->run(); });
  }
  void stopDaemon() {
    if (!d) return;
    d->stop();
    loop.join();
    d.reset();
  }
  // What a SIGKILL leaves behind: no orderly detach, just closed handles (the destructor closes them).
  void killDaemon() { stopDaemon(); }
  Result<json> ask(json req) { return daemon::request(daemon::socketPath(run_dir, dom), req); }
  void attachQemu() {
    auto r = ask({{"cmd", "attach"}, {"domid", dom}, {"server", id}, {"vcpus", 2}});
    ASSERT_TRUE(r) << r.error().message();
    serveShadow(*r);
  }
  // QEMU (the simulator's model) serves the shadow channel an attach reply names.
  void serveShadow(const json& attach_reply) {
    const int fd = ::open(attach_reply.at("shadow").get<std::string>().c_str(), O_RDWR | O_CLOEXEC);
    ASSERT_GE(fd, 0);
    auto q = sim::QemuModel::shadow(hv, dom, fd, 2, deviceValue);
    ::close(fd);
    ASSERT_TRUE(q) << q.error().message();
    qemu = std::move(*q);
    qemu->start();
  }
  std::vector<std::string> logLines(const std::string& needle) { return logs.lines(needle); }
};

TEST_F(DaemonFixture, AttachesServesAndReportsOverTheControlSocket) {
  attachQemu();
  EXPECT_EQ(hv.guestIo(dom, 0, pio(0x3f4, Dir::Read)).data, 0x44u);
  const auto refused = hv.guestIo(dom, 1, pio(0x3f5, Dir::Read));
  EXPECT_EQ(refused.status, GuestStatus::Completed);
  EXPECT_EQ(refused.data, 0xffu);
  auto st = ask({{"cmd", "status"}, {"domid", dom}});
  ASSERT_TRUE(st) << st.error().message();
  EXPECT_TRUE(st->at("attached").get<bool>());
  EXPECT_EQ(st->at("server"), id);
  EXPECT_EQ(st->at("vcpus"), 2);
  EXPECT_EQ(st->at("uncovered"), json::array({"serial0"}));
  auto stats = ask({{"cmd", "stats"}});
  ASSERT_TRUE(stats);
  EXPECT_EQ(stats->at("relay").at("forwarded"), 1);
  EXPECT_EQ(stats->at("relay").at("refused"), 1);
}

// --reply-poll-us: every answer still reaches the guest once, and what the polling cost and won
// is in the stats (the first request may be answered by QEMU's event before any polling).
TEST_F(DaemonFixture, ReplyPollingServesEveryRequestAndShowsItsCostInStats) {
  stopDaemon();
  reply_poll_us = 1000;
  startDaemon();
  attachQemu();
  for (int i = 0; i < 50; ++i) {
    const auto r = hv.guestIo(dom, 0, pio(0x3f0 + (i % 4), Dir::Read));
    ASSERT_EQ(r.status, GuestStatus::Completed);
    ASSERT_EQ(r.data, 0x40u + (i % 4));
  }
  auto stats = ask({{"cmd", "stats"}});
  ASSERT_TRUE(stats) << stats.error().message();
  EXPECT_EQ(stats->at("relay").at("forwarded"), 50);
  const json& rp = stats->at("reply_polling");
  EXPECT_EQ(rp.at("max_us"), 1000);
  EXPECT_GT(rp.at("hits").get<std::uint64_t>() + rp.at("misses").get<std::uint64_t>(), 0u);
  EXPECT_GT(rp.at("spent_ns").get<std::uint64_t>(), 0u);
  EXPECT_EQ(qemu->seenCount(), 50u);
}

TEST_F(DaemonFixture, WrongDomainAndUnknownCommandsAreClearErrors) {
  auto r = ask({{"cmd", "status"}, {"domid", dom + 7}});
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().what.find("this daemon serves domid"), std::string::npos);
  r = ask({{"cmd", "frobnicate"}});
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().what.find("unknown command 'frobnicate'"), std::string::npos);
}

TEST_F(DaemonFixture, OnlyRootMayControlIt) {
  const json reply = d->handle({{"cmd", "mode"}, {"mode", "monitor"}}, 1000);
  EXPECT_FALSE(reply.at("ok").get<bool>());
  EXPECT_EQ(reply.at("error"), "permission denied: uid 1000 may not 'mode' (root only)");
}

TEST_F(DaemonFixture, ReloadSwapsThePolicyWithoutDroppingARequest) {
  attachQemu();
  std::atomic<bool> run{true};
  std::atomic<int> completed{0}, other{0};
  auto vcpu = std::async(std::launch::async, [&] {
    while (run) {
      const auto r = hv.guestIo(dom, 0, pio(0x3f2, Dir::Read), 2000ms);
      (r.status == GuestStatus::Completed ? completed : other)++;
    }
  });
  std::this_thread::sleep_for(50ms);
  factory.generation = 2;  // now port 0x3f2 is refused
  auto r = ask({{"cmd", "reload"}});
  ASSERT_TRUE(r) << r.error().message();
  std::this_thread::sleep_for(50ms);
  run = false;
  vcpu.get();
  EXPECT_EQ(other.load(), 0) << "a request was dropped or left pending across the reload";
  EXPECT_GT(completed.load(), 0);
  EXPECT_EQ(hv.guestIo(dom, 1, pio(0x3f2, Dir::Read)).data, 0xffu);
  EXPECT_EQ(hv.guestIo(dom, 1, pio(0x3f5, Dir::Read)).data, 0x45u);
}

TEST_F(DaemonFixture, RefusalLogsAreRateLimited) {
  attachQemu();
  for (int i = 0; i < 50; ++i) hv.guestIo(dom, 0, pio(0x3f5, Dir::Write, 1, i));
  auto stats = ask({{"cmd", "stats"}});  // the loop drained its ring by now or at the next tick
  std::this_thread::sleep_for(250ms);
  stats = ask({{"cmd", "stats"}});
  ASSERT_TRUE(stats);
  EXPECT_EQ(stats->at("relay").at("refused"), 50);
  EXPECT_EQ(logLines("\"event\":\"refused\"").size(), 3u);
  EXPECT_EQ(stats->at("log").at("refusals_suppressed"), 47);
}

TEST_F(DaemonFixture, KilledAndRestartedMidRequestTheGuestBlocksThenResumes) {
  attachQemu();
  qemu->stop();  // QEMU busy elsewhere: the request sits in the shadow slot when the daemon dies
  auto guest = std::async(std::launch::async, [&] { return hv.guestIo(dom, 1, pio(0x3f3, Dir::Read), 5000ms); });
  while (hv.slotState(dom, id, 1) != xen::SlotState::InProcess) std::this_thread::sleep_for(1ms);
  killDaemon();
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(guest.wait_for(0ms), std::future_status::timeout) << "the guest went on without the daemon";
  EXPECT_EQ(hv.slotState(dom, id, 1), xen::SlotState::InProcess);
  startDaemon();  // finds the journal and re-attaches by itself
  qemu->start();
  const auto r = guest.get();
  EXPECT_EQ(r.status, GuestStatus::Completed);
  EXPECT_EQ(r.data, 0x43u);
  EXPECT_EQ(qemu->seenCount(), 1u);
  EXPECT_FALSE(hv.crashed(dom)) << hv.crashReason(dom);
  auto st = ask({{"cmd", "status"}});
  ASSERT_TRUE(st);
  EXPECT_TRUE(st->at("resumed").get<bool>());
  EXPECT_EQ(st->at("generation"), 2);
}

TEST_F(DaemonFixture, RecordsEveryRequestItWasAskedAboutAsATrace) {
  stopDaemon();
  record_path = run_dir + "/seen.qtest";
  startDaemon();
  attachQemu();
  hv.guestIo(dom, 0, pio(0x3f2, Dir::Write, 1, 0x0c));
  EXPECT_EQ(hv.guestIo(dom, 1, pio(0x3f4, Dir::Read)).data, 0x44u);
  EXPECT_EQ(hv.guestIo(dom, 0, pio(0x3f5, Dir::Read)).data, 0xffu);  // refused, still recorded
  EXPECT_FALSE(std::filesystem::exists(record_path)) << "a trace under its final name while still recording";
  stopDaemon();
  std::ifstream in(record_path);
  std::stringstream text;
  text << in.rdbuf();
  EXPECT_NE(text.str().find("\noutb 0x3f2 0xc # cpu 0\ninb 0x3f4 # cpu 1 ret 0x44\ninb 0x3f5 # cpu 0\n# recorded"), std::string::npos)
      << text.str();
  EXPECT_NE(text.str().find("# recorded: 3 requests, 0 not expressible, 0 lost"), std::string::npos) << text.str();
  EXPECT_EQ(logLines("\"event\":\"recorded\"").size(), 1u);
}

// The simulator's nr_vcpus ignores the restriction: it stands for a restriction that did not take.
TEST_F(DaemonFixture, ARestrictionThatLeavesAnotherDomainReachableFailsTheAttach) {
  const xen::DomId other = hv.createDomain({.vcpus = 1});
  stopDaemon();
  restrict_after_attach = true;
  verify_restriction_domid = other;
  startDaemon();
  auto r = ask({{"cmd", "attach"}, {"domid", dom}, {"server", id}, {"vcpus", 2}});
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().what.find("domid " + std::to_string(other) + " is still reachable after restricting to domid " +
                                std::to_string(dom)),
            std::string::npos)
      << r.error().what;
  EXPECT_EQ(hv.restrictedTo(), dom);
  const auto priv = logLines("\"event\":\"privileges\"");
  ASSERT_EQ(priv.size(), 1u);
  EXPECT_NE(priv[0].find("\"after\":{\"nr_vcpus\":1,\"reachable\":true}"), std::string::npos) << priv[0];
}

TEST_F(DaemonFixture, ExitsCleanlyWhenTheDomainIsDestroyed) {
  attachQemu();
  qemu.reset();
  hv.destroyDomain(dom);
  loop.join();  // run() returns on its own
  d.reset();
  EXPECT_EQ(logLines("domain-gone").size(), 1u);
}

// Real Xen keeps a destroyed domain (and its nr_vcpus answer) while the daemon still maps its ioreq
// pages; the server, though, is gone at once.
TEST_F(DaemonFixture, ExitsWhenItsServerIsDestroyedEvenIfTheDomainLingers) {
  record_path = run_dir + "/seen.qtest";
  stopDaemon();
  startDaemon();
  attachQemu();
  qemu.reset();
  ASSERT_TRUE(hv.destroyServer(dom, id));
  loop.join();
  d.reset();
  EXPECT_EQ(logLines("domain-gone").size(), 1u);
  EXPECT_EQ(logLines("final-stats").size(), 1u);
  EXPECT_TRUE(std::filesystem::exists(record_path)) << "the trace was not closed";
}

// Xen routes an access to the highest-id enabled server whose ranges hold it: a second server (another
// dom0 process, a second device model) claiming the floppy's ports would take them past the filter.
TEST_F(DaemonFixture, ASecondIoreqServerCrashesTheDomain) {
  attachQemu();
  auto rogue = hv.createServer(dom, xen::BufioreqMode::Atomic);
  ASSERT_TRUE(rogue) << rogue.error().message();
  for (int i = 0; i < 50 && logLines("foreign-ioreq-server").empty(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  ASSERT_EQ(logLines("foreign-ioreq-server").size(), 1u);
  EXPECT_NE(logLines("foreign-ioreq-server")[0].find("ioreq server " + std::to_string(*rogue) + " of domid"), std::string::npos)
      << logLines("foreign-ioreq-server")[0];
  EXPECT_EQ(hv.shutdownReason(dom), std::optional<unsigned>(xen::kShutdownCrash));
  std::this_thread::sleep_for(std::chrono::milliseconds(250));
  EXPECT_EQ(logLines("foreign-ioreq-server").size(), 1u) << "crashed once, not on every tick";
}

// One the operator named (--allow-server) may exist; a third may not.
TEST_F(DaemonFixture, AnAllowedServerIsLeftAloneAnotherIsNot) {
  auto allowed = hv.createServer(dom, xen::BufioreqMode::Atomic);
  ASSERT_TRUE(allowed);
  allowed_servers = {unsigned(*allowed)};
  stopDaemon();
  startDaemon();
  attachQemu();
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_TRUE(logLines("foreign-ioreq-server").empty());
  EXPECT_FALSE(hv.shutdownReason(dom));
  auto third = hv.createServer(dom, xen::BufioreqMode::Atomic);
  ASSERT_TRUE(third);
  for (int i = 0; i < 50 && logLines("foreign-ioreq-server").empty(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  ASSERT_EQ(logLines("foreign-ioreq-server").size(), 1u);
  EXPECT_NE(logLines("foreign-ioreq-server")[0].find("ioreq server " + std::to_string(*third) + " "), std::string::npos);
  EXPECT_EQ(hv.shutdownReason(dom), std::optional<unsigned>(xen::kShutdownCrash));
}

// No device list (--qmp only): QEMU is blocked in the enable call that asked for the attach, so its
// monitor cannot answer yet. The attach must complete at once; the filter is built by discovery
// afterwards, and a request the guest issues meanwhile waits - it is never forwarded unchecked.
TEST_F(DaemonFixture, WithoutADeviceListRequestsWaitUntilDiscoveryBuiltTheFilter) {
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  std::atomic<int> calls{0};
  factory_override = [&](const daemon::DaemonOptions& o, bool resumed, std::vector<std::string>*) -> Result<std::unique_ptr<RequestFilter>> {
    ++calls;
    EXPECT_FALSE(resumed);
    EXPECT_GT(o.qmp_wait.count(), 0) << "discovery must wait for QEMU's monitor";
    released.wait();  // QEMU's main loop is not running yet
    return std::unique_ptr<RequestFilter>(std::make_unique<test::RefusePortFilter>(0x3f5));
  };
  qmp_socket = run_dir + "/dom.qmp";
  stopDaemon();
  startDaemon();
  attachQemu();  // returns although discovery has not finished
  auto held = std::async(std::launch::async, [&] { return hv.guestIo(dom, 0, pio(0x3f4, Dir::Read)); });
  EXPECT_EQ(held.wait_for(400ms), std::future_status::timeout) << "a request was served before the filter existed";
  auto st = ask({{"cmd", "status"}});
  ASSERT_TRUE(st) << st.error().message();
  EXPECT_TRUE(st->at("holding").get<bool>());
  EXPECT_EQ(qemu->seenCount(), 0u);
  release.set_value();
  EXPECT_EQ(held.get().data, 0x44u);
  EXPECT_EQ(hv.guestIo(dom, 1, pio(0x3f5, Dir::Read)).data, 0xffu) << "the discovered filter refuses";
  EXPECT_EQ(calls.load(), 1);
  EXPECT_EQ(logLines("\"filtering\"").size(), 1u);
  st = ask({{"cmd", "status"}});
  ASSERT_TRUE(st);
  EXPECT_FALSE(st->at("holding").get<bool>());
}

// Discovery that fails (QEMU never answered, a device without a policy...) stops the domain: the
// held request is never forwarded.
TEST_F(DaemonFixture, DiscoveryThatFailsCrashesTheDomainAndForwardsNothing) {
  factory_override = [](const daemon::DaemonOptions&, bool, std::vector<std::string>*) -> Result<std::unique_ptr<RequestFilter>> {
    return fail("ioreq-filterd", "no policy covers edu: give each a policy, or name it in --unfiltered");
  };
  qmp_socket = run_dir + "/dom.qmp";
  stopDaemon();
  startDaemon();
  attachQemu();
  const auto r = hv.guestIo(dom, 0, pio(0x3f4, Dir::Read), 2000ms);
  EXPECT_NE(r.status, GuestStatus::Completed);
  for (int i = 0; i < 50 && logLines("discovery-failed").empty(); ++i) std::this_thread::sleep_for(20ms);
  ASSERT_EQ(logLines("discovery-failed").size(), 1u);
  EXPECT_NE(logLines("discovery-failed")[0].find("no policy covers edu"), std::string::npos);
  EXPECT_EQ(hv.shutdownReason(dom), std::optional<unsigned>(xen::kShutdownCrash));
  EXPECT_EQ(qemu->seenCount(), 0u);
}

// --standby: a second daemon builds its filter while the first serves, and takes over from the
// journal the moment the first dies; a request the guest issued meanwhile is answered once.
TEST_F(DaemonFixture, AStandbyTakesOverWhenTheServingDaemonDies) {
  attachQemu();
  EXPECT_EQ(hv.guestIo(dom, 0, pio(0x3f4, Dir::Read)).data, 0x44u);
  std::promise<void> died;
  std::shared_future<void> dead = died.get_future().share();
  auto so = options();
  so.standby = true;
  const std::string spawned = run_dir + "/successor";
  // The successor standby: it must inherit no descriptor but stdin/out/err (an inherited event-channel
  // handle would keep the ports bound after its parent dies, and its own takeover would fail).
  // (ls lists its own descriptors: 0-2 and 3, the directory it reads.)
  so.standby_command = {"/bin/sh", "-c", "ls /proc/self/fd > " + spawned + ".tmp && mv " + spawned + ".tmp " + spawned};
  pid_t watched = 0;
  so.wait_for_exit = [&](pid_t pid) -> Result<void> {
    watched = pid;
    dead.wait();
    return {};
  };
  daemon::Daemon standby(hv, so);
  std::thread serving([&] {
    auto ok = standby.start();
    ASSERT_TRUE(ok) << ok.error().message();
    standby.run();
  });
  for (int i = 0; i < 100 && logLines("\"event\":\"standby\"").empty(); ++i) std::this_thread::sleep_for(20ms);
  ASSERT_EQ(logLines("\"event\":\"standby\"").size(), 1u) << "the standby did not find the serving daemon";
  EXPECT_EQ(watched, ::getpid()) << "the pid comes from the serving daemon's status";
  killDaemon();
  auto held = std::async(std::launch::async, [&] { return hv.guestIo(dom, 1, pio(0x3f4, Dir::Read)); });
  EXPECT_EQ(held.wait_for(200ms), std::future_status::timeout) << "answered with no daemon";
  died.set_value();
  EXPECT_EQ(held.get().data, 0x44u);
  EXPECT_EQ(hv.guestIo(dom, 0, pio(0x3f5, Dir::Read)).data, 0xffu) << "the standby's filter refuses";
  const auto attached = logLines("\"takeover_us\"");
  ASSERT_EQ(attached.size(), 1u);
  EXPECT_NE(attached[0].find("\"resumed\":true"), std::string::npos) << attached[0];
  for (int i = 0; i < 100 && !std::filesystem::exists(spawned); ++i) std::this_thread::sleep_for(20ms);
  ASSERT_TRUE(std::filesystem::exists(spawned)) << "no successor standby was started";
  std::ifstream fds(spawned);
  std::string all((std::istreambuf_iterator<char>(fds)), std::istreambuf_iterator<char>());
  EXPECT_EQ(all, "0\n1\n2\n3\n") << "descriptors the successor inherited";
  EXPECT_EQ(logLines("standby-spawned").size(), 1u);
  auto st = ask({{"cmd", "status"}});
  ASSERT_TRUE(st) << st.error().message();
  EXPECT_TRUE(st->at("attached").get<bool>());
  standby.stop();
  serving.join();
}

// systemd restarting a unit, or an operator, starts a second daemon for a domain that is served:
// it stands by instead of fighting over the ports.
TEST_F(DaemonFixture, ASecondDaemonForAServedDomainStandsBy) {
  attachQemu();
  auto so = options();
  std::promise<void> never;
  std::shared_future<void> wait = never.get_future().share();
  so.wait_for_exit = [&](pid_t) -> Result<void> {
    wait.wait();
    return fail("test", "stopped");
  };
  daemon::Daemon second(hv, so);
  std::thread t([&] { EXPECT_FALSE(second.start()); });
  for (int i = 0; i < 100 && logLines("\"event\":\"standby\"").empty(); ++i) std::this_thread::sleep_for(20ms);
  EXPECT_EQ(logLines("serving-daemon-found").size(), 1u);
  EXPECT_EQ(logLines("\"event\":\"standby\"").size(), 1u);
  EXPECT_EQ(hv.guestIo(dom, 0, pio(0x3f4, Dir::Read)).data, 0x44u) << "the serving daemon keeps serving";
  never.set_value();
  t.join();
}

// The serving daemon also exits when its domain is destroyed: its standby must not try to take over.
TEST_F(DaemonFixture, AStandbyWhoseDomainIsGoneExitsQuietly) {
  attachQemu();
  std::promise<void> died;
  std::shared_future<void> dead = died.get_future().share();
  auto so = options();
  so.standby = true;
  so.wait_for_exit = [&](pid_t) -> Result<void> {
    dead.wait();
    return {};
  };
  daemon::Daemon standby(hv, so);
  Result<void> started;
  std::thread t([&] {
    started = standby.start();
    standby.run();  // returns at once
  });
  for (int i = 0; i < 100 && logLines("\"event\":\"standby\"").empty(); ++i) std::this_thread::sleep_for(20ms);
  qemu.reset();
  hv.destroyDomain(dom);
  loop.join();  // the serving daemon saw domain-gone and returned
  d.reset();
  died.set_value();
  t.join();
  EXPECT_TRUE(started) << started.error().message();
  EXPECT_EQ(logLines("\"standby\":true").size(), 1u) << "the standby did not say the domain is gone";
  EXPECT_TRUE(logLines("\"takeover\"").empty());
}

// A standby with nobody to stand by for says so instead of waiting for ever.
TEST_F(DaemonFixture, AStandbyWithoutAServingDaemonFailsClearly) {
  stopDaemon();
  auto so = options();
  so.standby = true;
  so.standby_find = 300ms;
  daemon::Daemon standby(hv, so);
  auto ok = standby.start();
  ASSERT_FALSE(ok);
  EXPECT_NE(ok.error().message().find("--standby: no attached ioreq-filterd for domid"), std::string::npos) << ok.error().message();
}

TEST(RateLimitedLog, SummarisesWhatItSuppressedOncePerSecond) {
  std::vector<std::string> out;
  daemon::RateLimitedLog log(2, [&](const std::string& l) { out.push_back(l); });
  for (int i = 0; i < 5; ++i) log.refusal("r" + std::to_string(i), 1000);
  log.flush(1999);
  EXPECT_EQ(out, (std::vector<std::string>{"r0", "r1"}));
  log.flush(2000);
  ASSERT_EQ(out.size(), 3u);
  EXPECT_EQ(out[2], "{\"event\":\"refusals-suppressed\",\"count\":3}");
}

TEST(DeviceList, ErrorsNameTheEntryAndTheField) {
  auto r = daemon::parseDeviceList(json::parse(R"([{"name":"fdc","kind":"isa-fdc","isa_ports":[[1016,8]]},
                                                  {"name":"ne2k","kind":"ne2k_pci","pci":{"vendor":"0x10ec","device":"0x8029"}}])"),
                                   "devices.json");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().message(), "devices.json: devices[1]: pci devices need \"sbdf\": \"SSSS:BB:DD.F\"");
  r = daemon::parseDeviceList(json::parse(R"([{"name":"ne2k","kind":"ne2k_pci","sbdf":"0000:00:04.0",
                                              "pci":{"vendor":"0x10ec","device":"0x8029"}}])"), "d.json");
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ((*r)[0].sbdf, (Sbdf{0, 0, 4, 0}));
  EXPECT_EQ((*r)[0].pci->vendor, 0x10ec);
}

// The real engine factory: a policy region that binds nowhere on the domain's devices is named in the
// "attached" event, and the attach goes on. A device list carries no BARs, so only the compatibility-mode
// IDE channel's legacy ports (fixed, BARs 0-3) bind; BAR 4 and 5 stay unbound.
TEST_F(DaemonFixture, AttachedEventNamesPolicyRegionsThatBindNowhere) {
  stopDaemon();
  const std::string policies = run_dir + "/policies", devices = run_dir + "/devices.json";
  std::filesystem::create_directories(policies);
  DevicePolicy ide;
  ide.name = "ide";
  ide.match.pci_vendor = 0x8086;
  ide.match.pci_device = 0x7010;
  ide.regions = {RegionSpec{"cmd0", RegionSpace::Io, 0, 0, 8}, RegionSpec{"bmdma", RegionSpace::Io, 4, 0, 16},
                 RegionSpec{"sidpr", RegionSpace::Io, 5, 0, 16}};
  ide.graphs.push_back(oneReadGraph("ata", "status", 7));
  ASSERT_TRUE(savePolicyFile(ide, policies + "/ide.json"));
  std::ofstream(devices) << R"([{"name":"piix3-ide@00:01.1","kind":"piix3-ide","sbdf":"0000:00:01.1",
                                 "pci":{"vendor":"0x8086","device":"0x7010","class":"0x010180"}}])";
  auto o = options();
  o.filter_factory = daemon::engineFilterFactory();
  o.policy_dir = policies;
  o.devices_file = devices;
  d = std::make_unique<daemon::Daemon>(hv, o);
  ASSERT_TRUE(d->start());
  loop = std::thread([this] { d->run(); });
  attachQemu();
  const auto attached = logLines("\"event\":\"attached\"");
  ASSERT_EQ(attached.size(), 1u);
  EXPECT_EQ(json::parse(attached[0]).at("unbound"),
            json::array({"piix3-ide@00:01.1 region 'bmdma': BAR4 is not implemented by this device instance",
                         "piix3-ide@00:01.1 region 'sidpr': BAR5 is not implemented by this device instance"}));
}

// `ioreq-filterd --policy-dir policies` on the shipped tree: the floppy controller is filtered by the
// Linux 6.1 graphs and the datasheet model (combine: intersect) together; a refusal names the set.
TEST_F(DaemonFixture, ShippedPolicyTreeFiltersWithEverySetAndNamesTheRefusingOne) {
  stopDaemon();
  const std::string devices = run_dir + "/devices.json";
  std::ofstream(devices) << R"([{"name":"fdc0","kind":"isa-fdc","isa_ports":[[1008,8]]}])";
  auto o = options();
  o.filter_factory = daemon::engineFilterFactory();
  o.policy_dir = std::string(IOREQ_FILTER_SOURCE_DIR) + "/policies";
  o.devices_file = devices;
  d = std::make_unique<daemon::Daemon>(hv, o);
  auto started = d->start();
  ASSERT_TRUE(started) << started.error().message();
  loop = std::thread([this] { d->run(); });
  attachQemu();
  EXPECT_EQ(hv.guestIo(dom, 0, pio(0x3f4, Dir::Read)).data, 0x44u);  // a status poll: both sets allow it
  hv.guestIo(dom, 0, pio(0x3f5, Dir::Write, 1, 0x0a));               // VENOM: READ ID, then a push flood
  // As many pushes as the reproducer's trigger needs (tests/data/attacks/fdc-venom-cve-2015-3456.qtest).
  for (int i = 0; i < 520; ++i) hv.guestIo(dom, 0, pio(0x3f5, Dir::Write, 1, 0x42));
  std::this_thread::sleep_for(250ms);  // the refusal ring is drained on the daemon's timer
  auto stats = ask({{"cmd", "stats"}});
  ASSERT_TRUE(stats) << stats.error().message();
  EXPECT_GT(stats->at("relay").at("refused").get<int>(), 0);
  const auto refused = logLines("\"event\":\"refused\"");
  ASSERT_FALSE(refused.empty());
  const auto first = json::parse(refused[0]);
  ASSERT_TRUE(first.contains("set")) << refused[0];
  const auto set = first.at("set").get<std::string>();
  EXPECT_TRUE(set == "union" || set.ends_with("policies/datasheet")) << refused[0];
}

// Every field of every control request, wrong-typed, missing or out of range, gets an error reply that
// names the field and why: the handler runs on the daemon's only thread, which also runs the relay.
TEST_F(DaemonFixture, WrongTypedControlFieldsAreErrorsNamingTheField) {
  const std::vector<std::pair<json, std::string>> cases = {
      {json::array({"status"}), "request must be a JSON object, got array"},
      {json{{"domid", dom}}, "request needs a \"cmd\" string (attach, detach, status, stats, mode, reload)"},
      {json{{"cmd", 3}}, "\"cmd\" must be a string, got number 3"},
      {json{{"cmd", "status"}, {"domid", "seven"}}, "\"domid\" must be a domain id (a non-negative integer), got string \"seven\""},
      {json{{"cmd", "status"}, {"domid", json::array()}}, "\"domid\" must be a domain id (a non-negative integer), got array []"},
      {json{{"cmd", "status"}, {"domid", -1}}, "\"domid\" must be a domain id (a non-negative integer), got number -1"},
      {json{{"cmd", "stats"}, {"verbose", true}}, "'stats' takes no field \"verbose\" (it takes: cmd, domid)"},
      {json{{"cmd", "detach"}, {"server", 0}}, "'detach' takes no field \"server\" (it takes: cmd, domid)"},
      {json{{"cmd", "reload"}, {"mode", "enforce"}}, "'reload' takes no field \"mode\" (it takes: cmd, domid)"},
      {json{{"cmd", "mode"}, {"mode", 1}}, "\"mode\" must be a string: enforce, monitor or learn; got number 1"},
      {json{{"cmd", "mode"}, {"mode", nullptr}}, "\"mode\" must be a string: enforce, monitor or learn; got null"},
      {json{{"cmd", "mode"}}, "\"mode\" is missing: enforce, monitor or learn"},
      {json{{"cmd", "mode"}, {"mode", "off"}}, "\"mode\" must be enforce, monitor or learn, got \"off\""},
      {json{{"cmd", "attach"}, {"server", "x"}}, "\"server\" must be an ioreq server id 0..7, got string \"x\""},
      {json{{"cmd", "attach"}, {"server", 1.5}}, "\"server\" must be an ioreq server id 0..7, got number 1.5"},
      {json{{"cmd", "attach"}, {"server", 9}}, "\"server\" must be an ioreq server id 0..7, got number 9"},
      {json{{"cmd", "attach"}, {"server", "-1"}}, "\"server\" must be an ioreq server id 0..7, got string \"-1\""},
      {json{{"cmd", "attach"}, {"server", id}, {"vcpus", "two"}}, "\"vcpus\" must be a vCPU count 0..128, got string \"two\""},
      {json{{"cmd", "attach"}, {"server", id}, {"vcpus", 1e12}}, "\"vcpus\" must be a vCPU count 0..128, got number 1000000000000.0"},
      {json{{"cmd", "attach"}, {"vcpus", 2}}, "\"vcpus\" is only meaningful with \"server\" (without it both come from the journal)"},
      {json{{"cmd", "attach"}, {"server", id}, {"vcpu", 2}}, "'attach' takes no field \"vcpu\" (it takes: cmd, domid, server, vcpus)"},
  };
  for (const auto& [req, why] : cases) {
    const json reply = d->handle(req, 0);
    ASSERT_TRUE(reply.is_object()) << req.dump();
    EXPECT_EQ(reply.at("ok"), false) << req.dump();
    EXPECT_EQ(reply.value("error", std::string()), why) << req.dump();
  }
  // Over the socket too, including what is not JSON at all; the daemon still serves afterwards.
  auto r = ask({{"cmd", "mode"}, {"mode", 1}});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().what, "\"mode\" must be a string: enforce, monitor or learn; got number 1");
  EXPECT_EQ(d->handleLine("{\"cmd\": \"status\"", 0), "{\"error\":\"request is not valid JSON\",\"ok\":false}\n");
  EXPECT_EQ(d->handleLine("", 0), "{\"error\":\"request is not valid JSON\",\"ok\":false}\n");
  auto st = ask({{"cmd", "status"}});
  ASSERT_TRUE(st) << st.error().message();
  EXPECT_EQ(st->at("mode"), "enforce");
}

// A request longer than the daemon reads gets a reply too, not a silently closed connection.
TEST_F(DaemonFixture, AnOverlongControlRequestGetsAnErrorReply) {
  auto r = ask({{"cmd", "status"}, {"pad", std::string(70000, 'x')}});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().what, "request longer than 65536 bytes without a newline");
  EXPECT_TRUE(ask({{"cmd", "status"}}));
}

// Bounded, seeded fuzzing of the control-request handler in-process: mutated valid requests (fields
// dropped, retyped, added) and byte-level damage to their text. Every input gets exactly one JSON reply
// with a boolean "ok" (and a non-empty "error" when false), and the daemon still serves afterwards.
TEST_F(DaemonFixture, ControlHandlerRepliesToEveryFuzzedRequestAndKeepsServing) {
  // The inputs are handled on this thread, so the event loop waits until they are done (it would run
  // them on its own thread over the socket; here thousands of connections would only be slower).
  stopDaemon();
  d = std::make_unique<daemon::Daemon>(hv, options());
  ASSERT_TRUE(d->start());
  std::mt19937 rng(1414);
  auto pick = [&](std::size_t n) { return std::size_t(std::uniform_int_distribution<std::size_t>(0, n - 1)(rng)); };
  const std::vector<json> seeds = {
      {{"cmd", "status"}, {"domid", dom}}, {{"cmd", "stats"}},   {{"cmd", "mode"}, {"mode", "monitor"}},
      {{"cmd", "mode"}, {"mode", "enforce"}}, {{"cmd", "reload"}}, {{"cmd", "detach"}},
      {{"cmd", "attach"}, {"domid", dom}, {"server", id}, {"vcpus", 2}}, {{"cmd", "attach"}}};
  const std::vector<std::string> keys = {"cmd", "domid", "mode", "server", "vcpus", "x", ""};
  auto randomValue = [&]() -> json {
    switch (pick(11)) {
      case 0: return nullptr;
      case 1: return pick(2) == 1;
      case 2: return -std::int64_t(pick(1000));
      case 3: return std::uint64_t(rng()) << 32 | rng();
      case 4: return double(rng()) / 7.0;
      case 5: return std::string(pick(5), char('a' + pick(26)));
      case 6: return json::array({pick(9), "status"});
      case 7: return json{{"cmd", "status"}};
      case 8: return std::to_string(pick(12));
      case 9: return std::vector<std::string>{"enforce", "monitor", "learn", "attach", "status"}[pick(5)];
      default: return "0x" + std::to_string(pick(100));
    }
  };
  const int kInputs = 3000;
  for (int i = 0; i < kInputs; ++i) {
    json req = seeds[pick(seeds.size())];
    for (std::size_t m = 0, n = 1 + pick(3); m < n; ++m) {
      const std::string& k = keys[pick(keys.size())];
      switch (pick(3)) {
        case 0: req.erase(k); break;
        default: req[k] = randomValue(); break;
      }
    }
    std::string line = req.dump();
    if (pick(3) == 0) {  // damage the text itself
      for (std::size_t m = 0, n = 1 + pick(4); m < n && !line.empty(); ++m) {
        const std::size_t at = pick(line.size());
        switch (pick(3)) {
          case 0: line[at] = char(rng()); break;
          case 1: line.erase(at, 1 + pick(4)); break;
          default: line.insert(at, 1, "{}[]\":,\\0-e"[pick(11)]); break;
        }
      }
    }
    const uid_t uid = pick(10) == 0 ? uid_t(1000) : uid_t(0);
    std::string reply;
    ASSERT_NO_THROW(reply = d->handleLine(line, uid)) << "input " << i << ": " << line;
    ASSERT_FALSE(reply.empty());
    ASSERT_EQ(reply.back(), '\n');
    const json j = json::parse(reply, nullptr, false);
    ASSERT_TRUE(j.is_object()) << "input " << i << ": " << line << " -> " << reply;
    ASSERT_TRUE(j.contains("ok") && j["ok"].is_boolean()) << reply;
    if (!j["ok"].get<bool>()) {
      ASSERT_FALSE(j.value("error", std::string()).empty()) << reply;
    }
  }
  (void)d->handle({{"cmd", "detach"}}, 0);
  loop = std::thread([this] { d->run(); });
  auto st = ask({{"cmd", "status"}, {"domid", dom}});
  ASSERT_TRUE(st) << st.error().message();
  attachQemu();
  EXPECT_EQ(hv.guestIo(dom, 0, pio(0x3f4, Dir::Read)).data, 0x44u);
}

// Fail closed on devices: an empty policy set, policies that match none of the domain's devices, and a
// device no policy covers that --unfiltered does not name each fail the attach with a reason; a device
// named there runs unfiltered, shown in status and counted in stats.
struct UnfilteredFixture : DaemonFixture {
  std::string policies, devices;
  void SetUp() override {
    DaemonFixture::SetUp();
    stopDaemon();
    policies = run_dir + "/policies";
    devices = run_dir + "/devices.json";
    std::filesystem::create_directories(policies);
    std::ofstream(devices) << R"([{"name":"fdc","kind":"isa-fdc","isa_ports":[[1008,6],[1015,1]]},
                                   {"name":"serial1","kind":"isa-serial","isa_ports":[[760,8]]}])";
  }
  void writeIsaPolicy(const std::string& kind) {
    DevicePolicy p;
    p.name = kind;
    p.match.isa_kind = kind;
    p.regions = {RegionSpec{"io", RegionSpace::Io, -1, 0x2f8, 8}};
    p.graphs.push_back(oneReadGraph(kind, "lsr", 5));
    ASSERT_TRUE(savePolicyFile(p, policies + "/" + kind + ".json"));
  }
  Result<json> attachWith(std::vector<std::string> unfiltered) {
    auto o = options();
    o.filter_factory = daemon::engineFilterFactory();
    o.policy_dir = policies;
    o.devices_file = devices;
    o.unfiltered = std::move(unfiltered);
    d = std::make_unique<daemon::Daemon>(hv, o);
    if (auto ok = d->start(); !ok) return std::unexpected(ok.error());
    loop = std::thread([this] { d->run(); });
    return ask({{"cmd", "attach"}, {"domid", dom}, {"server", id}, {"vcpus", 2}});
  }
};

TEST_F(UnfilteredFixture, AnEmptyPolicySetFailsTheAttach) {
  auto r = attachWith({"fdc", "isa-serial"});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().what, policies + ": no policies (*.json) found: an empty policy set would filter nothing");
}

TEST_F(UnfilteredFixture, PoliciesMatchingNoDeviceFailTheAttach) {
  writeIsaPolicy("isa-parallel");
  auto r = attachWith({"fdc", "serial1"});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().what, policies + ": no policy matches any of the domain's 2 devices: nothing would be filtered");
}

TEST_F(UnfilteredFixture, ADeviceWithoutPolicyNotNamedUnfilteredFailsTheAttach) {
  writeIsaPolicy("isa-serial");
  auto r = attachWith({});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().what,
            "ioreq-filterd: no policy covers fdc (isa-fdc): give each a policy, or name it (instance or kind) in --unfiltered to let its "
            "requests through unfiltered");
  auto st = ask({{"cmd", "status"}});
  ASSERT_TRUE(st) << st.error().message();
  EXPECT_FALSE(st->at("attached").get<bool>());
}

TEST_F(UnfilteredFixture, ADeviceNamedUnfilteredRunsUnfilteredShownAndCounted) {
  writeIsaPolicy("isa-serial");
  auto r = attachWith({"isa-fdc"});  // by kind; the instance name "fdc" works as well
  ASSERT_TRUE(r) << r.error().message();
  serveShadow(*r);
  EXPECT_EQ(hv.guestIo(dom, 0, pio(0x3f4, Dir::Read)).data, 0x44u);
  auto st = ask({{"cmd", "status"}});
  ASSERT_TRUE(st) << st.error().message();
  EXPECT_EQ(st->at("unfiltered"), json::array({"isa-fdc"}));
  EXPECT_EQ(st->at("uncovered"), json::array({"fdc"}));
  auto stats = ask({{"cmd", "stats"}});
  ASSERT_TRUE(stats) << stats.error().message();
  EXPECT_EQ(stats->at("engine").at("unclaimed"), 1);
}

}  // namespace
}  // namespace iof
