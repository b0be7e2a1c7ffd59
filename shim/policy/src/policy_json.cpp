#include "ioreq_filter/policy/policy_json.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <unistd.h>

#include "json_positions.h"

namespace iof {
namespace {

using nlohmann::json;
using ojson = nlohmann::ordered_json;

constexpr const char* kFormatName = "ioreq-filter-policy";

// Thrown inside the reader only; parsePolicy() is the boundary that turns it into an Error.
struct BadPolicy {
  std::string path;
  std::string what;
};

std::string join(const std::string& base, const std::string& leaf) { return base.empty() ? leaf : base + "/" + leaf; }
std::string join(const std::string& base, std::size_t i) { return join(base, std::to_string(i)); }

class Reader {
 public:
  const json& require(const json& obj, const std::string& path, const char* key) {
    if (!obj.is_object()) throw BadPolicy{path, "expected an object"};
    auto it = obj.find(key);
    if (it == obj.end()) throw BadPolicy{path, std::string("missing required field '") + key + "'"};
    return *it;
  }
  const json* optional(const json& obj, const char* key) {
    auto it = obj.find(key);
    return it == obj.end() ? nullptr : &*it;
  }
  void onlyKeys(const json& obj, const std::string& path, std::initializer_list<const char*> keys) {
    if (!obj.is_object()) throw BadPolicy{path, "expected an object"};
    for (auto it = obj.begin(); it != obj.end(); ++it) {
      if (std::none_of(keys.begin(), keys.end(), [&](const char* k) { return it.key() == k; }))
        throw BadPolicy{join(path, it.key()), "unknown field '" + it.key() + "'"};
    }
  }
  std::string string(const json& v, const std::string& path) {
    if (!v.is_string()) throw BadPolicy{path, "expected a string"};
    return v.get<std::string>();
  }
  // Accepts a JSON integer or a string "0x..." / decimal.
  std::uint64_t number(const json& v, const std::string& path, std::uint64_t max = ~0ull) {
    std::uint64_t out = 0;
    if (v.is_number_unsigned()) {
      out = v.get<std::uint64_t>();
    } else if (v.is_number_integer()) {
      throw BadPolicy{path, "negative number"};
    } else if (v.is_string()) {
      const auto s = v.get<std::string>();
      const bool hex = s.size() > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X');
      const std::string digits = hex ? s.substr(2) : s;
      if (digits.empty() || digits.size() > 16 + (hex ? 0 : 4)) throw BadPolicy{path, "'" + s + "' is not a number"};
      for (char ch : digits) {
        const int d = std::isdigit(static_cast<unsigned char>(ch)) ? ch - '0'
                      : hex && std::isxdigit(static_cast<unsigned char>(ch)) ? std::tolower(ch) - 'a' + 10
                                                                            : -1;
        if (d < 0) throw BadPolicy{path, "'" + s + "' is not a " + std::string(hex ? "hex " : "") + "number"};
        const std::uint64_t base = hex ? 16 : 10;
        if (out > (~0ull - std::uint64_t(d)) / base) throw BadPolicy{path, "'" + s + "' does not fit 64 bits"};
        out = out * base + std::uint64_t(d);
      }
    } else {
      throw BadPolicy{path, "expected a number (integer or \"0x...\" string)"};
    }
    if (out > max) throw BadPolicy{path, "value " + std::to_string(out) + " is larger than " + std::to_string(max)};
    return out;
  }
  bool boolean(const json& v, const std::string& path) {
    if (!v.is_boolean()) throw BadPolicy{path, "expected true or false"};
    return v.get<bool>();
  }
  const json& array(const json& v, const std::string& path) {
    if (!v.is_array()) throw BadPolicy{path, "expected an array"};
    return v;
  }

  Dir dir(const json& v, const std::string& path) {
    const auto s = string(v, path);
    if (s == "read") return Dir::Read;
    if (s == "write") return Dir::Write;
    throw BadPolicy{path, "direction must be \"read\" or \"write\", not \"" + s + "\""};
  }

