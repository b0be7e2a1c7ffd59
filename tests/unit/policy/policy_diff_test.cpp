// Policy diff and builds: what counts as "the graph" (not provenance), and how a kernel update's
// graph is recorded in a shipped policy (replaced, listed as a build, or added to the union).
#include <gtest/gtest.h>

#include <algorithm>
#include <string>

#include "ioreq_filter/policy/policy_diff.h"
#include "ioreq_filter/policy/policy_json.h"

namespace iof {
namespace {

void replaceAll(std::string& text, const std::string& from, const std::string& to) {
  for (auto pos = text.find(from); pos != std::string::npos; pos = text.find(from, pos + to.size())) text.replace(pos, from.size(), to);
}

// One analysed build of a toy driver; tests change the build, addresses or graph pieces.
std::string toy(const std::string& version, const std::string& write_address = "0x10", const std::string& value = "0xa",
                const std::string& extra_node = "", const std::string& builds = "") {
  std::string text = R"x({
  "format": "ioreq-filter-policy",
  "version": 1,
  "device": {
    "name": "toy",
    "match": {"isa": {"kind": "toy", "base": "0x100"}},
    "regions": [{"name": "io", "space": "io", "base": "0x100", "length": 8}]
  },
  "graphs": [{
    "name": "toy",
    "derived_from": {"guest_os": "Debian 12 (Linux @VERSION@)", "driver": "toy.ko", "build": "vermagic @VERSION@",
                     "method": "binary-analysis"@BUILDS@},
    "channels": [{
      "name": "ch0",
      "nodes": [
        {"id": "ch0.w0", "region": "io", "offset": 5, "size": 1, "dir": "write", "value": {"exact": "@VALUE@"},
         "provenance": {"function": "toy_cmd", "address": "@ADDRESS@", "source": "toy.ko .text+@ADDRESS@"}},
        {"id": "ch0.r1", "region": "io", "offset": 4, "size": 1, "dir": "read"}@EXTRA@
      ],
      "edges": [["ch0.w0", "ch0.r1"]],
      "entries": ["ch0.w0"],
      "exits": ["ch0.r1"]
    }]
  }]
})x";
  replaceAll(text, "@VERSION@", version);
  replaceAll(text, "@ADDRESS@", write_address);
  replaceAll(text, "@VALUE@", value);
  replaceAll(text, "@EXTRA@", extra_node);
  replaceAll(text, "@BUILDS@", builds);
  return text;
}

DevicePolicy parse(const std::string& text, const std::string& name = "toy.json") {
  auto p = parsePolicy(text, name);
  EXPECT_TRUE(p.has_value()) << (p ? "" : p.error().message());
  return p ? *p : DevicePolicy{};
}

bool hasChange(const std::vector<PolicyChange>& changes, PolicyChange::Kind kind, const std::string& where_part,
               const std::string& what_part) {
  return std::any_of(changes.begin(), changes.end(), [&](const PolicyChange& c) {
    return c.kind == kind && c.where.find(where_part) != std::string::npos && c.what.find(what_part) != std::string::npos;
  });
}

TEST(PolicyDiff, MovedAddressesAndAnotherBuildAreProvenanceOnly) {
  const auto a = parse(toy("6.1.0-56-amd64", "0x10"));
  const auto b = parse(toy("6.1.0-57-amd64", "0x24"));
  EXPECT_TRUE(diffPolicies(a, b, false).empty());
  EXPECT_TRUE(sameGraph(a, a.graphs[0], b, b.graphs[0]));
  const auto with = diffPolicies(a, b, true);
  EXPECT_TRUE(hasChange(with, PolicyChange::Kind::Provenance, "node ch0.w0", "toy_cmd @0x10 (toy.ko .text+0x10) -> toy_cmd @0x24"));
  EXPECT_TRUE(hasChange(with, PolicyChange::Kind::Provenance, "derived_from", "6.1.0-57-amd64"));
  EXPECT_TRUE(std::all_of(with.begin(), with.end(), [](const PolicyChange& c) { return c.kind == PolicyChange::Kind::Provenance; }));
}

