// `ioreq-filter check` as an administrator runs it: the real binary, a real QEMU for discovery.
#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <sys/wait.h>
#include <unistd.h>

namespace {

struct Run {
  int exit_code = -1;
  std::string out;  // stdout and stderr
};

Run cli(const std::string& args) {
  const std::string cmd = std::string("cd ") + IOREQ_FILTER_SOURCE_DIR + " && timeout 300 " + IOREQ_FILTER_BINARY_DIR +
                          "/bin/ioreq-filter " + args + " 2>&1";
  Run r;
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) return r;
  std::array<char, 4096> buf{};
  std::size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), p)) > 0) r.out.append(buf.data(), n);
  const int status = ::pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

nlohmann::json jsonOf(const Run& r) {
  const auto start = r.out.find('[');
  return nlohmann::json::parse(r.out.substr(start == std::string::npos ? 0 : start));
}

std::string tmpFile(const std::string& name, const std::string& text) {
  const auto path = std::filesystem::temp_directory_path() / ("iof-check-" + std::to_string(::getpid()) + "-" + name);
  std::ofstream(path) << text;
  return path.string();
}

TEST(CheckEndToEnd, RealFloppyTraceIsForwarded) {
  const auto r = cli("check --policy policies/datasheet/floppy-82077aa.json --json tests/data/traces/floppy.qtest");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const auto j = jsonOf(r)[0];
  EXPECT_EQ(j["refusals_total"], 0);
  ASSERT_FALSE(j["devices"].empty());
  EXPECT_GT(j["devices"][0]["forwarded"].get<int>(), 1000);  // the FDC really was driven
}

class FloppyAttack : public ::testing::TestWithParam<const char*> {};

TEST_P(FloppyAttack, RefusedBeforeTheTriggerByTheGraph) {
  const auto r = cli(std::string("check --policy policies/datasheet/floppy-82077aa.json --json tests/data/attacks/") + GetParam());
  ASSERT_EQ(r.exit_code, 3) << r.out;
  const auto j = jsonOf(r)[0];
  EXPECT_TRUE(j["refused_before_trigger"].get<bool>()) << j.dump(2);
  const auto& refused = j["devices"][0]["refused"];
  EXPECT_EQ(refused["stop-gap"], 0);  // the graph itself, not a hand-written rule
  EXPECT_GT(refused["order"].get<int>() + refused["value"].get<int>() + refused["count"].get<int>(), 0);
}

INSTANTIATE_TEST_SUITE_P(Corpus, FloppyAttack,
                         ::testing::Values("fdc-venom-cve-2015-3456.qtest", "fdc-cve-2021-20196.qtest", "fdc-cve-2021-3507.qtest"));

