// The policy format: every malformed document is refused with file:line:column and the reason.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <unistd.h>

#include "ioreq_filter/policy/policy_json.h"

namespace iof {
namespace {

// A minimal valid policy; tests replace one piece of it.
const char* kValid = R"({
  "format": "ioreq-filter-policy",
  "version": 1,
  "device": {
    "name": "toy",
    "match": {"isa": {"kind": "toy", "base": "0x100"}},
    "regions": [{"name": "io", "space": "io", "base": "0x100", "length": 8}]
  },
  "graphs": [{
    "name": "g",
    "channels": [{
      "name": "cmd",
      "nodes": [
        {"id": "cmd", "region": "io", "offset": 5, "size": 1, "dir": "write", "value": {"exact": "0x0a"}},
        {"id": "param", "region": "io", "offset": "0x5", "size": 1, "dir": "write", "repeat": 3},
        {"id": "r1", "region": "io", "offset": 5, "size": 1, "dir": "read"}
      ],
      "edges": [["cmd", "param"], ["param", "r1"]],
      "entries": ["cmd"],
      "exits": ["r1"]
    }],
    "anywhere": [{"id": "status", "region": "io", "offset": 4, "dir": "read"}]
  }],
  "rules": [{"id": "flood", "after": {"region": "io", "offset": 5, "dir": "write", "value": {"exact": 10}},
             "then": {"region": "io", "offset": 5, "dir": "write"}, "max": 8}]
})";

std::string replace(std::string text, const std::string& from, const std::string& to) {
  const auto pos = text.find(from);
  if (pos == std::string::npos) throw std::runtime_error("test bug: '" + from + "' not in the document");
  return text.replace(pos, from.size(), to);
}

TEST(PolicyJson, ParsesTheValidDocument) {
  auto p = parsePolicy(kValid, "toy.json");
  ASSERT_TRUE(p.has_value()) << p.error().message();
  EXPECT_EQ(p->name, "toy");
  ASSERT_EQ(p->graphs.size(), 1u);
  const auto& c = p->graphs[0].channels[0];
  EXPECT_EQ(c.nodes.size(), 3u);
  ASSERT_EQ(c.loops.size(), 1u);  // "repeat": 3 became a bounded self-loop
  EXPECT_EQ(c.loops[0].max_iterations, 3u);
  EXPECT_EQ(c.edges.size(), 3u);
  EXPECT_EQ(p->rules[0].max, 8u);
  EXPECT_EQ(p->source, "toy.json");
}

TEST(PolicyJson, RoundTripsThroughTheWriter) {
  auto p = parsePolicy(kValid, "toy.json");
  ASSERT_TRUE(p.has_value());
  const auto text = policyToJson(*p);
  auto again = parsePolicy(text, "again.json");
  ASSERT_TRUE(again.has_value()) << again.error().message() << "\n" << text;
  EXPECT_EQ(policyToJson(*again), text);
}

struct Bad {
  const char* name;
  std::string from, to;
  std::string where;  // expected "file:line:col" prefix
  std::string what;   // expected substring
};

class PolicyJsonErrors : public ::testing::TestWithParam<Bad> {};

TEST_P(PolicyJsonErrors, NameFileLineColumnAndReason) {
  const auto& b = GetParam();
  auto p = parsePolicy(replace(kValid, b.from, b.to), "bad.json");
  ASSERT_FALSE(p.has_value()) << b.name;
  EXPECT_EQ(p.error().where.substr(0, b.where.size()), b.where) << p.error().message();
  EXPECT_NE(p.error().what.find(b.what), std::string::npos) << p.error().message();
}