TEST(PolicyDiff, NamesAChangedValueAnAddedNodeAndItsEdges) {
  const auto a = parse(toy("6.1.0-56-amd64"));
  auto text = toy("6.1.0-57-amd64", "0x10", "0xb", R"(,
        {"id": "ch0.w2", "region": "io", "offset": 6, "size": 2, "dir": "write"})");
  text.replace(text.find(R"("edges": [["ch0.w0", "ch0.r1"]])"), std::string(R"("edges": [["ch0.w0", "ch0.r1"]])").size(),
               R"("edges": [["ch0.w0", "ch0.r1"], ["ch0.r1", "ch0.w2"]])");
  const auto b = parse(text);
  const auto changes = diffPolicies(a, b, false);
  EXPECT_TRUE(hasChange(changes, PolicyChange::Kind::Graph, "graph 0 (toy) channel ch0 node ch0.w0",
                        "io+0x5 size 1 write exact 0xa -> io+0x5 size 1 write exact 0xb"));
  EXPECT_TRUE(hasChange(changes, PolicyChange::Kind::Graph, "node ch0.w2", "added: io+0x6 size 2 write any"));
  EXPECT_TRUE(hasChange(changes, PolicyChange::Kind::Graph, "edge ch0.r1 -> ch0.w2", "added"));
  EXPECT_EQ(changes.size(), 3u);
  EXPECT_FALSE(sameGraph(a, a.graphs[0], b, b.graphs[0]));
  // And back: removed.
  const auto back = diffPolicies(b, a, false);
  EXPECT_TRUE(hasChange(back, PolicyChange::Kind::Graph, "node ch0.w2", "removed"));
  EXPECT_TRUE(hasChange(back, PolicyChange::Kind::Graph, "edge ch0.r1 -> ch0.w2", "removed"));
}

TEST(PolicyDiff, NamesAChangedRegion) {
  const auto a = parse(toy("6.1.0-56-amd64"));
  auto text = toy("6.1.0-56-amd64");
  text.replace(text.find(R"("length": 8)"), 11, R"("length": 16)");
  const auto changes = diffPolicies(a, parse(text), false);
  ASSERT_EQ(changes.size(), 1u);
  EXPECT_EQ(changes[0].kind, PolicyChange::Kind::Device);
  EXPECT_EQ(changes[0].where, "region io");
  EXPECT_EQ(changes[0].what, "io at 0x100 length 0x8 -> io at 0x100 length 0x10");
}

TEST(PolicyBuilds, BuildsListRoundTripsAndIsChecked) {
  const auto p = parse(toy("6.1.0-56-amd64", "0x10", "0xa", "", R"x(, "builds": ["Debian 12 (Linux 6.1.0-57-amd64)"])x"));
  ASSERT_EQ(p.graphs[0].derived_from.builds.size(), 1u);
  EXPECT_NE(policyToJson(p).find(R"x("builds": [
          "Debian 12 (Linux 6.1.0-57-amd64)")x"),
            std::string::npos)
      << policyToJson(p);
  auto twice = parsePolicy(toy("6.1.0-56-amd64", "0x10", "0xa", "", R"x(, "builds": ["Debian 12 (Linux 6.1.0-56-amd64)"])x"), "t.json");
  ASSERT_FALSE(twice.has_value());
  EXPECT_NE(twice.error().message().find("t.json:"), std::string::npos) << twice.error().message();
  EXPECT_NE(twice.error().message().find("build 'Debian 12 (Linux 6.1.0-56-amd64)' is listed twice"), std::string::npos)
      << twice.error().message();
  auto empty = parsePolicy(toy("6.1.0-56-amd64", "0x10", "0xa", "", R"(, "builds": [""])"), "t.json");
  ASSERT_FALSE(empty.has_value());
  EXPECT_NE(empty.error().message().find("non-empty string"), std::string::npos) << empty.error().message();
  auto number = parsePolicy(toy("6.1.0-56-amd64", "0x10", "0xa", "", R"(, "builds": [57])"), "t.json");
  ASSERT_FALSE(number.has_value());
  EXPECT_NE(number.error().message().find("expected a string"), std::string::npos) << number.error().message();
}

TEST(PolicyBuilds, SameBuildReplacesTheWholePolicy) {
  const auto shipped = parse(toy("6.1.0-56-amd64"), "shipped.json");
  const auto fresh = parse(toy("6.1.0-56-amd64", "0x10", "0xb"), "fresh.json");
  auto r = addBuild(shipped, fresh);
  ASSERT_TRUE(r.has_value()) << r.error().message();
  EXPECT_EQ(r->outcome, AddedBuild::Outcome::ReplacedWhole);
  ASSERT_EQ(r->policy.graphs.size(), 1u);
  EXPECT_EQ(r->policy.graphs[0].channels[0].nodes[0].value.a, 0xbu);
}

