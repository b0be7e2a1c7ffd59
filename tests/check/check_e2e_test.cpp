// `ioreq-filter check` as an administrator runs it: the real binary, a real QEMU for discovery.
#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
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