  ValueConstraint value(const json& v, const std::string& path) {
    ValueConstraint c;
    if (v.is_string() && v.get<std::string>() == "any") return c;
    if (!v.is_object() || v.size() == 0) throw BadPolicy{path, "value must be \"any\" or one of {exact}, {mask, equals}, {set}, {range}"};
    if (auto* e = optional(v, "exact")) {
      onlyKeys(v, path, {"exact"});
      c.kind = ValueKind::Exact;
      c.a = number(*e, join(path, "exact"));
    } else if (auto* m = optional(v, "mask")) {
      onlyKeys(v, path, {"mask", "equals"});
      c.kind = ValueKind::Mask;
      c.a = number(*m, join(path, "mask"));
      c.b = number(require(v, path, "equals"), join(path, "equals"));
    } else if (auto* s = optional(v, "set")) {
      onlyKeys(v, path, {"set"});
      c.kind = ValueKind::Set;
      const auto& arr = array(*s, join(path, "set"));
      for (std::size_t i = 0; i < arr.size(); ++i) c.set.push_back(number(arr[i], join(join(path, "set"), i)));
      std::sort(c.set.begin(), c.set.end());
      c.set.erase(std::unique(c.set.begin(), c.set.end()), c.set.end());
    } else if (auto* r = optional(v, "range")) {
      onlyKeys(v, path, {"range"});
      c.kind = ValueKind::Range;
      const auto& arr = array(*r, join(path, "range"));
      if (arr.size() != 2) throw BadPolicy{join(path, "range"), "range is [low, high]"};
      c.a = number(arr[0], join(join(path, "range"), 0));
      c.b = number(arr[1], join(join(path, "range"), 1));
    } else {
      throw BadPolicy{path, "unknown value constraint '" + v.begin().key() + "' (use exact, mask+equals, set, range or \"any\")"};
    }
    return c;
  }

  Provenance provenance(const json& v, const std::string& path) {
    onlyKeys(v, path, {"function", "address", "source"});
    Provenance p;
    if (auto* f = optional(v, "function")) p.function = string(*f, join(path, "function"));
    if (auto* a = optional(v, "address")) p.address = number(*a, join(path, "address"));
    if (auto* s = optional(v, "source")) p.source = string(*s, join(path, "source"));
    return p;
  }

  std::uint32_t region(const json& v, const std::string& path, const DevicePolicy& policy) {
    const auto name = string(v, path);
    for (std::uint32_t i = 0; i < policy.regions.size(); ++i)
      if (policy.regions[i].name == name) return i;
    throw BadPolicy{path, "no region named '" + name + "'"};
  }

  NodeSpec node(const json& v, const std::string& path, const DevicePolicy& policy, std::uint32_t* repeat) {
    onlyKeys(v, path, {"id", "region", "offset", "size", "dir", "value", "repeat", "reset", "provenance"});
    NodeSpec n;
    n.id = string(require(v, path, "id"), join(path, "id"));
    n.region = region(require(v, path, "region"), join(path, "region"), policy);
    n.offset = number(require(v, path, "offset"), join(path, "offset"));
    if (auto* s = optional(v, "size")) n.size = std::uint8_t(number(*s, join(path, "size"), 8));
    n.dir = dir(require(v, path, "dir"), join(path, "dir"));
    if (auto* val = optional(v, "value")) n.value = value(*val, join(path, "value"));
    if (auto* r = optional(v, "reset")) n.reset = boolean(*r, join(path, "reset"));
    if (auto* p = optional(v, "provenance")) n.provenance = provenance(*p, join(path, "provenance"));
    if (auto* r = optional(v, "repeat")) {
      if (!repeat) throw BadPolicy{join(path, "repeat"), "'repeat' is only meaningful on channel nodes"};
      *repeat = std::uint32_t(number(*r, join(path, "repeat"), 0xffffffffu));
      if (*repeat == 0) throw BadPolicy{join(path, "repeat"), "repeat must be at least 1"};
    }
    return n;
  }

  std::uint32_t nodeRef(const json& v, const std::string& path, const std::map<std::string, std::uint32_t>& ids) {
    const auto id = string(v, path);
    auto it = ids.find(id);
    if (it == ids.end()) throw BadPolicy{path, "no node '" + id + "' in this channel"};
    return it->second;
  }

