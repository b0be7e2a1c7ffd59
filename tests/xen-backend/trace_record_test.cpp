// `ioreq-filterd --record`: what the daemon writes must read back, through the repo's own trace
// parser, as the very requests the daemon saw (PCI config through the CF8 latch as Xen decodes it).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "ioreq_filter/core/bus.h"
#include "ioreq_filter/daemon/trace_record.h"
#include "ioreq_filter/trace/trace.h"
#include "test_support.h"

namespace iof {
namespace {

using daemon::TraceRecord;
using test::pio;

bool sameRequest(const IoRequest& a, const IoRequest& b) {
  return a.type == b.type && a.addr == b.addr && a.size == b.size && a.dir == b.dir && a.count == b.count &&
         (a.dir == Dir::Read || a.data == b.data) && a.vcpu == b.vcpu;
}

// Parses `text` and turns its commands back into requests, CF8/CFC pairs folded into PCI_CONFIG.
std::vector<std::pair<IoRequest, std::optional<std::uint64_t>>> readBack(const std::string& text) {
  auto trace = parseTrace(text, "recorded.qtest");
  EXPECT_TRUE(trace) << (trace ? "" : trace.error().message());
  if (!trace) return {};
  auto bus = DeviceBus::create({});
  EXPECT_TRUE(bus);
  std::vector<std::pair<IoRequest, std::optional<std::uint64_t>>> out;
  for (const auto& c : trace->commands) {
    auto r = toIoRequest(c);
    if (!r) continue;
    r->vcpu = c.cpu;
    IoRequest config;
    if (bus->decodeConfigCycle(*r, config)) {
      config.vcpu = c.cpu;
      out.emplace_back(config, c.ret);
      continue;
    }
    (void)bus->route(*r);  // keeps the CF8 latch
    if (r->type == IoType::Pio && r->addr == 0xcf8 && r->size == 4) continue;
    out.emplace_back(*r, c.ret);
  }
  return out;
}

TEST(TraceRecord, PortMmioAndConfigRequestsReadBackAsTheSameRequests) {
  IoRequest cfg;
  cfg.type = IoType::PciConfig;
  cfg.addr = pciConfigAddress(Sbdf{0, 0, 4, 0}, 0x12);
  cfg.size = 2;
  cfg.dir = Dir::Write;
  cfg.data = 0xc000;
  cfg.vcpu = 1;
  IoRequest cfg_read = cfg;
  cfg_read.dir = Dir::Read;
  cfg_read.addr = pciConfigAddress(Sbdf{0, 0, 1, 1}, 0x0);
  cfg_read.size = 4;
  const std::vector<TraceRecord> seen{
      {pio(0x3f5, Dir::Write, 1, 0x0a), 0, false},
      {pio(0x3f4, Dir::Read), 0x80, true},
      {test::mmio(0xfebf0000, Dir::Write, 4, 0xdeadbeef), 0, false},
      {test::mmio(0xfebf0008, Dir::Read, 8), 0x1122334455667788, true},
      {cfg, 0, false},
      {cfg_read, 0x70108086, true},
      {pio(0x1f0, Dir::Read, 2), 0, false},  // refused: no answer recorded
  };
  std::string text;
  for (const auto& r : seen) text += daemon::traceLines(r);
  const auto back = readBack(text);
  ASSERT_EQ(back.size(), seen.size()) << text;
  for (std::size_t i = 0; i < seen.size(); ++i) {
    EXPECT_TRUE(sameRequest(back[i].first, seen[i].request)) << "entry " << i << ": " << describe(back[i].first)
                                                             << " vs " << describe(seen[i].request) << "\n" << text;
    EXPECT_EQ(back[i].second.has_value(), seen[i].has_ret) << "entry " << i;
    if (seen[i].has_ret && back[i].second) {
      EXPECT_EQ(*back[i].second, seen[i].ret);
    }
  }
}

TEST(TraceRecord, ValueRepsBecomeOneLinePerRepAndMemoryRepsAComment) {
  IoRequest rep = test::mmio(0xa0000, Dir::Write, 2, 0x0720);
  rep.count = 3;
  const auto lines = daemon::traceLines({rep, 0, false});
  EXPECT_EQ(lines, "writew 0xa0000 0x720 # cpu 0\nwritew 0xa0002 0x720 # cpu 0\nwritew 0xa0004 0x720 # cpu 0\n");
  IoRequest ins = pio(0x511, Dir::Read, 1, 0x100000);
  ins.count = 4096;
  ins.data_is_ptr = true;
  const auto c = daemon::traceLines({ins, 0, false});
  EXPECT_EQ(c.rfind("# not expressible (REP transfer from/to guest memory): ", 0), 0u) << c;
  auto parsed = parseTrace(c + "outb 0x80 0x0\n", "x");  // a comment, then a command: still one trace
  ASSERT_TRUE(parsed) << parsed.error().message();
  EXPECT_EQ(parsed->commands.size(), 1u);
  IoRequest ext;
  ext.type = IoType::PciConfig;
  ext.addr = pciConfigAddress(Sbdf{0, 0, 3, 0}, 0x100);
  ext.size = 4;
  EXPECT_EQ(daemon::traceLines({ext, 0, false}).rfind("# not expressible (needs ECAM", 0), 0u);
}

TEST(TraceRecord, TheFileAppearsUnderItsNameOnlyWhenClosed) {
  const auto dir = std::filesystem::temp_directory_path() / ("iof-trace-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "rec.qtest").string();
  auto f = daemon::TraceFile::open(path, "unit test");
  ASSERT_TRUE(f) << f.error().message();
  daemon::TraceRing ring;
  ring.push({pio(0x3f2, Dir::Write, 1, 0x0c), 0, false});
  f->drain(ring);
  EXPECT_FALSE(std::filesystem::exists(path));
  EXPECT_TRUE(std::filesystem::exists(path + ".tmp"));
  ring.push({pio(0x3f4, Dir::Read), 0x80, true});
  ASSERT_TRUE(f->close(ring));
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
  auto t = loadTrace(path);
  ASSERT_TRUE(t) << t.error().message();
  ASSERT_EQ(t->commands.size(), 2u);
  EXPECT_EQ(t->commands[1].ret, std::optional<std::uint64_t>(0x80));
  EXPECT_EQ(f->lines(), 2u);
  std::filesystem::remove_all(dir);
}

TEST(TraceRecord, AnUnwritableDestinationIsAClearError) {
  auto f = daemon::TraceFile::open("/nonexistent-dir/rec.qtest", "unit test");
  ASSERT_FALSE(f);
  EXPECT_NE(f.error().message().find("/nonexistent-dir/rec.qtest.tmp"), std::string::npos) << f.error().message();
  EXPECT_NE(f.error().message().find("No such file"), std::string::npos) << f.error().message();
}

}  // namespace
}  // namespace iof