TEST(PolicyBuilds, SameGraphFromANewBuildIsListedNotAdded) {
  const auto shipped = parse(toy("6.1.0-56-amd64", "0x10"), "shipped.json");
  const auto fresh = parse(toy("6.1.0-57-amd64", "0x24"), "fresh.json");
  auto r = addBuild(shipped, fresh);
  ASSERT_TRUE(r.has_value()) << r.error().message();
  EXPECT_EQ(r->outcome, AddedBuild::Outcome::SameGraph);
  ASSERT_EQ(r->policy.graphs.size(), 1u);
  EXPECT_EQ(r->policy.graphs[0].derived_from.guest_os, "Debian 12 (Linux 6.1.0-56-amd64)") << "provenance stays the old build's";
  EXPECT_EQ(r->policy.graphs[0].channels[0].nodes[0].provenance.address, 0x10u);
  EXPECT_EQ(r->policy.graphs[0].derived_from.builds, std::vector<std::string>{"Debian 12 (Linux 6.1.0-57-amd64)"});
  EXPECT_NE(r->summary.find("provenance only"), std::string::npos) << r->summary;
  // Only provenance differs from what was shipped; running it again changes nothing.
  EXPECT_TRUE(diffPolicies(shipped, r->policy, false).empty());
  auto again = addBuild(r->policy, fresh);
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(policyToJson(again->policy), policyToJson(r->policy));
}

TEST(PolicyBuilds, ChangedGraphFromANewBuildIsAddedToTheUnion) {
  const auto shipped = parse(toy("6.1.0-56-amd64"), "shipped.json");
  const auto fresh = parse(toy("6.1.0-57-amd64", "0x10", "0xb"), "fresh.json");
  auto r = addBuild(shipped, fresh);
  ASSERT_TRUE(r.has_value()) << r.error().message();
  EXPECT_EQ(r->outcome, AddedBuild::Outcome::Added);
  ASSERT_EQ(r->policy.graphs.size(), 2u);
  EXPECT_EQ(r->policy.graphs[1].name, "toy [Debian 12 (Linux 6.1.0-57-amd64)]");
  EXPECT_TRUE(validate(r->policy).empty());
  const auto changes = diffPolicies(shipped, r->policy, false);
  ASSERT_EQ(changes.size(), 1u);
  EXPECT_EQ(changes[0].where, "graph 1 (toy [Debian 12 (Linux 6.1.0-57-amd64)])");
  EXPECT_NE(changes[0].what.find("added"), std::string::npos);
  // The next run on the same kernel replaces that graph by its own output, byte for byte.
  auto again = addBuild(r->policy, fresh);
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(again->outcome, AddedBuild::Outcome::Replaced);
  EXPECT_EQ(policyToJson(again->policy), policyToJson(r->policy));
}

TEST(PolicyBuilds, ABuildIsListedOnlyWhereItWasLastChecked) {
  // 57 was listed on 56's graph; regenerated now (say, by a newer analyser) 57 gives another graph.
  const auto shipped = parse(toy("6.1.0-56-amd64", "0x10", "0xa", "", R"x(, "builds": ["Debian 12 (Linux 6.1.0-57-amd64)"])x"));
  auto r = addBuild(shipped, parse(toy("6.1.0-57-amd64", "0x10", "0xb")));
  ASSERT_TRUE(r.has_value()) << r.error().message();
  EXPECT_EQ(r->outcome, AddedBuild::Outcome::Added);
  EXPECT_TRUE(r->policy.graphs[0].derived_from.builds.empty());
}

TEST(PolicyBuilds, RefusesAFreshPolicyWithoutItsBuildOrWithAnotherDeviceSection) {
  const auto shipped = parse(toy("6.1.0-56-amd64"), "shipped.json");
  auto nameless = toy("6.1.0-57-amd64");
  nameless.replace(nameless.find(R"x("guest_os": "Debian 12 (Linux 6.1.0-57-amd64)", )x"),
                   std::string(R"x("guest_os": "Debian 12 (Linux 6.1.0-57-amd64)", )x").size(), "");
  auto r = addBuild(shipped, parse(nameless, "fresh.json"));
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().message(), "fresh.json: graph 'toy' does not name its build (derived_from.guest_os is empty)");

  auto wider = toy("6.1.0-57-amd64", "0x10", "0xb");
  wider.replace(wider.find(R"("length": 8)"), 11, R"("length": 16)");
  r = addBuild(shipped, parse(wider, "fresh.json"));
  ASSERT_FALSE(r.has_value());
  EXPECT_NE(r.error().message().find("fresh.json: the device section differs from shipped.json (region io: io at 0x100 length 0x8 -> "
                                     "io at 0x100 length 0x10)"),
            std::string::npos)
      << r.error().message();

  auto two = parse(toy("6.1.0-57-amd64"), "fresh.json");
  two.graphs.push_back(two.graphs[0]);
  r = addBuild(shipped, two);
  ASSERT_FALSE(r.has_value());
  EXPECT_NE(r.error().message().find("exactly one graph"), std::string::npos) << r.error().message();
}

}  // namespace
}  // namespace iof