  ChannelSpec channel(const json& v, const std::string& path, const DevicePolicy& policy) {
    onlyKeys(v, path, {"name", "nodes", "edges", "entries", "exits", "loops"});
    ChannelSpec c;
    c.name = string(require(v, path, "name"), join(path, "name"));
    const auto& nodes = array(require(v, path, "nodes"), join(path, "nodes"));
    std::map<std::string, std::uint32_t> ids;
    std::vector<std::pair<std::uint32_t, std::uint32_t>> repeats;
    for (std::size_t i = 0; i < nodes.size(); ++i) {
      std::uint32_t repeat = 0;
      c.nodes.push_back(node(nodes[i], join(join(path, "nodes"), i), policy, &repeat));
      if (!ids.emplace(c.nodes.back().id, std::uint32_t(i)).second)
        throw BadPolicy{join(join(join(path, "nodes"), i), "id"), "duplicate node id '" + c.nodes.back().id + "'"};
      if (repeat) repeats.emplace_back(std::uint32_t(i), repeat);
    }
    if (auto* e = optional(v, "edges")) {
      const auto& edges = array(*e, join(path, "edges"));
      for (std::size_t i = 0; i < edges.size(); ++i) {
        const auto ep = join(join(path, "edges"), i);
        if (!edges[i].is_array() || edges[i].size() != 2) throw BadPolicy{ep, "an edge is [\"from\", \"to\"]"};
        c.edges.emplace_back(nodeRef(edges[i][0], join(ep, 0), ids), nodeRef(edges[i][1], join(ep, 1), ids));
      }
    }
    for (auto [list, key] : {std::pair{&c.entries, "entries"}, std::pair{&c.exits, "exits"}}) {
      if (auto* e = optional(v, key)) {
        const auto& arr = array(*e, join(path, key));
        for (std::size_t i = 0; i < arr.size(); ++i) list->push_back(nodeRef(arr[i], join(join(path, key), i), ids));
      }
    }
    if (auto* l = optional(v, "loops")) {
      const auto& loops = array(*l, join(path, "loops"));
      for (std::size_t i = 0; i < loops.size(); ++i) {
        const auto lp = join(join(path, "loops"), i);
        onlyKeys(loops[i], lp, {"id", "header", "members", "max", "unbounded", "provenance"});
        LoopSpec loop;
        loop.id = string(require(loops[i], lp, "id"), join(lp, "id"));
        loop.header = nodeRef(require(loops[i], lp, "header"), join(lp, "header"), ids);
        const auto& members = array(require(loops[i], lp, "members"), join(lp, "members"));
        for (std::size_t m = 0; m < members.size(); ++m) loop.members.push_back(nodeRef(members[m], join(join(lp, "members"), m), ids));
        if (auto* u = optional(loops[i], "unbounded")) loop.unbounded = boolean(*u, join(lp, "unbounded"));
        if (auto* m = optional(loops[i], "max")) loop.max_iterations = std::uint32_t(number(*m, join(lp, "max"), 0xffffffffu));
        if (!loop.unbounded && !optional(loops[i], "max")) throw BadPolicy{lp, "a loop needs 'max' or \"unbounded\": true"};
        if (loop.unbounded && optional(loops[i], "max")) throw BadPolicy{join(lp, "max"), "an unbounded loop has no 'max'"};
        if (auto* p = optional(loops[i], "provenance")) loop.provenance = provenance(*p, join(lp, "provenance"));
        c.loops.push_back(std::move(loop));
      }
    }
    // "repeat": N on a node is shorthand for a self-loop bounded to N consecutive matches.
    for (auto [n, times] : repeats) {
      if (std::find(c.edges.begin(), c.edges.end(), std::pair{n, n}) == c.edges.end()) c.edges.emplace_back(n, n);
      c.loops.push_back(LoopSpec{c.nodes[n].id + "#repeat", n, {n}, times, false, c.nodes[n].provenance});
    }
    return c;
  }

  DerivedFrom derivedFrom(const json& v, const std::string& path) {
    onlyKeys(v, path, {"guest_os", "driver", "build", "firmware", "method", "builds"});
    DerivedFrom d;
    for (auto [field, key] : {std::pair{&d.guest_os, "guest_os"}, std::pair{&d.driver, "driver"}, std::pair{&d.build, "build"},
                              std::pair{&d.firmware, "firmware"}, std::pair{&d.method, "method"}})
      if (auto* x = optional(v, key)) *field = string(*x, join(path, key));
    if (auto* b = optional(v, "builds")) {
      const auto bp = join(path, "builds");
      const auto& arr = array(*b, bp);
      for (std::size_t i = 0; i < arr.size(); ++i) {
        auto build = string(arr[i], join(bp, i));
        if (build.empty()) throw BadPolicy{join(bp, i), "a build is named by a non-empty string (its guest_os)"};
        if (build == d.guest_os || std::find(d.builds.begin(), d.builds.end(), build) != d.builds.end())
          throw BadPolicy{join(bp, i), "build '" + build + "' is listed twice"};
        d.builds.push_back(std::move(build));
      }
    }
    return d;
  }

