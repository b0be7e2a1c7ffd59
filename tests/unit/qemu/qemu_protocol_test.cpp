// The qtest/QMP clients and discovery parsers against scripted peers and captured QEMU 7.2 output.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>

#include "ioreq_filter/qemu/discovery.h"
#include "ioreq_filter/qemu/qemu_instance.h"
#include "ioreq_filter/qemu/qmp_client.h"
#include "ioreq_filter/qemu/qtest_client.h"

namespace iof::qemu {
namespace {

using namespace std::chrono_literals;

// A connected pair: the client end goes into a LineChannel, the test plays QEMU on the other.
struct ScriptedPeer {
  int peer = -1;
  std::unique_ptr<LineChannel> channel;
  explicit ScriptedPeer(const std::string& name) {
    int fds[2];
    EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
    channel = std::make_unique<LineChannel>(fds[0], name);
    peer = fds[1];
  }
  ~ScriptedPeer() {
    if (peer >= 0) ::close(peer);
  }
  void say(const std::string& text) { ASSERT_EQ(::write(peer, text.data(), text.size()), ssize_t(text.size())); }
  std::string heard() {
    char buf[4096];
    const ssize_t n = ::recv(peer, buf, sizeof buf, MSG_DONTWAIT);
    return n > 0 ? std::string(buf, std::size_t(n)) : std::string();
  }
  void hangUp() {
    ::close(peer);
    peer = -1;
  }
};

TEST(QtestReply, ParsesOkValueErrAndFail) {
  auto ok = QtestClient::parseReply("OK");
  ASSERT_TRUE(ok);
  EXPECT_TRUE(ok->ok);
  EXPECT_FALSE(ok->value);
  auto v = QtestClient::parseReply("OK 0x802910ec");
  EXPECT_EQ(v->value, 0x802910ecu);
  auto wide = QtestClient::parseReply("OK 0x0000000000000000ffffffffffffffff");
  EXPECT_EQ(wide->value, 0xffffffffffffffffu);
  auto data = QtestClient::parseReply("OK 0x00112233445566778899");
  EXPECT_TRUE(data->ok);
  EXPECT_FALSE(data->value);  // a RAM read's bytes, not a register value
  auto err = QtestClient::parseReply("ERR invalid argument size");
  EXPECT_FALSE(err->ok);
  auto unknown = QtestClient::parseReply("FAIL Unknown command 'clock_step'");
  EXPECT_FALSE(unknown->ok);
  auto garbage = QtestClient::parseReply("HELLO");
  ASSERT_FALSE(garbage);
  EXPECT_EQ(garbage.error().message(), "qtest: protocol error: unexpected reply 'HELLO'");
}

TEST(QtestClient, CollectsIrqLinesAndReturnsTheReply) {
  ScriptedPeer qemu("qtest");
  QtestClient client(std::move(qemu.channel), 2s);
  qemu.say("IRQ raise 6\nOK 0x80\n");
  auto r = client.command("inb 0x3f4");
  ASSERT_TRUE(r) << r.error().error.message();
  EXPECT_EQ(r->value, 0x80u);
  EXPECT_EQ(qemu.heard(), "inb 0x3f4\n");
  ASSERT_EQ(client.irqEvents().size(), 1u);
  EXPECT_EQ(client.irqEvents()[0], "IRQ raise 6");
}

TEST(QtestClient, SilenceIsATimeoutAndHangUpIsClosed) {
  ScriptedPeer qemu("qtest");
  QtestClient client(std::move(qemu.channel), 50ms);
  auto silent = client.command("inb 0x3f4");
  ASSERT_FALSE(silent);
  EXPECT_EQ(silent.error().kind, ChannelFailure::Timeout);
  qemu.hangUp();
  auto closed = client.command("inb 0x3f4");
  ASSERT_FALSE(closed);
  EXPECT_EQ(closed.error().kind, ChannelFailure::Closed);
  EXPECT_EQ(closed.error().error.message(), "qtest: QEMU closed the connection");
}

constexpr const char* kGreeting =
    R"({"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": ""}, "capabilities": ["oob"]}})"
    "\r\n";

TEST(QmpClient, NegotiatesSkipsEventsAndReturnsResults) {
  ScriptedPeer qemu("qmp");
  QmpClient client(std::move(qemu.channel), 2s);
  qemu.say(std::string(kGreeting) + "{\"return\": {}}\r\n");
  ASSERT_TRUE(client.handshake());
  EXPECT_EQ(qemu.heard(), "{\"execute\":\"qmp_capabilities\"}\n");
  qemu.say("{\"event\": \"STOP\", \"timestamp\": {}}\r\n{\"return\": [1, 2]}\r\n");
  auto r = client.execute("query-pci");
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->size(), 2u);
  EXPECT_EQ(client.events().size(), 1u);
}

TEST(QmpClient, ReportsQemusErrorClassAndDescription) {
  ScriptedPeer qemu("qmp");
  QmpClient client(std::move(qemu.channel), 2s);
  qemu.say(R"({"error": {"class": "GenericError", "desc": "Device 'x' not found"}})" "\n");
  auto r = client.execute("qom-get", {{"path", "x"}, {"property", "addr"}});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().message(), "qmp qom-get: QEMU refused: GenericError: Device 'x' not found");
}

