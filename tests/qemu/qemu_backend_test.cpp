// The QEMU backend against the real QEMU 7.2: discovery, replay, and each fate of QEMU.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>

#include <cstdio>

#include <algorithm>
#include <functional>
#include <string>

#include "ioreq_filter/qemu/discovery.h"
#include "ioreq_filter/qemu/qemu_instance.h"
#include "ioreq_filter/qemu/replay.h"
#include "ioreq_filter/trace/trace.h"

namespace iof::qemu {
namespace {

using namespace std::chrono_literals;

const std::vector<std::string> kNe2kMachine{"-machine", "pc", "-nodefaults", "-device", "ne2k_pci,addr=04.0"};

std::unique_ptr<QemuInstance> start(const std::vector<std::string>& args,
                                    std::chrono::milliseconds timeout = 10s) {
  LaunchOptions o;
  o.machine_args = args;
  o.command_timeout = timeout;
  auto q = QemuInstance::launch(o);
  EXPECT_TRUE(q) << q.error().message();
  return q ? std::move(*q) : nullptr;
}

Trace parse(const std::string& text) {
  auto t = parseTrace(text, "test.qtest");
  EXPECT_TRUE(t) << t.error().message();
  return t ? std::move(*t) : Trace{};
}

// The platform notes' ne2k_pci example: identify, size and place BAR0, enable I/O, reset, read ISR.
const std::string kNe2kProbe =
    "# qemu: -machine pc -nodefaults -device ne2k_pci,addr=04.0\n"
    "outl 0xcf8 0x80002000\n"
    "inl 0xcfc # ret 0x802910ec\n"
    "outl 0xcf8 0x80002010\n"
    "outl 0xcfc 0xffffffff\n"
    "inl 0xcfc # ret 0xffffff01\n"
    "outl 0xcfc 0xc000\n"
    "outl 0xcf8 0x80002004\n"
    "outw 0xcfc 0x5\n"
    "inb 0xc01f\n"
    "inb 0xc007 # ret 0x80\n";

const DeviceInstance* find(const std::vector<DeviceInstance>& ds, const std::string& kind) {
  auto it = std::find_if(ds.begin(), ds.end(), [&](auto& d) { return d.kind == kind; });
  return it == ds.end() ? nullptr : &*it;
}

TEST(QemuDiscovery, FindsNe2kPciAndTheBuiltInFloppyController) {
  auto q = start(kNe2kMachine);
  ASSERT_TRUE(q);
  auto devices = discoverDevices(q->qmp(), &q->qtest());
  ASSERT_TRUE(devices) << devices.error().message();
  const DeviceInstance* ne2k = find(*devices, "ne2k_pci");
  ASSERT_NE(ne2k, nullptr);
  EXPECT_EQ(ne2k->name, "ne2k_pci@00:04.0");
  ASSERT_TRUE(ne2k->pci);
  EXPECT_EQ(ne2k->pci->vendor, 0x10ec);
  EXPECT_EQ(ne2k->pci->device, 0x8029);
  EXPECT_EQ(ne2k->pci->class_code, 0x020000u);
  EXPECT_EQ(ne2k->sbdf, (Sbdf{0, 0, 4, 0}));
  EXPECT_EQ(ne2k->bars[0].kind, BarKind::Io);
  EXPECT_EQ(ne2k->bars[0].size, 256u);
  EXPECT_EQ(ne2k->bars[0].address, 0u);  // no firmware has run under -S
  EXPECT_EQ(ne2k->command, 0);
  EXPECT_EQ(ne2k->bars[1].kind, BarKind::None);

  // The piix3 IDE function reports its prog-if only through config space.
  const DeviceInstance* ide = find(*devices, "piix3-ide");
  ASSERT_NE(ide, nullptr);
  EXPECT_EQ(ide->pci->class_code, 0x010180u);

  // `-machine pc` creates an isa-fdc at 0x3f0 even with -nodefaults; it decodes 0x3f1-0x3f5 and 0x3f7,
  // and the first range is widened to start at its iobase.
  const DeviceInstance* fdc = find(*devices, "isa-fdc");
  ASSERT_NE(fdc, nullptr);
  EXPECT_EQ(fdc->name, "isa-fdc@0x3f0");
  EXPECT_FALSE(fdc->pci);
  ASSERT_EQ(fdc->isa_ports.size(), 2u);
  EXPECT_EQ(fdc->isa_ports[0].base, 0x3f0u);
  EXPECT_EQ(fdc->isa_ports[0].length, 6u);
  EXPECT_EQ(fdc->isa_ports[1].base, 0x3f7u);
  EXPECT_EQ(fdc->isa_ports[1].length, 1u);

  // Discovery restored the CF8 latch it used.
  auto latch = q->qtest().command("inl 0xcf8");
  ASSERT_TRUE(latch);
  EXPECT_EQ(latch->value, 0u);
}

TEST(QemuDiscovery, SeesAFloppyControllerMovedByItsIobase) {
  auto q = start({"-machine", "pc", "-nodefaults", "-device", "isa-fdc,iobase=0x370"});
  ASSERT_TRUE(q);
  auto devices = discoverDevices(q->qmp());
  ASSERT_TRUE(devices) << devices.error().message();
  std::vector<std::string> names;
  for (auto& d : *devices) names.push_back(d.name);
  EXPECT_NE(std::find(names.begin(), names.end(), "isa-fdc@0x370"), names.end());
  EXPECT_NE(std::find(names.begin(), names.end(), "isa-fdc@0x3f0"), names.end());
}

TEST(QemuReplay, Ne2kProbeWithoutFilterMatchesTheRecordedResponses) {
  auto trace = parse(kNe2kProbe);
  auto q = start(trace.qemu_argv);
  ASSERT_TRUE(q);
  auto report = replayTrace(trace, *q, nullptr);
  ASSERT_TRUE(report) << report.error().message();
  EXPECT_TRUE(report->completed);
  EXPECT_EQ(report->io_requests, 10u);
  EXPECT_EQ(report->forwarded, 10u);
  EXPECT_EQ(report->refused, 0u);
  EXPECT_EQ(report->mismatches, 0u);
  EXPECT_EQ(report->fate.kind, FateKind::Running);
  EXPECT_EQ(report->steps[1].response, 0x802910ecu);
  EXPECT_EQ(report->steps[9].response, 0x80u);
  EXPECT_EQ(q->shutdown().kind, FateKind::Exited);
}

TEST(QemuReplay, ReportsAResponseThatDiffersFromTheRecording) {
  auto trace = parse(
      "outl 0xcf8 0x80002000\n"
      "inl 0xcfc # ret 0x813910ec\n");  // an rtl8139's identity: not what this machine has
  auto q = start(kNe2kMachine);
  ASSERT_TRUE(q);
  auto report = replayTrace(trace, *q, nullptr);
  ASSERT_TRUE(report) << report.error().message();
  EXPECT_EQ(report->mismatches, 1u);
  EXPECT_TRUE(report->steps[1].mismatch);
  EXPECT_EQ(report->steps[1].response, 0x802910ecu);
  EXPECT_EQ(report->steps[1].expected, 0x813910ecu);
}

// A test filter: refuses what `refuse` selects and runs `sideEffect` before judging request N.
class ScriptedFilter : public RequestFilter {
 public:
  std::function<bool(const IoRequest&)> refuse = [](const IoRequest&) { return false; };
  std::function<void(std::size_t)> sideEffect = [](std::size_t) {};
  std::vector<std::uint64_t> responses;
  Verdict onRequest(const IoRequest& r) noexcept override {
    sideEffect(seen++);
    Verdict v;
    if (refuse(r)) v.action = Action::Refuse, v.reason = Reason::Order;
    return v;
  }
  void onResponse(const IoRequest&, std::uint64_t value) noexcept override { responses.push_back(value); }
  std::size_t seen = 0;
};

TEST(QemuReplay, RefusedRequestsAreCompletedLocallyAndComparedWithTriggers) {
  auto trace = parse(kNe2kProbe + "outb 0xc000 0x21 # trigger\n");
  auto q = start(trace.qemu_argv);
  ASSERT_TRUE(q);
  ScriptedFilter filter;
  filter.refuse = [](const IoRequest& r) { return r.addr == 0xc007; };
  auto report = replayTrace(trace, *q, &filter);
  ASSERT_TRUE(report) << report.error().message();
  EXPECT_EQ(report->refused, 1u);
  EXPECT_EQ(report->first_refusal_line, 11u);
  EXPECT_EQ(report->trigger_lines, std::vector<std::size_t>{12});
  EXPECT_TRUE(report->refusedAtOrBeforeTrigger());
  const auto& refused = report->steps[9];
  EXPECT_FALSE(refused.forwarded);
  EXPECT_EQ(refused.response, 0xffu);  // all-ones of a 1-byte read, as Xen completes it
  EXPECT_TRUE(refused.mismatch);       // the recording saw 0x80
  EXPECT_EQ(filter.responses.size(), 3u);  // onResponse only for forwarded reads
}

TEST(QemuReplay, QemuKilledMidReplayIsCrashed) {
  auto trace = parse(kNe2kProbe);
  auto q = start(trace.qemu_argv);
  ASSERT_TRUE(q);
  ScriptedFilter filter;
  const pid_t pid = q->pid();
  filter.sideEffect = [pid](std::size_t n) {
    if (n == 4) ::kill(pid, SIGKILL);
  };
  auto report = replayTrace(trace, *q, &filter);
  ASSERT_TRUE(report) << report.error().message();
  EXPECT_FALSE(report->completed);
  EXPECT_EQ(report->fate.kind, FateKind::Crashed);
  EXPECT_EQ(report->fate.signal, SIGKILL);
  EXPECT_EQ(report->stopped_at_line, 6u);
  ASSERT_EQ(report->steps.size(), 5u);
  EXPECT_TRUE(report->steps[4].forwarded);  // the command QEMU died on did reach it
}

TEST(QemuReplay, StoppedQemuIsHungAfterTheTimeout) {
  auto trace = parse(kNe2kProbe);
  auto q = start(trace.qemu_argv);
  ASSERT_TRUE(q);
  ScriptedFilter filter;
  const pid_t pid = q->pid();
  QemuInstance* qemu = q.get();
  // The short timeout only from the moment QEMU is stopped: a loaded machine must not make the
  // earlier commands look hung.
  filter.sideEffect = [pid, qemu](std::size_t n) {
    if (n == 2) {
      ::kill(pid, SIGSTOP);
      qemu->qtest().setTimeout(300ms);
    }
  };
  auto report = replayTrace(trace, *q, &filter);
  ASSERT_TRUE(report) << report.error().message();
  EXPECT_FALSE(report->completed);
  EXPECT_EQ(report->fate.kind, FateKind::Hung);
  EXPECT_EQ(report->stopped_at_line, 4u);
  EXPECT_NE(report->fate.detail.find("no answer to 'outl 0xcf8 0x80002010'"), std::string::npos) << report->fate.detail;
}

TEST(QemuReplay, QemuThatExitsOnItsOwnIsExited) {
  auto trace = parse("outl 0xcf8 0x80002000\ninl 0xcfc\n");
  auto q = start(kNe2kMachine);
  ASSERT_TRUE(q);
  ScriptedFilter filter;
  QemuInstance* qemu = q.get();
  filter.sideEffect = [qemu](std::size_t n) {
    if (n == 1) (void)qemu->qmp().execute("quit");
  };
  auto report = replayTrace(trace, *q, &filter);
  ASSERT_TRUE(report) << report.error().message();
  EXPECT_EQ(report->fate.kind, FateKind::Exited);
  EXPECT_EQ(report->fate.exit_status, 0);
}

TEST(QemuReplay, ClockStepIsSkippedWithANoteWhenQemuCannotStepTheClock) {
  auto trace = parse("clock_step 1000\noutl 0xcf8 0x80002000\nclock_step\ninl 0xcfc # ret 0x802910ec\n");
  auto q = start(kNe2kMachine);
  ASSERT_TRUE(q);
  auto report = replayTrace(trace, *q, nullptr);
  ASSERT_TRUE(report) << report.error().message();
  EXPECT_TRUE(report->completed);
  EXPECT_EQ(report->mismatches, 0u);
  // Debian's QEMU 7.2 has no qtest accelerator; a build with one steps the clock and skips nothing.
  if (report->skipped) {
    EXPECT_EQ(report->skipped, 2u);
    ASSERT_EQ(report->notes.size(), 1u);
  }
  EXPECT_EQ(report->qemu_errors, 0u);
}

TEST(QemuReplay, GuestRamCommandsAreForwarded) {
  auto trace = parse("write 0x1000 4 0xdeadbeef\nread 0x1000 4\nmemset 0x1000 4 0x11\nb64read 0x1000 4\n");
  auto q = start(kNe2kMachine);
  ASSERT_TRUE(q);
  auto report = replayTrace(trace, *q, nullptr);
  ASSERT_TRUE(report) << report.error().message();
  EXPECT_EQ(report->qemu_errors, 0u);
  EXPECT_EQ(report->io_requests, 0u);
  for (const auto& s : report->steps) EXPECT_TRUE(s.forwarded);
}

TEST(QemuLaunch, UnknownDeviceIsAClearErrorWithQemusOwnWords) {
  LaunchOptions o;
  o.machine_args = {"-machine", "pc", "-nodefaults", "-device", "no-such-device"};
  auto q = QemuInstance::launch(o);
  ASSERT_FALSE(q);
  EXPECT_NE(q.error().what.find("exited with status 1 before it was ready"), std::string::npos) << q.error().message();
  EXPECT_NE(q.error().what.find("'no-such-device' is not a valid device model name"), std::string::npos)
      << q.error().message();
}

TEST(QemuLaunch, ArgumentsThatFightTheControlChannelsAreRefused) {
  LaunchOptions o;
  o.machine_args = {"-machine", "pc", "-qmp", "tcp:0:4444"};
  auto q = QemuInstance::launch(o);
  ASSERT_FALSE(q);
  EXPECT_EQ(q.error().message(),
            "qemu arguments: '-qmp' is set by ioreq-filter itself (QEMU runs paused under qtest with its own QMP "
            "socket); remove it from the machine arguments");
}

TEST(QemuLaunch, AQemuThatNeverOpensItsSocketsIsKilledAfterTheStartupTimeout) {
  // Stands in for a QEMU stuck before creating its sockets.
  const std::string script = testing::TempDir() + "/stuck-qemu.sh";
  {
    std::FILE* f = std::fopen(script.c_str(), "w");
    ASSERT_NE(f, nullptr);
    std::fputs("#!/bin/sh\necho \"$$\" > \"$0.pid\"\nexec sleep 60\n", f);
    std::fclose(f);
    ASSERT_EQ(::chmod(script.c_str(), 0755), 0);
  }
  LaunchOptions o;
  o.binary = script;
  o.startup_timeout = 300ms;
  auto q = QemuInstance::launch(o);
  ASSERT_FALSE(q);
  EXPECT_NE(q.error().what.find("QEMU did not open its qtest/QMP sockets within 300 ms"), std::string::npos)
      << q.error().message();
  // The failed launch did not leave the process behind (on a very loaded machine it may have been
  // killed before it wrote its pid, which proves the same).
  if (std::FILE* pidfile = std::fopen((script + ".pid").c_str(), "r")) {
    int pid = 0;
    const int got = std::fscanf(pidfile, "%d", &pid);
    std::fclose(pidfile);
    if (got == 1 && pid > 0) {
      EXPECT_NE(::kill(pid, 0), 0);
    }
  }
}

TEST(QemuLaunch, MissingBinaryIsAClearError) {
  LaunchOptions o;
  o.binary = "/nonexistent/qemu-system-x86_64";
  auto q = QemuInstance::launch(o);
  ASSERT_FALSE(q);
  EXPECT_EQ(q.error().message(), "/nonexistent/qemu-system-x86_64: cannot execute QEMU: No such file or directory");
}

}  // namespace
}  // namespace iof::qemu