  AccessPattern pattern(const json& v, const std::string& path, const DevicePolicy& policy) {
    onlyKeys(v, path, {"region", "offset", "offsets", "size", "dir", "value"});
    AccessPattern p;
    p.region = region(require(v, path, "region"), join(path, "region"), policy);
    if (auto* o = optional(v, "offset")) {
      p.offset_low = p.offset_high = number(*o, join(path, "offset"));
    } else if (auto* os = optional(v, "offsets")) {
      const auto& arr = array(*os, join(path, "offsets"));
      if (arr.size() != 2) throw BadPolicy{join(path, "offsets"), "offsets is [low, high]"};
      p.offset_low = number(arr[0], join(join(path, "offsets"), 0));
      p.offset_high = number(arr[1], join(join(path, "offsets"), 1));
    } else {
      p.offset_low = 0;
      p.offset_high = policy.regions[p.region].length - 1;
    }
    if (auto* s = optional(v, "size")) p.size = std::uint8_t(number(*s, join(path, "size"), 8));
    if (auto* d = optional(v, "dir")) p.dir = dir(*d, join(path, "dir"));
    if (auto* val = optional(v, "value")) p.value = value(*val, join(path, "value"));
    return p;
  }

  DevicePolicy document(const json& root) {
    onlyKeys(root, "", {"format", "version", "device", "on_violation", "combine", "graphs", "rules", "comment"});
    const auto format = string(require(root, "", "format"), "format");
    if (format != kFormatName) throw BadPolicy{"format", "not an ioreq-filter policy (format is \"" + format + "\")"};
    const auto version = number(require(root, "", "version"), "version");
    if (version != std::uint64_t(kPolicyFormatVersion))
      throw BadPolicy{"version", "policy format version " + std::to_string(version) + " is not supported (this build reads " +
                                     std::to_string(kPolicyFormatVersion) + ")"};
    DevicePolicy p;
    const auto& dev = require(root, "", "device");
    onlyKeys(dev, "device", {"name", "match", "regions", "config"});
    p.name = string(require(dev, "device", "name"), "device/name");
    const auto& match = require(dev, "device", "match");
    onlyKeys(match, "device/match", {"pci", "isa"});
    if (auto* pci = optional(match, "pci")) {
      onlyKeys(*pci, "device/match/pci", {"vendor", "device", "class"});
      p.match.pci_vendor = std::uint16_t(number(require(*pci, "device/match/pci", "vendor"), "device/match/pci/vendor", 0xffff));
      p.match.pci_device = std::uint16_t(number(require(*pci, "device/match/pci", "device"), "device/match/pci/device", 0xffff));
      if (auto* c = optional(*pci, "class")) p.match.pci_class = std::uint32_t(number(*c, "device/match/pci/class", 0xffffff));
    }
    if (auto* isa = optional(match, "isa")) {
      onlyKeys(*isa, "device/match/isa", {"kind", "base"});
      p.match.isa_kind = string(require(*isa, "device/match/isa", "kind"), "device/match/isa/kind");
      if (auto* b = optional(*isa, "base")) p.match.isa_base = number(*b, "device/match/isa/base", kMaxPort);
    }
    const auto& regions = array(require(dev, "device", "regions"), "device/regions");
    for (std::size_t i = 0; i < regions.size(); ++i) {
      const auto rp = join("device/regions", i);
      onlyKeys(regions[i], rp, {"name", "space", "bar", "base", "length", "pass"});
      RegionSpec r;
      r.name = string(require(regions[i], rp, "name"), join(rp, "name"));
      const auto space = string(require(regions[i], rp, "space"), join(rp, "space"));
      if (space == "io") r.space = RegionSpace::Io;
      else if (space == "mem") r.space = RegionSpace::Mem;
      else if (space == "config") r.space = RegionSpace::Config;
      else throw BadPolicy{join(rp, "space"), "space must be \"io\", \"mem\" or \"config\", not \"" + space + "\""};
      if (auto* b = optional(regions[i], "bar")) r.bar = int(number(*b, join(rp, "bar"), 5));
      if (auto* b = optional(regions[i], "base")) r.base = number(*b, join(rp, "base"));
      if (r.space == RegionSpace::Config) {
        r.length = 256;
        if (auto* l = optional(regions[i], "length")) r.length = number(*l, join(rp, "length"));
      } else {
        r.length = number(require(regions[i], rp, "length"), join(rp, "length"));
      }
      if (r.bar < 0 && r.space != RegionSpace::Config && !optional(regions[i], "base"))
        throw BadPolicy{rp, "a region needs 'bar' (PCI) or 'base' (fixed ISA/MMIO address)"};
      if (auto* pass = optional(regions[i], "pass")) {
        // Unfiltered by declaration only: the reason is what a reviewer checks, so there is no bare `true`.
        const auto pp = join(rp, "pass");
        if (!pass->is_object())
          throw BadPolicy{pp, "'pass' must be {\"reason\": \"why this region may go unfiltered\"}"};
        onlyKeys(*pass, pp, {"reason"});
        if (!optional(*pass, "reason"))
          throw BadPolicy{pp, "a pass region needs a \"reason\": why may its accesses go unfiltered?"};
        r.pass_reason = string(*optional(*pass, "reason"), join(pp, "reason"));
        if (r.pass_reason.find_first_not_of(" \t\n") == std::string::npos)
          throw BadPolicy{join(pp, "reason"), "the reason of a pass region is empty"};
        r.use = RegionUse::Pass;
      }
      p.regions.push_back(r);
    }
    if (auto* c = optional(dev, "config")) {
      const auto s = string(*c, "device/config");
      if (s == "standard") p.config = ConfigPolicy::Standard;
      else if (s == "graph") p.config = ConfigPolicy::GraphOnly;
      else throw BadPolicy{"device/config", "config must be \"standard\" or \"graph\""};
    }
    if (auto* a = optional(root, "on_violation")) {
      const auto s = string(*a, "on_violation");
      if (s == "refuse") p.on_violation = ViolationAction::Refuse;
      else if (s == "refuse-and-pause") throw BadPolicy{"on_violation", "refuse-and-pause is not available: Xen has no pause device-model operation, so a (restricted) daemon could only refuse and count; use refuse-and-crash to stop the guest, or refuse"};
      else if (s == "refuse-and-crash") p.on_violation = ViolationAction::RefuseAndCrash;
      else throw BadPolicy{"on_violation", "on_violation must be refuse or refuse-and-crash"};
    }
    if (auto* c = optional(root, "combine")) {
      const auto s = string(*c, "combine");
      if (s == "union") p.combine = Combine::Union;
      else if (s == "intersect") p.combine = Combine::Intersect;
      else throw BadPolicy{"combine", "combine must be \"union\" (builds/firmware of one driver) or \"intersect\" (an independent model)"};
    }
    if (auto* g = optional(root, "graphs")) {
      const auto& graphs = array(*g, "graphs");
      for (std::size_t i = 0; i < graphs.size(); ++i) {
        const auto gp = join("graphs", i);
        onlyKeys(graphs[i], gp, {"name", "derived_from", "channels", "anywhere", "comment"});
        GraphSpec graph;
        graph.name = string(require(graphs[i], gp, "name"), join(gp, "name"));
        if (auto* d = optional(graphs[i], "derived_from")) graph.derived_from = derivedFrom(*d, join(gp, "derived_from"));
        if (auto* cs = optional(graphs[i], "channels")) {
          const auto& chans = array(*cs, join(gp, "channels"));
          for (std::size_t c = 0; c < chans.size(); ++c) graph.channels.push_back(channel(chans[c], join(join(gp, "channels"), c), p));
        }
        if (auto* an = optional(graphs[i], "anywhere")) {
          const auto& nodes = array(*an, join(gp, "anywhere"));
          for (std::size_t n = 0; n < nodes.size(); ++n) graph.anywhere.push_back(node(nodes[n], join(join(gp, "anywhere"), n), p, nullptr));
        }
        p.graphs.push_back(std::move(graph));
      }
    }
    if (auto* r = optional(root, "rules")) {
      const auto& rules = array(*r, "rules");
      for (std::size_t i = 0; i < rules.size(); ++i) {
        const auto rp = join("rules", i);
        onlyKeys(rules[i], rp, {"id", "description", "deny", "after", "then", "max", "until", "provenance"});
        StopGapRule rule;
        rule.id = string(require(rules[i], rp, "id"), join(rp, "id"));
        if (auto* d = optional(rules[i], "description")) rule.description = string(*d, join(rp, "description"));
        if (auto* d = optional(rules[i], "deny")) rule.deny = pattern(*d, join(rp, "deny"), p);
        if (auto* d = optional(rules[i], "after")) rule.after = pattern(*d, join(rp, "after"), p);
        if (auto* d = optional(rules[i], "then")) rule.then = pattern(*d, join(rp, "then"), p);
        if (auto* d = optional(rules[i], "until")) rule.until = pattern(*d, join(rp, "until"), p);
        if (auto* m = optional(rules[i], "max")) rule.max = std::uint32_t(number(*m, join(rp, "max"), 0xffffffffu));
        else if (rule.then) throw BadPolicy{rp, "a rule with 'then' needs 'max'"};
        if (auto* pv = optional(rules[i], "provenance")) rule.provenance = provenance(*pv, join(rp, "provenance"));
        p.rules.push_back(std::move(rule));
      }
    }
    return p;
  }
};

std::string positionOf(const detail::JsonPositions& positions, const std::string& file, const std::string& path) {
  const auto pos = positions.find(path);
  return file + ":" + std::to_string(pos.line) + ":" + std::to_string(pos.column);
}

std::string hexString(std::uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(v));
  return buf;
}

}  // namespace