TEST(QmpClient, MalformedGreetingIsAClearError) {
  ScriptedPeer qemu("qmp");
  QmpClient client(std::move(qemu.channel), 2s);
  qemu.say("{\"QMP\": {\"version\"\n");
  auto r = client.handshake();
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().message(), "qmp: malformed message (not a JSON object): '{\"QMP\": {\"version\"'");
}

TEST(QmpClient, AGreetingThatIsNotQmpIsRejected) {
  ScriptedPeer qemu("qmp");
  QmpClient client(std::move(qemu.channel), 2s);
  qemu.say("{\"hello\": 1}\n");
  auto r = client.handshake();
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().message(), "qmp: expected the QMP greeting, got '{\"hello\":1}'");
}

TEST(QmpClient, ReplyWithoutReturnOrErrorIsRejected) {
  ScriptedPeer qemu("qmp");
  QmpClient client(std::move(qemu.channel), 2s);
  qemu.say("{\"id\": 3}\n[1]\n");
  auto r = client.execute("query-pci");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().message(), "qmp query-pci: malformed reply (neither return, error nor event): '{\"id\":3}'");
  auto array = client.execute("query-pci");
  ASSERT_FALSE(array);
  EXPECT_EQ(array.error().message(), "qmp query-pci: malformed message (not a JSON object): '[1]'");
}

TEST(QmpClient, SilentPeerTimesOut) {
  ScriptedPeer qemu("qmp");
  QmpClient client(std::move(qemu.channel), 50ms);
  auto r = client.handshake();
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().message(), "qmp: no answer from QEMU before the deadline");
}

// Captured from QEMU 7.2 `-machine pc -nodefaults -device ne2k_pci,addr=04.0` under -S (trimmed).
constexpr const char* kQueryPci = R"([{"bus": 0, "devices": [
  {"irq_pin": 0, "bus": 0, "qdev_id": "", "slot": 0, "class_info": {"class": 1536, "desc": "Host bridge"},
   "id": {"device": 4663, "subsystem-vendor": 6900, "vendor": 32902, "subsystem": 4352}, "function": 0, "regions": []},
  {"irq_pin": 1, "bus": 0, "qdev_id": "", "irq": 0, "slot": 4, "class_info": {"class": 512, "desc": "Ethernet controller"},
   "id": {"device": 32809, "subsystem-vendor": 6900, "vendor": 4332, "subsystem": 4352}, "function": 0,
   "regions": [{"bar": 0, "size": 256, "address": -1, "type": "io"},
               {"prefetch": false, "mem_type_64": false, "bar": 6, "size": 262144, "address": -1, "type": "memory"}]}]}])";

TEST(Discovery, ParsesQueryPci) {
  auto devices = parseQueryPci(nlohmann::json::parse(kQueryPci));
  ASSERT_TRUE(devices) << devices.error().message();
  ASSERT_EQ(devices->size(), 2u);
  const auto& ne2k = (*devices)[1];
  EXPECT_EQ(ne2k.sbdf, (Sbdf{0, 0, 4, 0}));
  EXPECT_EQ(ne2k.pci->vendor, 0x10ec);
  EXPECT_EQ(ne2k.pci->device, 0x8029);
  EXPECT_EQ(ne2k.pci->class_code, 0x020000u);
  EXPECT_EQ(ne2k.pci->subsystem_vendor, 0x1af4);
  EXPECT_EQ(ne2k.bars[0].kind, BarKind::Io);
  EXPECT_EQ(ne2k.bars[0].size, 256u);
  EXPECT_EQ(ne2k.bars[0].address, 0u);
  for (int i = 1; i < 6; ++i) EXPECT_EQ(ne2k.bars[i].kind, BarKind::None);
}

