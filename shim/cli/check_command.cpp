// ioreq-filter check: runs traces through the engine with the machine's real device layout.
// requires: ioreq_qemu ioreq_trace ioreq_policy
#include <CLI/CLI.hpp>

#include <iostream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>

#include "command.h"
#include "ioreq_filter/core/engine.h"
#include "ioreq_filter/core/region_report.h"
#include "ioreq_filter/policy/policy_json.h"
#include "ioreq_filter/qemu/discovery.h"
#include "ioreq_filter/qemu/qemu_instance.h"
#include "ioreq_filter/trace/trace.h"
#include "support/policy_set.h"

namespace iof::cli {
namespace {

struct CheckOptions {
  std::vector<std::string> policy_files, policy_dirs, bindings, traces;
  std::string qemu_args;
  bool json = false;
  bool regions = false;
  std::size_t show = 20;
  std::string mode = "enforce";
};

struct Refusal {
  std::size_t line = 0;
  std::string request, device, set, reason, graph, node, rule, expected;
};

std::string deviceLabel(const DeviceInstance& d) {
  char buf[64] = "";
  if (d.pci)
    std::snprintf(buf, sizeof buf, " (%04x:%04x at %s)", d.pci->vendor, d.pci->device, toString(d.sbdf).c_str());
  else if (!d.isa_ports.empty())
    std::snprintf(buf, sizeof buf, " (%s at 0x%llx)", d.kind.c_str(), static_cast<unsigned long long>(d.isa_ports.front().base));
  return d.name + buf;
}

std::string hexText(std::uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(v));
  return buf;
}

const char* spaceName(RegionSpace s) { return s == RegionSpace::Io ? "io" : s == RegionSpace::Mem ? "mem" : "config"; }

std::string joined(const std::vector<std::string>& words) {
  std::string out;
  for (const auto& w : words) out += (out.empty() ? "" : ", ") + w;
  return out;
}

// Why a region has its status, in words: which graphs or rules judge it, or the reason given.
std::string regionDetail(const RegionRow& row) {
  if (row.status != RegionStatus::Filtered) return row.reason;
  std::string out;
  if (row.standard_config) out = "built-in PCI-core config rules";
  else if (row.graphless) out = "no graphs in the policy";
  else if (row.graphs.empty()) out = "no graph has a node in it: every access is refused";
  else out = (row.graphs.size() == 1 ? "graph " : "graphs ") + joined(row.graphs);
  if (!row.rules.empty()) out += "; stop-gap rules " + joined(row.rules);
  return out;
}

// Where the row lies: "ports 0x3f0..0x3f7", "BAR1 mem +0x0..+0xff of 0x100, at 0xfebf1000", "config 0x0..0xff".
std::string regionWhere(const RegionRow& row) {
  const std::string end = hexText(row.offset + (row.length ? row.length - 1 : 0));
  if (row.space == RegionSpace::Config) return "config " + hexText(row.offset) + ".." + end;
  const std::string at = row.address == kNotDecoded ? "not decoded" : "at " + hexText(row.address);
  if (row.bar < 0)
    return std::string(row.space == RegionSpace::Io ? "ports " : "mem ") + hexText(row.address) + ".." +
           hexText(row.address + (row.length ? row.length - 1 : 0));
  const std::string size = row.bar_size ? " of " + hexText(row.bar_size) : std::string(" (BAR not implemented)");
  return "BAR" + std::to_string(row.bar) + " " + spaceName(row.space) + " +" + hexText(row.offset) + "..+" + end + size + ", " + at;
}

nlohmann::ordered_json regionsJson(const Engine& e, const std::vector<DeviceRegions>& report) {
  nlohmann::ordered_json out = nlohmann::ordered_json::array();
  for (const auto& dev : report) {
    nlohmann::ordered_json rows = nlohmann::ordered_json::array();
    for (const auto& row : dev.rows) {
      nlohmann::ordered_json j{{"name", row.name}, {"space", spaceName(row.space)}};
      j["bar"] = row.bar >= 0 ? nlohmann::ordered_json(row.bar) : nlohmann::ordered_json(nullptr);
      j["bar_size"] = row.bar >= 0 ? nlohmann::ordered_json(row.bar_size) : nlohmann::ordered_json(nullptr);
      j["offset"] = row.offset;
      j["length"] = row.length;
      j["address"] = row.address == kNotDecoded || row.space == RegionSpace::Config ? nlohmann::ordered_json(nullptr)
                                                                                  : nlohmann::ordered_json(row.address);
      j["status"] = toString(row.status);
      j["graphs"] = row.graphs;
      j["rules"] = row.rules;
      j["standard_config"] = row.standard_config;
      j["reason"] = row.status == RegionStatus::Filtered ? regionDetail(row) : row.reason;
      rows.push_back(std::move(j));
    }
    out.push_back({{"device", deviceLabel(e.device(dev.device).instance)},
                   {"policy", e.device(dev.device).policy.source},
                   {"set", e.device(dev.device).set_name},
                   {"regions", std::move(rows)}});
  }
  return out;
}

void printRegions(const Engine& e, const std::vector<DeviceRegions>& report) {
  for (const auto& dev : report) {
    std::cout << "  regions of " << deviceLabel(e.device(dev.device).instance) << " <- " << e.device(dev.device).policy.source
              << (e.setCount() > 1 ? " (set " + e.device(dev.device).set_name + ")" : std::string()) << ":\n";
    for (const auto& row : dev.rows) {
      std::cout << "    " << row.name << ": " << regionWhere(row) << " - " << toString(row.status);
      if (const auto detail = regionDetail(row); !detail.empty()) std::cout << " (" << detail << ")";
      std::cout << "\n";
    }
  }
}

int run(const CheckOptions& o) {
  auto policies = loadPolicies(o.policy_files, o.policy_dirs);
  if (!policies) {
    std::cerr << "ioreq-filter check: " << policies.error().message() << "\n";
    return kExitBadInput;
  }
  if (policies->empty()) {
    std::cerr << "ioreq-filter check: no policies given (--policy FILE or --policy-dir DIR)\n";
    return kExitBadInput;
  }
  Mode mode = Mode::Enforce;
  if (o.mode == "monitor") mode = Mode::Monitor;
  else if (o.mode == "learn") mode = Mode::Learn;
  else if (o.mode != "enforce") {
    std::cerr << "ioreq-filter check: --mode must be enforce, monitor or learn\n";
    return kExitBadInput;
  }
  std::vector<DeviceInstance> bound_by_hand;
  for (const auto& spec : o.bindings) {
    auto d = parseBinding(spec, *policies);
    if (!d) {
      std::cerr << "ioreq-filter check: " << d.error().message() << "\n";
      return kExitBadInput;
    }
    bound_by_hand.push_back(std::move(*d));
  }
  std::map<std::string, std::vector<DeviceInstance>> discovered;  // by machine arguments
  nlohmann::ordered_json report = nlohmann::ordered_json::array();
  bool any_refused = false;
  bool bind_note_given = false;
  for (const auto& path : o.traces) {
    auto text = readTraceText(path);
    if (!text) {
      std::cerr << "ioreq-filter check: " << text.error().message() << "\n";
      return kExitBadInput;
    }
    auto trace = parseTrace(*text, path);
    if (!trace) {
      std::cerr << "ioreq-filter check: " << trace.error().message() << "\n";
      return kExitBadInput;
    }
    // Lines accepted the way QEMU reads them, though they say more than QEMU uses: the user must know.
    for (const auto& w : trace->warnings) std::cerr << "ioreq-filter check: warning: " << w.message() << "\n";
    std::vector<std::string> machine = trace->qemu_argv;
    std::string machine_from = path + ": '# qemu:' header";
    if (!o.qemu_args.empty()) {
      auto words = splitShellWords(o.qemu_args, "--qemu-args");
      if (!words) {
        std::cerr << "ioreq-filter check: " << words.error().message() << "\n";
        return kExitBadInput;
      }
      machine = *words;
      machine_from = "--qemu-args";
    }
    auto headless = qemu::dropDisplayOptions(machine, machine_from);
    if (!headless) {
      std::cerr << "ioreq-filter check: " << headless.error().message() << "\n";
      return kExitBadInput;
    }
    for (const auto& n : headless->notes) std::cerr << "ioreq-filter check: note: " << machine_from << ": " << n << "\n";
    machine = std::move(headless->args);
    std::vector<DeviceInstance> devices = bound_by_hand;
    if (o.bindings.empty()) {
      if (machine.empty()) {
        std::cerr << "ioreq-filter check: " << path << ": no '# qemu:' header; give --qemu-args or --bind\n";
        return kExitBadInput;
      }
      std::string key;
      for (const auto& w : machine) key += w + '\x1f';
      if (!discovered.count(key)) {
        auto found = qemu::discoverMachine(machine);
        if (!found) {
          std::cerr << "ioreq-filter check: " << path << ": device discovery failed: " << found.error().message() << "\n";
          return kExitInternal;
        }
        discovered[key] = std::move(*found);
      }
      devices = discovered[key];
    }
    std::vector<std::string> uncovered;
    auto bound = bindPolicies(devices, *policies, &uncovered);
    if (!bound) {
      std::cerr << "ioreq-filter check: " << bound.error().message() << "\n";
      return kExitBadInput;
    }
    if (bound->empty()) {
      // Every request would be "to unfiltered devices" and the run would report "refused 0": fail closed.
      std::cerr << "ioreq-filter check: " << path << ": no policy matches any of the machine's " << devices.size()
                << " devices, so nothing would be filtered (policies: ";
      for (std::size_t i = 0; i < policies->size(); ++i) std::cerr << (i ? ", " : "") << (*policies)[i].name;
      std::cerr << ")\n";
      return kExitBadInput;
    }
    EngineOptions eo;
    eo.mode = mode;
    auto engine = Engine::create(std::move(*bound), eo);
    if (!engine) {
      std::cerr << "ioreq-filter check: " << path << ": " << engine.error().message() << "\n";
      return kExitBadInput;
    }
    Engine& e = **engine;
    if (o.regions && !o.bindings.empty() && !bind_note_given) {
      // --bind builds BARs from the policy's own regions, so no BAR can be uncovered: say so, not "all filtered".
      std::cerr << "ioreq-filter check: note: --regions with --bind shows the BARs the policy names, sized by the policy; "
                   "the machine's other BARs (refused as uncovered) show only with its real layout (--qemu-args or the trace's header)\n";
      bind_note_given = true;
    }
    std::vector<Refusal> refusals;
    std::size_t total_refusals = 0, monitored = 0;
    std::optional<std::size_t> first_refusal;
    for (const auto& cmd : trace->commands) {
      auto req = toIoRequest(cmd);
      if (!req) continue;
      // What the graph expected is only known before the request moves the cursor.
      const Verdict v = e.onRequest(*req);
      if (v.monitored) ++monitored;
      if (v.forwarded() && !v.monitored) continue;
      if (v.forwarded() && v.monitored) {
        // Monitor/learn mode: reported, not refused.
      }
      ++total_refusals;
      if (!first_refusal) first_refusal = cmd.line;
      if (refusals.size() < o.show || o.json) {
        Refusal r;
        r.line = cmd.line;
        r.request = describe(*req);
        r.reason = v.reason == Reason::Malformed ? std::string("malformed: ") + toString(v.malformation) : toString(v.reason);
        if (v.device >= 0) {
          r.device = e.device(std::size_t(v.device)).instance.name;
          r.set = e.device(std::size_t(v.device)).set_name;
          r.graph = e.graphName(std::size_t(v.device), v.graph);
          if (v.rule >= 0) r.rule = e.device(std::size_t(v.device)).policy.rules[std::size_t(v.rule)].id;
          // An uncovered BAR is refused whatever the graphs expect: their next steps explain nothing there.
          if (mode == Mode::Enforce && v.reason != Reason::Uncovered) r.expected = e.expectedNext(std::size_t(v.device));
        }
        refusals.push_back(std::move(r));
      }
    }
    const auto triggers = trace->triggerLines();
    any_refused |= total_refusals > 0;

    nlohmann::ordered_json jt;
    jt["trace"] = path;
    jt["machine"] = trace->qemu_args;
    jt["mode"] = toString(mode);
    nlohmann::ordered_json jd = nlohmann::ordered_json::array();
    for (std::size_t d = 0; d < e.deviceCount(); ++d) {
      const auto& c = e.counters(d);
      jd.push_back({{"device", deviceLabel(e.device(d).instance)},
                    {"policy", e.device(d).policy.source},
                    {"set", e.device(d).set_name},
                    {"forwarded", c.forwarded},
                    {"refused", {{"order", c.refused_order}, {"value", c.refused_value}, {"count", c.refused_count},
                                 {"stop-gap", c.refused_stopgap}, {"malformed", c.refused_malformed}, {"needs-data", c.needs_data},
                                 {"uncovered-region", c.refused_uncovered}}},
                    {"passed", c.passed},
                    {"monitored", c.monitored}});
    }
    jt["devices"] = jd;
    nlohmann::ordered_json ju = nlohmann::ordered_json::array();
    for (const auto& u : e.unboundRegions())
      ju.push_back({{"device", e.device(u.device).instance.name}, {"region", e.device(u.device).policy.regions[u.region].name},
                    {"reason", u.reason}});
    jt["unbound_regions"] = ju;
    jt["uncovered_devices"] = uncovered;
    // After the trace: addresses are where the trace (or firmware) left the BARs.
    const auto regions = o.regions ? describeRegions(e) : std::vector<DeviceRegions>{};
    if (o.regions) jt["regions"] = regionsJson(e, regions);
    jt["requests"] = e.counters().requests;
    jt["unclaimed"] = e.counters().unclaimed;
    jt["malformed"] = e.counters().malformed;
    jt["refusals_total"] = total_refusals;
    if (first_refusal) jt["first_refusal_line"] = *first_refusal;
    jt["trigger_lines"] = triggers;
    nlohmann::ordered_json jw = nlohmann::ordered_json::array();
    for (const auto& w : trace->warnings) jw.push_back(w.message());
    jt["warnings"] = jw;
    if (!triggers.empty()) jt["refused_before_trigger"] = first_refusal && *first_refusal <= triggers.front();
    nlohmann::ordered_json jr = nlohmann::ordered_json::array();
    for (const auto& r : refusals)
      jr.push_back({{"line", r.line}, {"request", r.request}, {"device", r.device}, {"set", r.set}, {"reason", r.reason},
                    {"graph", r.graph}, {"rule", r.rule}, {"expected", r.expected}});
    jt["refusals"] = jr;
    report.push_back(jt);

    if (!o.json) {
      std::cout << "trace " << path << "\n";
      if (!trace->qemu_args.empty()) std::cout << "  machine: " << trace->qemu_args << "\n";
      for (std::size_t d = 0; d < e.deviceCount(); ++d)
        std::cout << "  filtered: " << deviceLabel(e.device(d).instance) << " <- " << e.device(d).policy.source
                  << (e.setCount() > 1 ? " (set " + e.device(d).set_name + ")" : std::string()) << "\n";
      for (const auto& u : e.unboundRegions())
        std::cout << "  unbound: " << e.device(u.device).instance.name << " region '" << e.device(u.device).policy.regions[u.region].name
                  << "': " << u.reason << "\n";
      if (o.regions) printRegions(e, regions);
      if (!uncovered.empty()) {
        std::cout << "  not covered by any policy:";
        for (const auto& u : uncovered) std::cout << " " << u;
        std::cout << "\n";
      }
      for (const auto& r : refusals) {
        std::cout << "  " << (mode == Mode::Enforce ? "REFUSED" : "WOULD REFUSE") << " " << path << ":" << r.line << ": " << r.request
                  << "\n      device " << r.device << ", reason " << r.reason;
        if (!r.rule.empty()) std::cout << " (rule " << r.rule << ")";
        else if (!r.graph.empty() && r.graph != "-") std::cout << " (graph " << r.graph << ")";
        if (e.setCount() > 1 && !r.set.empty()) std::cout << ", refused by policy set " << r.set;
        std::cout << "\n";
        if (!r.expected.empty()) std::cout << "      expected: " << r.expected << "\n";
      }
      if (total_refusals > refusals.size()) std::cout << "  ... " << total_refusals - refusals.size() << " more refusals\n";
      std::printf("  %-36s %10s %7s %7s %7s %9s %9s %9s\n", "device", "forwarded", "order", "value", "count", "stop-gap", "malformed",
                  "uncovered");
      for (std::size_t d = 0; d < e.deviceCount(); ++d) {
        const auto& c = e.counters(d);
        const std::string row = deviceLabel(e.device(d).instance) + (e.setCount() > 1 ? " [" + e.device(d).set_name + "]" : "");
        std::printf("  %-36s %10llu %7llu %7llu %7llu %9llu %9llu %9llu\n", row.c_str(),
                    (unsigned long long)c.forwarded, (unsigned long long)c.refused_order, (unsigned long long)c.refused_value,
                    (unsigned long long)c.refused_count, (unsigned long long)c.refused_stopgap, (unsigned long long)c.refused_malformed,
                    (unsigned long long)c.refused_uncovered);
      }
      std::cout << "  requests " << e.counters().requests << ", to unfiltered devices " << e.counters().unclaimed << ", refused "
                << total_refusals;
      if (mode != Mode::Enforce) std::cout << " (monitor: forwarded anyway)";
      std::cout << "\n";
      if (!triggers.empty()) {
        std::cout << "  trigger line " << triggers.front() << ": ";
        if (first_refusal && *first_refusal <= triggers.front())
          std::cout << "refused before it (first refusal at line " << *first_refusal << ")\n";
        else if (first_refusal)
          std::cout << "NOT refused before it (first refusal at line " << *first_refusal << ")\n";
        else
          std::cout << "NOT refused\n";
      }
    }
  }
  if (o.json) std::cout << report.dump(2) << "\n";
  return any_refused && mode == Mode::Enforce ? kExitRefused : kExitOk;
}

RunFn setup(CLI::App& app) {
  auto o = std::make_shared<CheckOptions>();
  auto* sub = app.add_subcommand("check", "Run traces through the filter with the machine's real device layout (no device model)");
  addPolicyOptions(*sub, o->policy_files, o->policy_dirs);
  sub->add_option("--qemu-args", o->qemu_args, "QEMU machine arguments (default: the trace's '# qemu:' header)");
  sub->add_option("--bind", o->bindings, "NAME=isa:BASE or NAME=pci:BB:DD.F: bind a policy without starting QEMU")->allow_extra_args(false);
  sub->add_option("--mode", o->mode, "enforce (default), monitor or learn");
  sub->add_option("--show", o->show, "Refusals printed per trace (default 20)");
  sub->add_flag("--json", o->json, "Machine-readable report");
  sub->add_flag("--regions", o->regions,
                "Per filtered device, every region and BAR with its status (filtered, pass, refused: uncovered, unbound), "
                "at the addresses the trace leaves them");
  sub->add_option("traces", o->traces, "Trace files (qtest scripts, optionally .xz)")->required();
  return [o] { return run(*o); };
}

IOF_REGISTER_COMMAND(setup);

}  // namespace
}  // namespace iof::cli