Result<DevicePolicy> parsePolicy(std::string_view text, const std::string& file) {
  json root;
  try {
    root = json::parse(text.begin(), text.end());
  } catch (const json::parse_error& e) {
    // Translate nlohmann's byte offset into line:column.
    std::size_t line = 1, col = 1;
    for (std::size_t i = 0; i + 1 < e.byte && i < text.size(); ++i) {
      if (text[i] == '\n') ++line, col = 1;
      else ++col;
    }
    std::string what = e.what();
    if (auto p = what.find("parse error"); p != std::string::npos) what = what.substr(p);
    return fail(file + ":" + std::to_string(line) + ":" + std::to_string(col), "invalid JSON: " + what);
  }
  const detail::JsonPositions positions(text);
  DevicePolicy policy;
  try {
    policy = Reader{}.document(root);
  } catch (const BadPolicy& bad) {
    return fail(positionOf(positions, file, bad.path), bad.what + " (at /" + bad.path + ")");
  }
  policy.source = file;
  auto problems = validate(policy);
  if (!problems.empty()) {
    const auto& first = problems.front();
    std::string what = first.what + " (at /" + first.path + ")";
    if (problems.size() > 1) what += "; and " + std::to_string(problems.size() - 1) + " more problem(s)";
    return fail(positionOf(positions, file, first.path), what);
  }
  return policy;
}