INSTANTIATE_TEST_SUITE_P(
    Malformed, PolicyJsonErrors,
    ::testing::Values(
        Bad{"syntax", "\"version\": 1,", "\"version\": 1", "bad.json:4:", "invalid JSON"},
        Bad{"wrong format", "ioreq-filter-policy", "something-else", "bad.json:2:13", "not an ioreq-filter policy"},
        Bad{"future version", "\"version\": 1", "\"version\": 9", "bad.json:3:14", "version 9 is not supported"},
        Bad{"unknown field", "\"name\": \"toy\",", "\"name\": \"toy\", \"colour\": 1,", "bad.json:5:", "unknown field 'colour'"},
        Bad{"missing field", "\"dir\": \"read\"}\n", "\"x\": 1}\n", "bad.json:", "unknown field 'x'"},
        Bad{"bad direction", "\"dir\": \"read\"}\n      ]", "\"dir\": \"sideways\"}\n      ]", "bad.json:16:", "direction must be"},
        Bad{"bad number", "\"offset\": \"0x5\"", "\"offset\": \"0x5g\"", "bad.json:15:", "not a hex number"},
        Bad{"negative", "\"offset\": 5, \"size\": 1, \"dir\": \"write\", \"value\"", "\"offset\": -5, \"size\": 1, \"dir\": \"write\", \"value\"",
            "bad.json:14:", "negative"},
        Bad{"offset outside region", "\"offset\": 4,", "\"offset\": 40,", "bad.json:22:", "outside region 'io'"},
        Bad{"unknown region", "\"region\": \"io\", \"offset\": 4", "\"region\": \"mmio\", \"offset\": 4", "bad.json:22:", "no region named 'mmio'"},
        Bad{"dangling edge", "[\"param\", \"r1\"]", "[\"param\", \"r2\"]", "bad.json:18:", "no node 'r2'"},
        Bad{"duplicate id", "{\"id\": \"r1\"", "{\"id\": \"cmd\"", "bad.json:16:", "duplicate node id 'cmd'"},
        Bad{"unknown value kind", "{\"exact\": \"0x0a\"}", "{\"between\": 1}", "bad.json:14:", "unknown value constraint 'between'"},
        Bad{"value too wide", "{\"exact\": \"0x0a\"}", "{\"exact\": \"0x1ff\"}", "bad.json:14:", "does not fit the access size"},
        Bad{"read with value", "\"dir\": \"read\"}\n      ]", "\"dir\": \"read\", \"value\": {\"exact\": 1}}\n      ]", "bad.json:16:",
            "a read cannot carry a value constraint"},
        Bad{"empty range", "{\"exact\": \"0x0a\"}", "{\"range\": [5, 1]}", "bad.json:14:", "range is empty"},
        Bad{"zero repeat", "\"repeat\": 3", "\"repeat\": 0", "bad.json:15:", "repeat must be at least 1"},
        Bad{"no entries", "\"entries\": [\"cmd\"],", "\"entries\": [],", "bad.json:19:", "nothing can ever start it"},
        Bad{"rule without max", ", \"max\": 8}", "}", "bad.json:24:", "needs 'max'"},
        Bad{"region overlap", "[{\"name\": \"io\", \"space\": \"io\", \"base\": \"0x100\", \"length\": 8}]",
            "[{\"name\": \"io\", \"space\": \"io\", \"base\": \"0x100\", \"length\": 8}, {\"name\": \"b\", \"space\": \"io\", \"base\": \"0x104\", \"length\": 8}]",
            "bad.json:7:", "overlaps region 'io'"},
        Bad{"bad space", "\"space\": \"io\"", "\"space\": \"dma\"", "bad.json:7:", "space must be"},
        Bad{"bad action", "\"graphs\": [{", "\"on_violation\": \"explode\", \"graphs\": [{", "bad.json:9:", "on_violation must be"},
        Bad{"bad combine", "\"graphs\": [{", "\"combine\": \"both\", \"graphs\": [{", "bad.json:9:",
            "combine must be \"union\" (builds/firmware of one driver) or \"intersect\" (an independent model)"},
        Bad{"pause is not available", "\"graphs\": [{", "\"on_violation\": \"refuse-and-pause\", \"graphs\": [{", "bad.json:9:",
            "refuse-and-pause is not available: Xen has no pause device-model operation"},
        Bad{"bar without pci", "\"base\": \"0x100\", \"length\": 8}]", "\"bar\": 0, \"length\": 8}]", "bad.json:7:", "needs a PCI device match"},
        // A region goes unfiltered only by declaration, and only with a reason a reviewer can check.
        Bad{"pass without reason object", "\"length\": 8}]", "\"length\": 8}, {\"name\": \"spare\", \"space\": \"io\", \"base\": \"0x200\", \"length\": 4, \"pass\": true}]", "bad.json:7:", "'pass' must be {\"reason\""},
        Bad{"pass without reason", "\"length\": 8}]", "\"length\": 8}, {\"name\": \"spare\", \"space\": \"io\", \"base\": \"0x200\", \"length\": 4, \"pass\": {}}]", "bad.json:7:", "a pass region needs a \"reason\""},
        Bad{"pass with empty reason", "\"length\": 8}]", "\"length\": 8}, {\"name\": \"spare\", \"space\": \"io\", \"base\": \"0x200\", \"length\": 4, \"pass\": {\"reason\": \" \"}}]", "bad.json:7:", "the reason of a pass region is empty"},
        Bad{"pass with unknown field", "\"length\": 8}]", "\"length\": 8}, {\"name\": \"spare\", \"space\": \"io\", \"base\": \"0x200\", \"length\": 4, \"pass\": {\"reason\": \"r\", \"until\": 1}}]", "bad.json:7:", "unknown field 'until'"},
        Bad{"node in a pass region", "\"length\": 8}]", "\"length\": 8, \"pass\": {\"reason\": \"r\"}}]", "bad.json:22:",
            "region 'io' is declared pass: no graph node may lie in it"}),
    [](const ::testing::TestParamInfo<Bad>& param_info) {
      std::string n = param_info.param.name;
      for (auto& ch : n)
        if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
      return n;
    });