TEST(Discovery, MalformedQueryPciIsAClearError) {
  auto notArray = parseQueryPci(nlohmann::json::parse(R"({"bus": 0})"));
  ASSERT_FALSE(notArray);
  EXPECT_EQ(notArray.error().message(), "qmp query-pci: reply is not an array");
  auto noDevices = parseQueryPci(nlohmann::json::parse(R"([{"bus": 0}])"));
  ASSERT_FALSE(noDevices);
  EXPECT_EQ(noDevices.error().message(), "qmp query-pci: a bus without a 'devices' array: {\"bus\":0}");
  auto badVendor = parseQueryPci(nlohmann::json::parse(
      R"([{"devices": [{"bus": 0, "slot": 4, "function": 0, "class_info": {"class": 512}, "id": {"vendor": "x", "device": 1}}]}])"));
  ASSERT_FALSE(badVendor);
  EXPECT_NE(badVendor.error().what.find("'vendor' is not a number: \"x\""), std::string::npos);
  auto badSlot = parseQueryPci(nlohmann::json::parse(
      R"([{"devices": [{"bus": 0, "slot": 40, "function": 0, "class_info": {"class": 512}, "id": {"vendor": 1, "device": 1}}]}])"));
  ASSERT_FALSE(badSlot);
  EXPECT_EQ(badSlot.error().what, "bus/slot/function out of range");
}

// Captured from `info mtree -f -o` of QEMU 7.2 (trimmed).
constexpr const char* kMtree =
    "FlatView #0\n"
    " AS \"I/O\", root: io\n"
    " Root memory region: io\n"
    "  0000000000000000-0000000000000007 (prio 0, i/o): dma-chan owner:{dev path=/machine/unattached/device[4]}\n"
    "  0000000000000008-000000000000000f (prio 0, i/o): dma-cont owner:{dev path=/machine/unattached/device[4]}\n"
    "  0000000000000377-00000000000003f0 (prio 0, i/o): io @0000000000000377 parent:{obj path=/machine/unattached}\n"
    "  00000000000003f1-00000000000003f5 (prio 0, i/o): fdc owner:{dev path=/machine/unattached/device[12]}\n"
    "  00000000000003f6-00000000000003f6 (prio 0, i/o): ide parent:{obj path=/machine/unattached}\n"
    "  00000000000003f7-00000000000003f7 (prio 0, i/o): fdc owner:{dev path=/machine/unattached/device[12]}\n"
    "\n"
    "FlatView #1\n"
    " AS \"memory\", root: system\n"
    " Root memory region: system\n"
    "  00000000000a0000-00000000000bffff (prio 1, i/o): vga-lowmem owner:{dev path=/machine/unattached/device[12]}\n";

TEST(Discovery, ParsesIoOwnersFromTheFlatView) {
  auto owners = parseIoOwners(kMtree);
  ASSERT_TRUE(owners) << owners.error().message();
  ASSERT_EQ(owners->size(), 3u);
  EXPECT_EQ((*owners)[0].first, "/machine/unattached/device[4]");
  EXPECT_EQ((*owners)[0].second.base, 0u);
  EXPECT_EQ((*owners)[0].second.length, 16u);  // adjacent ranges of one owner merged
  EXPECT_EQ((*owners)[1].first, "/machine/unattached/device[12]");
  EXPECT_EQ((*owners)[1].second.base, 0x3f1u);
  EXPECT_EQ((*owners)[1].second.length, 5u);
  EXPECT_EQ((*owners)[2].second.base, 0x3f7u);  // memory-space ranges of the same owner are not ports
}

TEST(Discovery, MtreeWithoutAnIoViewIsAClearError) {
  auto owners = parseIoOwners("FlatView #0\n AS \"memory\", root: system\n");
  ASSERT_FALSE(owners);
  EXPECT_EQ(owners.error().message(), "info mtree: no flat view of the \"I/O\" address space in the output");
}

TEST(MachineArgs, DisplayOnlyOptionsAreDroppedWithANote) {
  auto m = dropDisplayOptions({"-machine", "pc", "-display", "none", "-nographic", "--display", "sdl", "-vga", "std"}, "x");
  ASSERT_TRUE(m) << m.error().message();
  const std::vector<std::string> kept{"-machine", "pc", "-vga", "std"};  // -vga adds a device: kept
  EXPECT_EQ(m->args, kept);
  ASSERT_EQ(m->notes.size(), 3u);
  EXPECT_EQ(m->notes[0].rfind("dropped '-display none': it only selects QEMU's user interface", 0), 0u) << m->notes[0];
  EXPECT_EQ(m->notes[1].rfind("dropped '-nographic'", 0), 0u) << m->notes[1];
  EXPECT_EQ(m->notes[2].rfind("dropped '--display sdl'", 0), 0u) << m->notes[2];
}

TEST(MachineArgs, DisplayWithoutAValueIsAnError) {
  auto m = dropDisplayOptions({"-machine", "pc", "-display"}, "t.qtest:1");
  ASSERT_FALSE(m);
  EXPECT_EQ(m.error().message(), "t.qtest:1: '-display' without a value (e.g. -display none)");
}

}  // namespace
}  // namespace iof::qemu