Result<DevicePolicy> loadPolicyFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return fail(path, std::string("cannot open policy: ") + std::strerror(errno));
  std::ostringstream buf;
  buf << in.rdbuf();
  if (in.bad()) return fail(path, "read error");
  return parsePolicy(buf.str(), path);
}

Result<std::vector<DevicePolicy>> loadPolicyDir(const std::string& dir) {
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec)) return fail(dir, "not a directory");
  std::vector<std::string> files;
  for (std::filesystem::recursive_directory_iterator it(dir, ec), end; it != end && !ec; it.increment(ec))
    if (it->is_regular_file() && it->path().extension() == ".json") files.push_back(it->path().string());
  if (ec) return fail(dir, "cannot list: " + ec.message());
  std::sort(files.begin(), files.end());
  return loadPolicyFiles(files);
}

Result<std::vector<DevicePolicy>> loadPolicyFiles(const std::vector<std::string>& paths) {
  std::vector<DevicePolicy> out;
  for (const auto& f : paths) {
    auto p = loadPolicyFile(f);
    if (!p) return std::unexpected(p.error());
    out.push_back(std::move(*p));
  }
  return out;
}

namespace {

ojson valueJson(const ValueConstraint& v) {
  switch (v.kind) {
    case ValueKind::Any: return "any";
    case ValueKind::Exact: return ojson{{"exact", hexString(v.a)}};
    case ValueKind::Mask: return ojson{{"mask", hexString(v.a)}, {"equals", hexString(v.b)}};
    case ValueKind::Range: return ojson{{"range", {hexString(v.a), hexString(v.b)}}};
    case ValueKind::Set: {
      ojson arr = ojson::array();
      for (auto x : v.set) arr.push_back(hexString(x));
      return ojson{{"set", arr}};
    }
  }
  return "any";
}

ojson provenanceJson(const Provenance& p) {
  ojson o = ojson::object();
  if (!p.function.empty()) o["function"] = p.function;
  if (p.address) o["address"] = hexString(p.address);
  if (!p.source.empty()) o["source"] = p.source;
  return o;
}

ojson nodeJson(const NodeSpec& n, const DevicePolicy& p) {
  ojson o;
  o["id"] = n.id;
  o["region"] = p.regions.at(n.region).name;
  o["offset"] = hexString(n.offset);
  if (n.size) o["size"] = n.size;
  o["dir"] = n.dir == Dir::Read ? "read" : "write";
  if (n.value.kind != ValueKind::Any) o["value"] = valueJson(n.value);
  if (n.reset) o["reset"] = true;
  auto prov = provenanceJson(n.provenance);
  if (!prov.empty()) o["provenance"] = prov;
  return o;
}

ojson patternJson(const AccessPattern& a, const DevicePolicy& p) {
  ojson o;
  o["region"] = p.regions.at(a.region).name;
  if (a.offset_low == a.offset_high) o["offset"] = hexString(a.offset_low);
  else o["offsets"] = {hexString(a.offset_low), hexString(a.offset_high)};
  if (a.size) o["size"] = a.size;
  if (a.dir) o["dir"] = *a.dir == Dir::Read ? "read" : "write";
  if (a.value.kind != ValueKind::Any) o["value"] = valueJson(a.value);
  return o;
}

}  // namespace