TEST(CheckEndToEnd, VenomIsRefusedByValueAtTheFirstPush) {
  const auto r = cli("check --policy policies/datasheet/floppy-82077aa.json tests/data/attacks/fdc-venom-cve-2015-3456.qtest --show 1");
  ASSERT_EQ(r.exit_code, 3) << r.out;
  EXPECT_NE(r.out.find("REFUSED tests/data/attacks/fdc-venom-cve-2015-3456.qtest:14"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("reason value"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("expected: floppy-82077aa-datasheet:fdc-command/read-id.p1"), std::string::npos) << r.out;
}

TEST(CheckEndToEnd, BindWithoutQemu) {
  const auto r = cli("check --policy policies/datasheet/floppy-82077aa.json --bind floppy=isa:0x3f0 tests/data/attacks/fdc-venom-cve-2015-3456.qtest");
  EXPECT_EQ(r.exit_code, 3) << r.out;
}

TEST(CheckEndToEnd, MonitorModeReportsButForwards) {
  const auto r = cli("check --mode monitor --policy policies/datasheet/floppy-82077aa.json --bind floppy=isa:0x3f0 "
                     "tests/data/attacks/fdc-venom-cve-2015-3456.qtest --show 1");
  EXPECT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("WOULD REFUSE"), std::string::npos) << r.out;
}

// The shipped tree as one --policy-dir (docs/policy-format.md, "Policy sets"): the Linux 6.1 graphs and
// the datasheet model (combine: intersect) both filter the floppy controller, each on its own regions.
TEST(CheckEndToEnd, ShippedPolicyTreeIntersectsTheDatasheetWithTheDriversGraphs) {
  auto r = cli("check --policy-dir policies --json tests/data/traces/floppy.qtest");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  auto j = jsonOf(r)[0];
  EXPECT_EQ(j["refusals_total"], 0);
  std::vector<std::string> sets;
  for (const auto& d : j["devices"]) {
    sets.push_back(d["set"].get<std::string>());
    EXPECT_GT(d["forwarded"].get<int>(), 1000) << d.dump();  // both sets really judged the FDC
  }
  EXPECT_EQ(sets, (std::vector<std::string>{"union", "policies/datasheet"})) << j.dump(2);

  r = cli("check --policy-dir policies --show 1 tests/data/attacks/fdc-venom-cve-2015-3456.qtest");
  ASSERT_EQ(r.exit_code, 3) << r.out;
  EXPECT_NE(r.out.find("trigger line"), std::string::npos) << r.out;
  // The Linux 6.1 driver never starts with READ ID from idle: its graphs refuse the command byte itself
  // (line 12), before the datasheet's value check on the first push (line 14) would.
  EXPECT_NE(r.out.find(": refused before it (first refusal at line 12)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("reason order (graph floppy), refused by policy set union"), std::string::npos) << r.out;
}

// Reproducers from QEMU's bug trackers: lines QEMU's qtest reads by truncating are accepted the same way,
// and the user is told, per line, what was done.
TEST(CheckEndToEnd, LinesReadAsQemuReadsThemWarnTheUser) {
  const auto trace = tmpFile("as-qemu-reads.qtest", "inb 0x3f4\nwriteb 0x1000 0x642a8d58\nwrite 0x2000 4 0x0000030\n");
  auto r = cli("check --policy policies/datasheet/floppy-82077aa.json --bind floppy=isa:0x3f0 " + trace);
  EXPECT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("ioreq-filter check: warning: " + trace + ":2: value 0x642a8d58 truncated to 1 byte (0x58), as QEMU's qtest does"),
            std::string::npos) << r.out;
  EXPECT_NE(r.out.find("ioreq-filter check: warning: " + trace + ":3: data of 'write' has an odd number of hex digits (7)"),
            std::string::npos) << r.out;
  r = cli("check --json --policy policies/datasheet/floppy-82077aa.json --bind floppy=isa:0x3f0 " + trace);
  const auto j = jsonOf(r);
  ASSERT_EQ(j[0]["warnings"].size(), 2u) << r.out;
  EXPECT_EQ(j[0]["warnings"][0], trace + ":2: value 0x642a8d58 truncated to 1 byte (0x58), as QEMU's qtest does");
}

// `-display none` and `-nographic` from a reproducer's command line only concern QEMU's UI: dropped, with a note.
TEST(CheckEndToEnd, DisplayOnlyQemuOptionsAreDroppedWithANote) {
  const auto r = cli("check --policy policies/datasheet/floppy-82077aa.json --qemu-args '-machine pc-i440fx-7.2 -m 256 -nodefaults "
                     "-blockdev driver=null-co,node-name=fd0,size=1474560,read-zeroes=on -device floppy,unit=0,drive=fd0 "
                     "-display none -nographic' tests/data/traces/floppy.qtest");
  EXPECT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("ioreq-filter check: note: --qemu-args: dropped '-display none'"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("ioreq-filter check: note: --qemu-args: dropped '-nographic'"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("filtered: isa-fdc@0x3f0"), std::string::npos) << r.out;  // the machine came up
}

// Fail closed: policies that match none of the machine's devices would pass every request unchecked;
// check says so and exits 2 instead of reporting "refused 0" with exit 0.
TEST(CheckEndToEnd, PoliciesMatchingNoDeviceAreAnError) {
  auto r = cli("check --policy policies/linux-6.1/e1000.json tests/data/attacks/fdc-venom-cve-2015-3456.qtest");
  EXPECT_EQ(r.exit_code, 2) << r.out;
  EXPECT_NE(r.out.find("fdc-venom-cve-2015-3456.qtest: no policy matches any of the machine's"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("devices, so nothing would be filtered (policies: e1000)"), std::string::npos) << r.out;
}

TEST(CheckEndToEnd, BadInputsExitTwoWithWhereAndWhy) {
  auto r = cli("check --policy policies/datasheet/floppy-82077aa.json /nonexistent.qtest");
  EXPECT_EQ(r.exit_code, 2) << r.out;

  const auto bad_trace = tmpFile("bad.qtest", "# qemu: -machine pc\noutb 0x3f5\n");
  r = cli("check --policy policies/datasheet/floppy-82077aa.json " + bad_trace);
  EXPECT_EQ(r.exit_code, 2) << r.out;
  EXPECT_NE(r.out.find(bad_trace + ":2"), std::string::npos) << r.out;

  const auto bad_policy = tmpFile("bad.json", "{\n  \"format\": \"ioreq-filter-policy\",\n  \"version\": 2\n}\n");
  r = cli("check --policy " + bad_policy + " tests/data/traces/floppy.qtest");
  EXPECT_EQ(r.exit_code, 2) << r.out;
  EXPECT_NE(r.out.find(bad_policy + ":3:14"), std::string::npos) << r.out;

  r = cli("check tests/data/traces/floppy.qtest");
  EXPECT_EQ(r.exit_code, 2) << r.out;
  EXPECT_NE(r.out.find("no policies"), std::string::npos) << r.out;

  r = cli("check --policy policies/datasheet/floppy-82077aa.json --bind floppy=isa:zz tests/data/traces/floppy.qtest");
  EXPECT_EQ(r.exit_code, 2) << r.out;
  EXPECT_NE(r.out.find("--bind floppy=isa:zz"), std::string::npos) << r.out;

  const auto headerless = tmpFile("headerless.qtest", "outb 0x3f5 0x0a\n");
  r = cli("check --policy policies/datasheet/floppy-82077aa.json " + headerless);
  EXPECT_EQ(r.exit_code, 2) << r.out;
  EXPECT_NE(r.out.find("no '# qemu:' header"), std::string::npos) << r.out;

  r = cli("check --policy policies/datasheet/floppy-82077aa.json --qemu-args '-device no-such-device' tests/data/traces/floppy.qtest");
  EXPECT_NE(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("no-such-device"), std::string::npos) << r.out;
}

TEST(PolicyCli, ValidateShowDot) {
  auto r = cli("policy validate policies/datasheet/floppy-82077aa.json");
  EXPECT_EQ(r.exit_code, 0) << r.out;
  r = cli("policy show policies/datasheet/floppy-82077aa.json");
  EXPECT_NE(r.out.find("208 nodes"), std::string::npos) << r.out;
  r = cli("policy dot policies/datasheet/floppy-82077aa.json");
  EXPECT_NE(r.out.find("digraph"), std::string::npos);
  const auto bad_policy = tmpFile("bad2.json", "{\"format\": \"ioreq-filter-policy\", \"version\": 1, \"device\": 5}");
  r = cli("policy validate " + bad_policy);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.out.find(bad_policy + ":1:"), std::string::npos) << r.out;
}

}  // namespace

namespace {
TEST(CheckEndToEnd, TriggerVerdictDoesNotDependOnHowManyRefusalsArePrinted) {
  const auto r = cli("check --policy policies/datasheet/floppy-82077aa.json --bind floppy=isa:0x3f0 --show 0 "
                     "tests/data/attacks/fdc-venom-cve-2015-3456.qtest");
  EXPECT_EQ(r.exit_code, 3) << r.out;
  EXPECT_NE(r.out.find("refused before it (first refusal at line 14)"), std::string::npos) << r.out;
}
}  // namespace

// `check --regions` on QEMU 7.2's real layout: every BAR of a filtered device is accounted for. The BARs a
// policy does not name must show as refused (the engine's guards); were the guards missing, they would not
// be listed at all and these tests fail.
namespace {

const nlohmann::json* regionsOf(const nlohmann::json& trace_report, const std::string& device_prefix) {
  for (const auto& d : trace_report["regions"])
    if (d["device"].get<std::string>().rfind(device_prefix, 0) == 0) return &d;
  return nullptr;
}

// The rows of one BAR, in the report's order.
std::vector<nlohmann::json> barRows(const nlohmann::json& device, int bar) {
  std::vector<nlohmann::json> out;
  for (const auto& row : device["regions"])
    if (row["bar"].is_number() && row["bar"].get<int>() == bar) out.push_back(row);
  return out;
}

// `check ARGS --regions --json`: the regions report of the device whose name starts with `device`.
// Empty (and a test failure naming check's output) if check exited otherwise than `exit_code` or the
// device is not in the report.
nlohmann::json deviceRegions(const std::string& args, int exit_code, const std::string& device) {
  const auto r = cli("check " + args + " --regions --json");
  EXPECT_EQ(r.exit_code, exit_code) << r.out;
  if (r.exit_code != exit_code) return nlohmann::json::object();
  const auto report = jsonOf(r);
  const auto* dev = regionsOf(report[0], device);
  EXPECT_NE(dev, nullptr) << r.out;
  return dev ? *dev : nlohmann::json::object();
}

std::string shippedPolicyWith(const std::string& shipped, const std::string& name, const nlohmann::json& extra_region) {
  std::ifstream in(std::string(IOREQ_FILTER_SOURCE_DIR) + "/" + shipped);
  auto policy = nlohmann::json::parse(in);
  policy["device"]["regions"].push_back(extra_region);
  return tmpFile(name, policy.dump(2));
}

TEST(CheckRegions, Rtl8139IoBarIsRefusedBesideTheFilteredMmioBar) {
  const auto dev = deviceRegions("--policy policies/linux-6.1/rtl8139.json tests/data/traces/rtl8139.qtest", 0, "rtl8139@00:04.0");
  ASSERT_FALSE(dev.empty());
  const auto io = barRows(dev, 0);
  ASSERT_EQ(io.size(), 1u) << dev.dump(2);
  EXPECT_EQ(io[0]["space"], "io");
  EXPECT_EQ(io[0]["bar_size"], 0x100);
  EXPECT_EQ(io[0]["status"], "refused: uncovered");
  EXPECT_EQ(io[0]["reason"], "no policy region names BAR0");
  const auto mmio = barRows(dev, 1);
  ASSERT_EQ(mmio.size(), 1u) << dev.dump(2);  // the region spans the whole BAR: no tail
  EXPECT_EQ(mmio[0]["name"], "mmio1");
  EXPECT_EQ(mmio[0]["status"], "filtered");
  EXPECT_EQ(mmio[0]["graphs"], nlohmann::json::array({"8139cp"}));
  EXPECT_FALSE(mmio[0]["address"].is_null()) << "the trace programs and enables BAR1";
  EXPECT_EQ(dev.at("regions").back()["name"], "config space");
  EXPECT_EQ(dev.at("regions").back()["reason"], "built-in PCI-core config rules");

  const auto text = cli("check --policy policies/linux-6.1/rtl8139.json --regions tests/data/traces/rtl8139.qtest");
  EXPECT_NE(text.out.find("  regions of rtl8139@00:04.0 (10ec:8139 at 0000:00:04.0) <- policies/linux-6.1/rtl8139.json:\n"),
            std::string::npos) << text.out;
  EXPECT_NE(text.out.find("    BAR0 (uncovered): BAR0 io +0x0..+0xff of 0x100, "), std::string::npos) << text.out;
  EXPECT_NE(text.out.find(" - refused: uncovered (no policy region names BAR0)\n"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find(" - filtered (graph 8139cp)\n"), std::string::npos) << text.out;
}

TEST(CheckRegions, Vmxnet3MsixBarIsRefusedUnlessDeclaredPass) {
  // The recorded Linux guest reaches BAR0 (interrupt masks, doorbells) and the MSI-X BAR, which the shipped
  // policy does not name: those requests are refused as uncovered-region, so check exits 3.
  const auto dev = deviceRegions("--policy policies/linux-6.1/vmxnet3.json tests/data/traces/vmxnet3.qtest", 3, "vmxnet3@00:04.0");
  ASSERT_FALSE(dev.empty());
  for (int bar : {0, 2}) {
    const auto rows = barRows(dev, bar);
    ASSERT_EQ(rows.size(), 1u) << "BAR" << bar << ": " << dev.dump(2);
    EXPECT_EQ(rows[0]["status"], "refused: uncovered") << rows[0].dump();
  }
  const auto vd = barRows(dev, 1);
  ASSERT_FALSE(vd.empty());
  EXPECT_EQ(vd[0]["status"], "filtered");

  // The policy's own words for a pass region are what the report shows.
  const std::string why = "MSI-X table and PBA, written by the kernel's PCI core (test)";
  const auto bar2 = barRows(dev, 2)[0];
  const auto pass_policy = shippedPolicyWith("policies/linux-6.1/vmxnet3.json", "vmxnet3-msix-pass.json",
                                             {{"name", "msix"}, {"space", "mem"}, {"bar", 2}, {"length", bar2["bar_size"]},
                                              {"pass", {{"reason", why}}}});
  const auto passed = deviceRegions("--policy " + pass_policy + " tests/data/traces/vmxnet3.qtest", 3,  // BAR0 still refused
                                    "vmxnet3@00:04.0");
  ASSERT_FALSE(passed.empty());
  const auto msix = barRows(passed, 2);
  ASSERT_EQ(msix.size(), 1u) << passed.dump(2);
  EXPECT_EQ(msix[0]["name"], "msix");
  EXPECT_EQ(msix[0]["status"], "pass");
  EXPECT_EQ(msix[0]["reason"], why);
  EXPECT_EQ(barRows(passed, 0)[0]["status"], "refused: uncovered");  // declaring one BAR opens no other
}

TEST(CheckRegions, E100TailPastTheRegionIsRefused) {
  const auto dev = deviceRegions("--policy policies/linux-6.1/e100.json tests/data/traces/e100.qtest", 0, "i82557b@00:04.0");
  ASSERT_FALSE(dev.empty());
  const auto bar0 = barRows(dev, 0);
  ASSERT_EQ(bar0.size(), 2u) << dev.dump(2);
  EXPECT_EQ(bar0[0]["name"], "mmio0");
  EXPECT_EQ(bar0[0]["status"], "filtered");
  EXPECT_EQ(bar0[1]["name"], "BAR0 tail");
  EXPECT_EQ(bar0[1]["offset"], 0x20);
  EXPECT_EQ(bar0[1]["length"], bar0[1]["bar_size"].get<std::uint64_t>() - 0x20);
  EXPECT_EQ(bar0[1]["status"], "refused: uncovered");
}

TEST(CheckRegions, PolicyRegionOnAMissingBarIsUnbound) {
  const auto policy = shippedPolicyWith("policies/linux-6.1/rtl8139.json", "rtl8139-bar5.json",
                                        {{"name", "ghost"}, {"space", "mem"}, {"bar", 5}, {"length", 16}});
  const auto dev = deviceRegions("--policy " + policy + " tests/data/traces/rtl8139.qtest", 0, "rtl8139@00:04.0");
  ASSERT_FALSE(dev.empty());
  const auto ghost = barRows(dev, 5);
  ASSERT_EQ(ghost.size(), 1u) << dev.dump(2);
  EXPECT_EQ(ghost[0]["status"], "unbound");
  EXPECT_EQ(ghost[0]["reason"], "BAR5 is not implemented by this device instance");
  EXPECT_TRUE(ghost[0]["address"].is_null());
}

// Both shipped floppy policies: the Linux 6.1 union's one window and the datasheet set's two, each judged.
TEST(CheckRegions, ShippedFloppySetsEachListTheirOwnWindows) {
  const auto r = cli("check --policy-dir policies --regions --json tests/data/traces/floppy.qtest");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  std::map<std::string, std::vector<std::string>> windows;  // set -> "name status address"
  const auto report = jsonOf(r);
  for (const auto& d : report[0]["regions"])
    for (const auto& row : d["regions"])
      windows[d["set"].get<std::string>()].push_back(row["name"].get<std::string>() + " " + row["status"].get<std::string>() + " " +
                                                     std::to_string(row["address"].get<std::uint64_t>()));
  EXPECT_EQ(windows["union"], (std::vector<std::string>{"io filtered 1008"})) << r.out;
  EXPECT_EQ(windows["policies/datasheet"], (std::vector<std::string>{"fdc filtered 1008", "dir filtered 1015"})) << r.out;
}

TEST(CheckRegions, BindSaysItCannotShowTheMachinesOtherBars) {
  auto r = cli("check --policy policies/linux-6.1/rtl8139.json --bind rtl8139=pci:00:04.0 --regions tests/data/traces/rtl8139.qtest");
  EXPECT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("note: --regions with --bind shows the BARs the policy names"), std::string::npos) << r.out;
  r = cli("check --policy policies/linux-6.1/rtl8139.json --regions /nonexistent.qtest");
  EXPECT_EQ(r.exit_code, 2) << r.out;
  EXPECT_NE(r.out.find("/nonexistent.qtest"), std::string::npos) << r.out;
}

}  // namespace