// A pass region with its reason is read, written back unchanged, and counts as a region of the device.
TEST(PolicyJson, APassRegionKeepsItsReasonThroughTheWriter) {
  const std::string text = replace(kValid, "\"length\": 8}]",
                                   "\"length\": 8}, {\"name\": \"spare\", \"space\": \"io\", \"base\": \"0x200\", \"length\": 4, "
                                   "\"pass\": {\"reason\": \"firmware only; measured: no driver access\"}}]");
  auto p = parsePolicy(text, "pass.json");
  ASSERT_TRUE(p.has_value()) << p.error().message();
  ASSERT_EQ(p->regions.size(), 2u);
  EXPECT_EQ(p->regions[0].use, RegionUse::Filter);
  EXPECT_EQ(p->regions[1].use, RegionUse::Pass);
  EXPECT_EQ(p->regions[1].pass_reason, "firmware only; measured: no driver access");
  const auto written = policyToJson(*p);
  EXPECT_NE(written.find("\"pass\": {\n"), std::string::npos) << written;
  auto again = parsePolicy(written, "again.json");
  ASSERT_TRUE(again.has_value()) << again.error().message();
  EXPECT_EQ(policyToJson(*again), written);
}

TEST(PolicyJson, MissingFileIsNamed) {
  auto p = loadPolicyFile("/nonexistent/policy.json");
  ASSERT_FALSE(p.has_value());
  EXPECT_EQ(p.error().where, "/nonexistent/policy.json");
}