std::string policyToJson(const DevicePolicy& p) {
  ojson root;
  root["format"] = kFormatName;
  root["version"] = kPolicyFormatVersion;
  ojson dev;
  dev["name"] = p.name;
  ojson match;
  if (p.match.pci_vendor) {
    match["pci"]["vendor"] = hexString(*p.match.pci_vendor);
    match["pci"]["device"] = hexString(*p.match.pci_device);
    if (p.match.pci_class) match["pci"]["class"] = hexString(*p.match.pci_class);
  }
  if (!p.match.isa_kind.empty()) {
    match["isa"]["kind"] = p.match.isa_kind;
    if (p.match.isa_base) match["isa"]["base"] = hexString(*p.match.isa_base);
  }
  dev["match"] = match;
  ojson regions = ojson::array();
  for (const auto& r : p.regions) {
    ojson o;
    o["name"] = r.name;
    o["space"] = r.space == RegionSpace::Io ? "io" : r.space == RegionSpace::Mem ? "mem" : "config";
    if (r.bar >= 0) o["bar"] = r.bar;
    if (r.bar < 0 && r.space != RegionSpace::Config) o["base"] = hexString(r.base);
    o["length"] = hexString(r.length);
    if (r.use == RegionUse::Pass) o["pass"] = ojson{{"reason", r.pass_reason}};
    regions.push_back(o);
  }
  dev["regions"] = regions;
  dev["config"] = p.config == ConfigPolicy::Standard ? "standard" : "graph";
  root["device"] = dev;
  root["on_violation"] = p.on_violation == ViolationAction::Refuse          ? "refuse"
                         : p.on_violation == ViolationAction::RefuseAndPause ? "refuse-and-pause"
                                                                             : "refuse-and-crash";
  if (p.combine != Combine::Union) root["combine"] = toString(p.combine);
  ojson graphs = ojson::array();
  for (const auto& g : p.graphs) {
    ojson og;
    og["name"] = g.name;
    ojson df = ojson::object();
    for (auto [k, v] : {std::pair{"guest_os", &g.derived_from.guest_os}, std::pair{"driver", &g.derived_from.driver},
                        std::pair{"build", &g.derived_from.build}, std::pair{"firmware", &g.derived_from.firmware},
                        std::pair{"method", &g.derived_from.method}})
      if (!v->empty()) df[k] = *v;
    if (!g.derived_from.builds.empty()) df["builds"] = g.derived_from.builds;
    og["derived_from"] = df;
    ojson chans = ojson::array();
    for (const auto& c : g.channels) {
      ojson oc;
      oc["name"] = c.name;
      ojson nodes = ojson::array();
      for (const auto& n : c.nodes) nodes.push_back(nodeJson(n, p));
      oc["nodes"] = nodes;
      ojson edges = ojson::array();
      for (auto [a, b] : c.edges) edges.push_back({c.nodes[a].id, c.nodes[b].id});
      oc["edges"] = edges;
      for (auto [key, list] : {std::pair{"entries", &c.entries}, std::pair{"exits", &c.exits}}) {
        ojson arr = ojson::array();
        for (auto i : *list) arr.push_back(c.nodes[i].id);
        oc[key] = arr;
      }
      ojson loops = ojson::array();
      for (const auto& l : c.loops) {
        ojson ol;
        ol["id"] = l.id;
        ol["header"] = c.nodes[l.header].id;
        ojson members = ojson::array();
        for (auto m : l.members) members.push_back(c.nodes[m].id);
        ol["members"] = members;
        if (l.unbounded) ol["unbounded"] = true;
        else ol["max"] = l.max_iterations;
        auto prov = provenanceJson(l.provenance);
        if (!prov.empty()) ol["provenance"] = prov;
        loops.push_back(ol);
      }
      oc["loops"] = loops;
      chans.push_back(oc);
    }
    og["channels"] = chans;
    ojson anywhere = ojson::array();
    for (const auto& n : g.anywhere) anywhere.push_back(nodeJson(n, p));
    og["anywhere"] = anywhere;
    graphs.push_back(og);
  }
  root["graphs"] = graphs;
  ojson rules = ojson::array();
  for (const auto& r : p.rules) {
    ojson o;
    o["id"] = r.id;
    if (!r.description.empty()) o["description"] = r.description;
    if (r.deny) o["deny"] = patternJson(*r.deny, p);
    if (r.after) o["after"] = patternJson(*r.after, p);
    if (r.then) o["then"] = patternJson(*r.then, p);
    if (r.then) o["max"] = r.max;
    if (r.until) o["until"] = patternJson(*r.until, p);
    auto prov = provenanceJson(r.provenance);
    if (!prov.empty()) o["provenance"] = prov;
    rules.push_back(o);
  }
  root["rules"] = rules;
  return root.dump(2) + "\n";
}

Result<void> writeFileAtomically(const std::string& path, std::string_view contents) {
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) return fail(path, std::string("cannot create temporary file: ") + std::strerror(errno));
  const bool wrote = std::fwrite(contents.data(), 1, contents.size(), f) == contents.size();
  const bool flushed = std::fflush(f) == 0 && ::fsync(::fileno(f)) == 0;
  const bool closed = std::fclose(f) == 0;
  if (!wrote || !flushed || !closed) {
    const std::string err = std::strerror(errno);
    std::remove(tmp.c_str());
    return fail(path, "write failed: " + err);
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string err = std::strerror(errno);
    std::remove(tmp.c_str());
    return fail(path, "rename failed: " + err);
  }
  return {};
}

Result<void> savePolicyFile(const DevicePolicy& policy, const std::string& path) {
  auto problems = validate(policy);
  if (!problems.empty()) return fail(path, "refusing to write an invalid policy: /" + problems.front().path + ": " + problems.front().what);
  return writeFileAtomically(path, policyToJson(policy));
}

bool policyMatches(const DevicePolicy& p, const DeviceInstance& d) {
  if (p.match.pci_vendor) {
    if (!d.pci || d.pci->vendor != *p.match.pci_vendor || d.pci->device != *p.match.pci_device) return false;
    return !p.match.pci_class || (d.pci->class_code >> 8) == (*p.match.pci_class >> 8);
  }
  if (p.match.isa_kind.empty() || d.pci || d.kind != p.match.isa_kind) return false;
  return !p.match.isa_base || (!d.isa_ports.empty() && d.isa_ports.front().base == *p.match.isa_base);
}

namespace {

// The set a policy belongs to: the directory of its file (docs/policy-format.md, "Policy sets").
std::string setOf(const DevicePolicy& p) {
  const auto dir = std::filesystem::path(p.source).parent_path().string();
  return dir.empty() ? "." : dir;
}

}  // namespace

Result<std::vector<BoundDevice>> bindPolicies(const std::vector<DeviceInstance>& devices, const std::vector<DevicePolicy>& policies,
                                              std::vector<std::string>* uncovered) {
  // Set 0 is the union of every union policy; each directory of intersect policies is one more set,
  // numbered in sorted order so a device's sets always get the same numbers.
  std::vector<std::string> intersect_sets;
  for (const auto& p : policies)
    if (p.combine == Combine::Intersect) intersect_sets.push_back(setOf(p));
  std::sort(intersect_sets.begin(), intersect_sets.end());
  intersect_sets.erase(std::unique(intersect_sets.begin(), intersect_sets.end()), intersect_sets.end());
  // One directory combines one way: a union policy beside intersect ones would silently change meaning.
  for (const auto& p : policies) {
    if (p.combine != Combine::Union || !std::binary_search(intersect_sets.begin(), intersect_sets.end(), setOf(p))) continue;
    for (const auto& q : policies)
      if (q.combine == Combine::Intersect && setOf(q) == setOf(p))
        return fail(p.source, "combines by union but " + q.source + " in the same directory combines by intersect; a directory is "
                              "one policy set and combines one way (set \"combine\" alike, or move one of them)");
  }
  std::vector<BoundDevice> out;
  for (const auto& d : devices) {
    std::vector<std::vector<DevicePolicy>> matched(1 + intersect_sets.size());
    for (const auto& p : policies) {
      if (!policyMatches(p, d)) continue;
      const std::size_t set =
          p.combine == Combine::Union
              ? 0
              : 1 + std::size_t(std::lower_bound(intersect_sets.begin(), intersect_sets.end(), setOf(p)) - intersect_sets.begin());
      matched[set].push_back(p);
    }
    bool covered = false;
    for (std::size_t set = 0; set < matched.size(); ++set) {
      if (matched[set].empty()) continue;
      covered = true;
      auto merged = mergePolicies(matched[set]);
      if (!merged) return std::unexpected(merged.error());
      BoundDevice b{d, std::move(*merged)};
      b.set = std::uint32_t(set);
      b.set_name = set == 0 ? "union" : intersect_sets[set - 1];
      out.push_back(std::move(b));
    }
    if (!covered && uncovered) uncovered->push_back(d.name);
  }
  return out;
}

}  // namespace iof