TEST(PolicyJson, SaveIsAtomicAndRefusesInvalidPolicies) {
  const auto dir = std::filesystem::temp_directory_path() / ("iof-policy-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  auto p = parsePolicy(kValid, "toy.json");
  ASSERT_TRUE(p.has_value());
  const auto path = (dir / "toy.json").string();
  ASSERT_TRUE(savePolicyFile(*p, path).has_value());
  auto back = loadPolicyFile(path);
  ASSERT_TRUE(back.has_value()) << back.error().message();
  auto broken = *p;
  broken.graphs[0].channels[0].entries = {7};
  EXPECT_FALSE(savePolicyFile(broken, path).has_value());
  EXPECT_TRUE(loadPolicyFile(path).has_value());  // the good file was not touched
  for (const auto& entry : std::filesystem::directory_iterator(dir))
    EXPECT_EQ(entry.path().filename(), "toy.json");  // no temporary left behind
  std::filesystem::remove_all(dir);
}

TEST(PolicyJson, MergeUnitesGraphsAndRemapsRegions) {
  auto a = parsePolicy(kValid, "a.json");
  ASSERT_TRUE(a.has_value());
  auto b = *a;
  b.source = "b.json";
  b.graphs[0].name = "g2";
  b.regions.insert(b.regions.begin(), RegionSpec{"extra", RegionSpace::Io, -1, 0x200, 4});
  for (auto& c : b.graphs[0].channels)
    for (auto& n : c.nodes) n.region += 1;
  for (auto& n : b.graphs[0].anywhere) n.region += 1;
  for (auto& r : b.rules) {
    if (r.after) r.after->region += 1;
    if (r.then) r.then->region += 1;
  }
  b.rules[0].id = "flood2";
  auto m = mergePolicies({*a, b});
  ASSERT_TRUE(m.has_value()) << m.error().message();
  EXPECT_EQ(m->graphs.size(), 2u);
  EXPECT_EQ(m->regions.size(), 2u);
  EXPECT_EQ(m->regions[m->graphs[1].channels[0].nodes[0].region].name, "io");
  EXPECT_TRUE(validate(*m).empty());
  auto same_graph = *a;
  EXPECT_FALSE(mergePolicies({*a, same_graph}).has_value());  // graph names must differ
}

// Policy sets (docs/policy-format.md): regions are matched by where they are, not by name.
// kValid with other regions; its nodes and rule use region `used` and its graph and rule are named
// after `graph` (names must be unique in a union).
DevicePolicy toyFrom(const std::string& source, const std::string& graph, const std::string& regions,
                     const std::string& used = "io") {
  auto text = replace(kValid, "\"regions\": [{\"name\": \"io\", \"space\": \"io\", \"base\": \"0x100\", \"length\": 8}]",
                      "\"regions\": " + regions);
  const std::string to = "\"region\": \"" + used + "\"";
  for (std::size_t at = 0; (at = text.find("\"region\": \"io\"", at)) != std::string::npos; at += to.size())
    text.replace(at, 14, to);
  text = replace(text, "\"name\": \"g\"", "\"name\": \"" + graph + "\"");
  text = replace(text, "\"id\": \"flood\"", "\"id\": \"flood-" + graph + "\"");
  auto p = parsePolicy(text, source);
  if (!p) throw std::runtime_error(p.error().message());
  return *p;
}

TEST(PolicySets, SameRangeUnderAnotherNameIsOneRegion) {
  const auto a = parsePolicy(kValid, "linux/a.json");
  ASSERT_TRUE(a) << a.error().message();
  // b names the window 'fifo' (and its nodes say region "fifo"): the same ports as a's 'io'.
  auto text = kValid + std::string();
  for (std::size_t at = 0; (at = text.find("\"io\"", at)) != std::string::npos; at += 6) text.replace(at, 4, "\"fifo\"");
  text = replace(text, "\"name\": \"g\"", "\"name\": \"g2\"");
  text = replace(text, "\"space\": \"fifo\"", "\"space\": \"io\"");
  text = replace(text, "\"id\": \"flood\"", "\"id\": \"flood2\"");
  auto b = parsePolicy(text, "linux/b.json");
  ASSERT_TRUE(b) << b.error().message();
  auto m = mergePolicies({*a, *b});
  ASSERT_TRUE(m) << m.error().message();
  ASSERT_EQ(m->regions.size(), 1u);
  EXPECT_EQ(m->regions[0].name, "io");  // the first policy's name is kept
  EXPECT_EQ(m->graphs[1].channels[0].nodes[0].region, 0u);
  EXPECT_TRUE(validate(*m).empty());
}

TEST(PolicySets, OverlappingDifferentRangesAreAConflictNamingBothFilesAndRegions) {
  const auto a = toyFrom("linux/a.json", "g", R"([{"name": "io", "space": "io", "base": "0x100", "length": 8}])");
  const auto b = toyFrom("vendor/b.json", "g2", R"([{"name": "fifo", "space": "io", "base": "0x100", "length": 6}])", "fifo");
  auto m = mergePolicies({a, b});
  ASSERT_FALSE(m);
  EXPECT_EQ(m.error().where, "vendor/b.json");
  EXPECT_EQ(m.error().what.rfind("region 'fifo' (io 0x100..0x105) overlaps region 'io' of linux/a.json (io 0x100..0x107) "
                                 "without being the same range; a union of graphs needs the same register windows",
                                 0),
            0u)
      << m.error().message();
  EXPECT_NE(m.error().what.find("\"combine\": \"intersect\""), std::string::npos) << m.error().message();
}

TEST(PolicySets, OneNameForTwoRangesIsAConflict) {
  const auto a = toyFrom("linux/a.json", "g", R"([{"name": "io", "space": "io", "base": "0x100", "length": 8}])");
  const auto b = toyFrom("vendor/b.json", "g2", R"([{"name": "io", "space": "io", "base": "0x200", "length": 8}])");
  auto m = mergePolicies({a, b});
  ASSERT_FALSE(m);
  EXPECT_EQ(m.error().message(), "vendor/b.json: region 'io' (io 0x200..0x207) has the name of region 'io' of linux/a.json "
                                 "(io 0x100..0x107) but not its range; a union needs one range per region");
}

TEST(PolicySets, DifferentDeviceIdentitiesAreAConflictNamingBothFiles) {
  auto a = toyFrom("linux/a.json", "g", R"([{"name": "io", "space": "io", "base": "0x100", "length": 8}])");
  auto b = a;
  b.source = "vendor/b.json";
  b.graphs[0].name = "g2";
  b.match.isa_kind = "other";
  auto m = mergePolicies({a, b});
  ASSERT_FALSE(m);
  EXPECT_EQ(m.error().message(), "vendor/b.json: device identity (isa kind 'other') differs from linux/a.json (isa kind 'toy')");
}

DeviceInstance toyInstance() {
  DeviceInstance d;
  d.name = "toy0";
  d.kind = "toy";
  d.isa_ports.push_back(PortRange{0x100, 8});
  return d;
}

TEST(PolicySets, IntersectPoliciesOfOneDirectoryAreASetOfTheirOwn) {
  const auto linux_a = toyFrom("p/linux-6.1/a.json", "a", R"([{"name": "io", "space": "io", "base": "0x100", "length": 8}])");
  const auto linux_b = toyFrom("p/linux-6.6/b.json", "b", R"([{"name": "port", "space": "io", "base": "0x100", "length": 8}])", "port");
  // A model that divides the device differently: no merge with the driver's graphs is needed.
  auto sheet = toyFrom("p/datasheet/s.json", "s",
                       R"([{"name": "io", "space": "io", "base": "0x100", "length": 6}, {"name": "x", "space": "io", "base": "0x107", "length": 1}])");
  sheet.combine = Combine::Intersect;
  std::vector<std::string> uncovered;
  auto bound = bindPolicies({toyInstance()}, {linux_a, sheet, linux_b}, &uncovered);
  ASSERT_TRUE(bound) << bound.error().message();
  EXPECT_TRUE(uncovered.empty());
  ASSERT_EQ(bound->size(), 2u);
  EXPECT_EQ((*bound)[0].set, 0u);
  EXPECT_EQ((*bound)[0].set_name, "union");
  EXPECT_EQ((*bound)[0].policy.graphs.size(), 2u);  // linux-6.1 and linux-6.6: one union
  EXPECT_EQ((*bound)[0].policy.regions.size(), 1u);
  EXPECT_EQ((*bound)[1].set, 1u);
  EXPECT_EQ((*bound)[1].set_name, "p/datasheet");
  EXPECT_EQ((*bound)[1].policy.regions.size(), 2u);
  EXPECT_TRUE(Engine::create(std::move(*bound)).has_value());
}

TEST(PolicySets, ADirectoryCombinesOneWay) {
  const auto a = toyFrom("p/datasheet/a.json", "a", R"([{"name": "io", "space": "io", "base": "0x100", "length": 8}])");
  auto b = toyFrom("p/datasheet/b.json", "b", R"([{"name": "io", "space": "io", "base": "0x100", "length": 8}])");
  b.combine = Combine::Intersect;
  auto bound = bindPolicies({toyInstance()}, {a, b});
  ASSERT_FALSE(bound);
  EXPECT_EQ(bound.error().message(), "p/datasheet/a.json: combines by union but p/datasheet/b.json in the same directory combines by "
                                     "intersect; a directory is one policy set and combines one way (set \"combine\" alike, or "
                                     "move one of them)");
}

TEST(PolicySets, CombineRoundTripsThroughTheWriter) {
  auto p = parsePolicy(replace(kValid, "\"graphs\": [{", "\"combine\": \"intersect\", \"graphs\": [{"), "s.json");
  ASSERT_TRUE(p) << p.error().message();
  EXPECT_EQ(p->combine, Combine::Intersect);
  auto again = parsePolicy(policyToJson(*p), "again.json");
  ASSERT_TRUE(again) << again.error().message();
  EXPECT_EQ(again->combine, Combine::Intersect);
  EXPECT_EQ(policyToJson(*parsePolicy(kValid, "u.json")).find("combine"), std::string::npos);  // union is the default
}

TEST(PolicyJson, DotDrawsEveryNode) {
  auto p = parsePolicy(kValid, "toy.json");
  ASSERT_TRUE(p.has_value());
  const auto dot = policyToDot(*p);
  EXPECT_NE(dot.find("digraph"), std::string::npos);
  EXPECT_NE(dot.find("param"), std::string::npos);
  EXPECT_NE(dot.find("loop ≤ 3"), std::string::npos);
  EXPECT_NE(dot.find("status"), std::string::npos);
}

TEST(PolicyJson, ShippedFloppyPolicyIsValid) {
  auto p = loadPolicyFile(std::string(IOREQ_FILTER_SOURCE_DIR) + "/policies/datasheet/floppy-82077aa.json");
  ASSERT_TRUE(p.has_value()) << p.error().message();
  EXPECT_EQ(p->match.isa_kind, "isa-fdc");
}

}  // namespace
}  // namespace iof
