// ioreq-filter replay: runs traces through the filter into a real QEMU device model over qtest and
// reports each refusal, every response that differs from the recording, and what became of QEMU.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <iostream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>

#include "command.h"
#include "ioreq_filter/core/engine.h"
#include "ioreq_filter/policy/policy_json.h"
#include "ioreq_filter/qemu/discovery.h"
#include "ioreq_filter/qemu/qemu_instance.h"
#include "ioreq_filter/qemu/replay.h"
#include "ioreq_filter/trace/trace.h"
#include "support/policy_set.h"

namespace iof::cli {
namespace {

struct ReplayOptions {
  std::vector<std::string> policy_files, policy_dirs, traces;
  std::string qemu_args, qemu_binary;
  bool no_filter = false, json = false, all_steps = false, stop_at_first_refusal = false;
  std::size_t show = 20;
  unsigned timeout_ms = 10'000;
  std::string mode_name = "enforce";
  Mode mode = Mode::Enforce;
};

std::string hex(std::uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(v));
  return buf;
}

// What the graph expected is only known before the refused request is judged, so the engine is
// wrapped to write that down at refusal time (control plane: allocation is fine here).
class ExplainingFilter final : public RequestFilter {
 public:
  ExplainingFilter(Engine& engine, std::vector<std::string>& expected) : engine_(engine), expected_(expected) {}
  Verdict onRequest(const IoRequest& request) noexcept override {
    const Verdict v = engine_.onRequest(request);
    try {
      expected_.push_back(!v.forwarded() && v.device >= 0 ? engine_.expectedNext(std::size_t(v.device)) : std::string());
    } catch (...) {
      expected_.emplace_back();
    }
    return v;
  }
  void onResponse(const IoRequest& request, std::uint64_t value) noexcept override { engine_.onResponse(request, value); }

 private:
  Engine& engine_;
  std::vector<std::string>& expected_;
};

nlohmann::ordered_json fateJson(const qemu::Fate& f) {
  nlohmann::ordered_json j{{"state", qemu::toString(f.kind)}};
  if (f.kind == qemu::FateKind::Exited) j["exit_status"] = f.exit_status;
  if (f.kind == qemu::FateKind::Crashed) j["signal"] = f.signal;
  if (!f.detail.empty()) j["detail"] = f.detail;
  return j;
}

struct TraceOutcome {
  int exit = kExitOk;
  nlohmann::ordered_json json;
};

TraceOutcome replayOne(const ReplayOptions& o, const std::string& path, const std::vector<DevicePolicy>& policies) {
  TraceOutcome out;
  auto complain = [&](int code, const std::string& message) {
    std::cerr << "ioreq-filter replay: " << message << "\n";
    out.exit = code;
    return out;
  };
  auto source = readTraceText(path);
  if (!source) return complain(kExitBadInput, source.error().message());
  auto trace = parseTrace(*source, path);
  if (!trace) return complain(kExitBadInput, trace.error().message());
  // Lines accepted the way QEMU reads them, though they say more than QEMU uses: the user must know.
  for (const auto& w : trace->warnings) std::cerr << "ioreq-filter replay: warning: " << w.message() << "\n";
  std::vector<std::string> machine = trace->qemu_argv;
  std::string machine_from = path + ": '# qemu:' header";
  if (!o.qemu_args.empty()) {
    auto words = splitShellWords(o.qemu_args, "--qemu-args");
    if (!words) return complain(kExitBadInput, words.error().message());
    machine = *words;
    machine_from = "--qemu-args";
  }
  auto headless = qemu::dropDisplayOptions(machine, machine_from);
  if (!headless) return complain(kExitBadInput, headless.error().message());
  for (const auto& n : headless->notes) std::cerr << "ioreq-filter replay: note: " << machine_from << ": " << n << "\n";
  machine = std::move(headless->args);
  if (machine.empty()) return complain(kExitBadInput, path + ": no '# qemu:' header; give --qemu-args");

  qemu::LaunchOptions launch;
  launch.binary = o.qemu_binary;
  launch.machine_args = machine;
  launch.command_timeout = std::chrono::milliseconds(o.timeout_ms);
  auto q = qemu::QemuInstance::launch(launch);
  if (!q) {
    // QEMU rejecting the machine is bad input; failing to run QEMU at all is the environment's fault.
    const bool bad_machine =
        q.error().what.find("before it was ready") != std::string::npos || q.error().where == "qemu arguments";
    return complain(bad_machine ? kExitBadInput : kExitInternal, path + ": " + q.error().message());
  }
  qemu::QemuInstance& qemu = **q;

  std::unique_ptr<Engine> engine;
  std::vector<std::string> uncovered;
  std::vector<std::string> expected;  // per filtered request, in order
  std::unique_ptr<ExplainingFilter> filter;
  if (!o.no_filter) {
    auto devices = qemu::discoverDevices(qemu.qmp(), &qemu.qtest());
    if (!devices) return complain(kExitInternal, path + ": device discovery failed: " + devices.error().message());
    auto bound = bindPolicies(*devices, policies, &uncovered);
    if (!bound) return complain(kExitBadInput, path + ": " + bound.error().message());
    EngineOptions eo;
    eo.mode = o.mode;
    auto created = Engine::create(std::move(*bound), eo);
    if (!created) return complain(kExitBadInput, path + ": " + created.error().message());
    engine = std::move(*created);
    filter = std::make_unique<ExplainingFilter>(*engine, expected);
  }
  qemu::ReplayOptions ro;
  ro.stop_at_first_refusal = o.stop_at_first_refusal;
  auto report = qemu::replayTrace(*trace, qemu, filter.get(), ro);
  if (!report) return complain(kExitInternal, report.error().message());
  if (report->fate.kind == qemu::FateKind::Hung) qemu.kill();
  else if (report->fate.kind == qemu::FateKind::Running) (void)qemu.shutdown();

  auto& j = out.json;
  j["trace"] = path;
  j["machine"] = trace->qemu_args;
  nlohmann::ordered_json warnings = nlohmann::ordered_json::array();
  for (const auto& w : trace->warnings) warnings.push_back(w.message());
  j["warnings"] = warnings;
  j["filter"] = o.no_filter ? "none" : "engine";
  if (engine) j["mode"] = toString(o.mode);
  if (engine) {
    nlohmann::ordered_json jd = nlohmann::ordered_json::array();
    for (std::size_t d = 0; d < engine->deviceCount(); ++d)
      jd.push_back({{"device", engine->device(d).instance.name}, {"policy", engine->device(d).policy.source},
                    {"set", engine->device(d).set_name}});
    j["filtered_devices"] = jd;
    j["uncovered_devices"] = uncovered;
  }
  j["commands"] = trace->commands.size();
  j["executed"] = report->steps.size();
  j["requests"] = report->io_requests;
  j["forwarded"] = report->forwarded;
  j["refused"] = report->refused;
  j["mismatches"] = report->mismatches;
  j["skipped"] = report->skipped;
  j["qemu_errors"] = report->qemu_errors;
  j["completed"] = report->completed;
  if (report->stopped_at_line) j["stopped_at_line"] = *report->stopped_at_line;
  if (report->first_refusal_line) j["first_refusal_line"] = *report->first_refusal_line;
  j["trigger_lines"] = report->trigger_lines;
  // Which filtered devices the trigger accesses go to: a reproducer is only expected to be refused
  // when its harmful access reaches a device some policy covers.
  nlohmann::ordered_json trigger_devices = nlohmann::ordered_json::array();
  for (const auto& s : report->steps) {
    const TraceCommand& c = trace->commands[s.command];
    if (c.trigger && engine && s.is_io && s.verdict.device >= 0)
      trigger_devices.push_back(engine->device(std::size_t(s.verdict.device)).instance.name);
  }
  j["trigger_devices"] = trigger_devices;
  if (!report->trigger_lines.empty()) j["refused_before_trigger"] = report->refusedAtOrBeforeTrigger();
  // Monitor and learn mode forward everything; what enforce mode would have refused is reported apart.
  std::size_t would_refuse = 0;
  std::optional<std::size_t> first_would_refuse_line;
  for (const auto& s : report->steps)
    if (s.is_io && s.verdict.monitored && ++would_refuse == 1) first_would_refuse_line = s.line;
  std::size_t learned = 0;
  if (engine && o.mode == Mode::Learn) learned = engine->takeLearnEvents().size() + engine->counters().learn_overflow;
  if (engine && o.mode != Mode::Enforce) {
    j["would_refuse"] = would_refuse;
    if (first_would_refuse_line) j["first_would_refuse_line"] = *first_would_refuse_line;
    if (!report->trigger_lines.empty())
      j["would_refuse_before_trigger"] = first_would_refuse_line && *first_would_refuse_line <= report->trigger_lines.front();
  }
  if (engine && o.mode == Mode::Learn) j["learned_transitions"] = learned;
  j["qemu"] = fateJson(report->fate);
  j["notes"] = report->notes;

  nlohmann::ordered_json refusals = nlohmann::ordered_json::array(), mismatches = nlohmann::ordered_json::array(),
                         steps = nlohmann::ordered_json::array(), errors = nlohmann::ordered_json::array();
  std::vector<std::string> refusal_text, mismatch_text, error_text;
  std::size_t filtered_index = 0;
  for (const auto& s : report->steps) {
    const TraceCommand& c = trace->commands[s.command];
    std::string why;
    if (s.is_io) {
      const std::string exp = filtered_index < expected.size() ? expected[filtered_index] : std::string();
      ++filtered_index;
      if (!s.verdict.forwarded() || s.verdict.monitored) {
        nlohmann::ordered_json r{{"line", s.line}, {"request", describe(s.request)}, {"reason", toString(s.verdict.reason)}};
        if (s.verdict.monitored) r["forwarded"] = true;
        std::string text = path + ":" + std::to_string(s.line) + ": " + describe(s.request) + "\n      reason " +
                           toString(s.verdict.reason);
        if (s.verdict.reason == Reason::Malformed) r["malformation"] = toString(s.verdict.malformation);
        if (engine && s.verdict.device >= 0) {
          const auto dev = std::size_t(s.verdict.device);
          r["device"] = engine->device(dev).instance.name;
          r["graph"] = engine->graphName(dev, s.verdict.graph);
          text += ", device " + engine->device(dev).instance.name + " (graph " + engine->graphName(dev, s.verdict.graph) + ")";
          r["set"] = engine->device(dev).set_name;
          if (engine->setCount() > 1) text += ", refused by policy set " + engine->device(dev).set_name;
          if (s.verdict.rule >= 0) {
            r["rule"] = engine->device(dev).policy.rules[std::size_t(s.verdict.rule)].id;
            text += ", rule " + r["rule"].get<std::string>();
          }
          if (!exp.empty()) r["expected"] = exp, text += "\n      expected: " + exp;
        }
        refusals.push_back(r);
        if (refusal_text.size() < o.show) refusal_text.push_back(text);
      }
    }
    if (s.mismatch) {
      mismatches.push_back({{"line", s.line}, {"command", toQtest(c)}, {"response", hex(*s.response)},
                            {"recorded", hex(*s.expected)}, {"forwarded", s.forwarded}});
      if (mismatch_text.size() < o.show)
        mismatch_text.push_back(path + ":" + std::to_string(s.line) + ": " + toQtest(c) + " returned " + hex(*s.response) +
                                ", recorded " + hex(*s.expected) + (s.forwarded ? "" : " (refused: completed with all-ones)"));
    }
    if (!s.qemu_error.empty()) {
      errors.push_back({{"line", s.line}, {"command", toQtest(c)}, {"answer", s.qemu_error}});
      if (error_text.size() < o.show) error_text.push_back(path + ":" + std::to_string(s.line) + ": " + toQtest(c) + " -> " + s.qemu_error);
    }
    if (o.all_steps) {
      nlohmann::ordered_json js{{"line", s.line}, {"command", toQtest(c)}};
      if (s.is_io) js["verdict"] = s.verdict.forwarded() ? "forward" : std::string("refuse:") + toString(s.verdict.reason);
      if (engine && s.is_io && s.verdict.device >= 0) js["device"] = engine->device(std::size_t(s.verdict.device)).instance.name;
      js["forwarded"] = s.forwarded;
      if (s.skipped) js["skipped"] = true;
      if (s.response) js["response"] = hex(*s.response);
      if (s.expected) js["recorded"] = hex(*s.expected);
      steps.push_back(js);
    }
  }
  // In monitor/learn mode these are the would-be refusals (each marked "forwarded": true).
  j["refusals"] = refusals;
  j["response_mismatches"] = mismatches;
  j["qemu_refused_commands"] = errors;
  if (o.all_steps) j["steps"] = steps;
  out.exit = report->refused > 0 ? kExitRefused : kExitOk;

  if (!o.json) {
    std::cout << "trace " << path << "\n";
    if (!trace->qemu_args.empty() || !o.qemu_args.empty())
      std::cout << "  machine: " << (o.qemu_args.empty() ? trace->qemu_args : o.qemu_args) << "\n";
    if (engine) {
      if (engine->deviceCount() == 0) std::cout << "  filtered: none (no policy matches a device of this machine)\n";
      for (std::size_t d = 0; d < engine->deviceCount(); ++d)
        std::cout << "  filtered: " << engine->device(d).instance.name << " <- " << engine->device(d).policy.source
                  << (engine->setCount() > 1 ? " (set " + engine->device(d).set_name + ")" : std::string()) << "\n";
    } else {
      std::cout << "  filter: none (--no-filter)\n";
    }
    if (engine) std::cout << "  mode: " << toString(o.mode) << "\n";
    const char* refusal_label = o.mode == Mode::Enforce ? "  REFUSED " : "  WOULD REFUSE ";
    for (const auto& t : refusal_text) std::cout << refusal_label << t << "\n";
    const std::size_t reported = report->refused + would_refuse;
    if (reported > refusal_text.size())
      std::cout << "  ... " << reported - refusal_text.size() << (o.mode == Mode::Enforce ? " more refusals\n" : " more would-be refusals\n");
    for (const auto& t : mismatch_text) std::cout << "  RESPONSE DIFFERS " << t << "\n";
    if (report->mismatches > mismatch_text.size())
      std::cout << "  ... " << report->mismatches - mismatch_text.size() << " more differing responses\n";
    for (const auto& t : error_text) std::cout << "  QEMU REFUSED COMMAND " << t << "\n";
    if (o.all_steps) {
      for (const auto& s : steps) std::cout << "  step " << s.dump() << "\n";
    }
    for (const auto& n : report->notes) std::cout << "  note: " << n << "\n";
    std::cout << "  executed " << report->steps.size() << " of " << trace->commands.size() << " commands; requests "
              << report->io_requests << ", forwarded " << report->forwarded << ", refused " << report->refused
              << ", responses differing " << report->mismatches << ", skipped " << report->skipped << "\n";
    if (engine && o.mode != Mode::Enforce)
      std::cout << "  " << toString(o.mode) << " mode: would refuse " << would_refuse << " (forwarded anyway)"
                << (o.mode == Mode::Learn ? ", learned transitions " + std::to_string(learned) : std::string()) << "\n";
    if (!report->trigger_lines.empty()) {
      std::cout << "  trigger line " << report->trigger_lines.front() << ": ";
      if (report->refusedAtOrBeforeTrigger())
        std::cout << "refused before it (first refusal at line " << *report->first_refusal_line << ")\n";
      else if (report->first_refusal_line)
        std::cout << "NOT refused before it (first refusal at line " << *report->first_refusal_line << ")\n";
      else
        std::cout << "NOT refused\n";
      if (engine && o.mode != Mode::Enforce) {
        std::cout << "  trigger line " << report->trigger_lines.front() << " (" << toString(o.mode) << "): ";
        if (first_would_refuse_line && *first_would_refuse_line <= report->trigger_lines.front())
          std::cout << "would have been refused before it (first at line " << *first_would_refuse_line << ")\n";
        else
          std::cout << "would NOT have been refused before it\n";
      }
    }
    std::cout << "  QEMU: " << (report->fate.kind == qemu::FateKind::Running ? std::string("survived (running at the end of the trace)") : qemu::describe(report->fate));
    if (report->stopped_at_line) std::cout << " (at " << path << ":" << *report->stopped_at_line << ")";
    std::cout << "\n";
  }
  return out;
}

int run(ReplayOptions o) {
  std::vector<DevicePolicy> policies;
  if (o.no_filter) {
    if (!o.policy_files.empty() || !o.policy_dirs.empty()) {
      std::cerr << "ioreq-filter replay: --no-filter contradicts --policy/--policy-dir\n";
      return kExitBadInput;
    }
  } else {
    auto loaded = loadPolicies(o.policy_files, o.policy_dirs);
    if (!loaded) {
      std::cerr << "ioreq-filter replay: " << loaded.error().message() << "\n";
      return kExitBadInput;
    }
    if (loaded->empty()) {
      std::cerr << "ioreq-filter replay: no policies given (--policy FILE or --policy-dir DIR, or --no-filter)\n";
      return kExitBadInput;
    }
    policies = std::move(*loaded);
  }
  if (o.mode_name == "enforce") o.mode = Mode::Enforce;
  else if (o.mode_name == "monitor") o.mode = Mode::Monitor;
  else if (o.mode_name == "learn") o.mode = Mode::Learn;
  else {
    std::cerr << "ioreq-filter replay: --mode must be enforce, monitor or learn, not '" << o.mode_name << "'\n";
    return kExitBadInput;
  }
  if (o.no_filter && o.mode != Mode::Enforce) {
    std::cerr << "ioreq-filter replay: --no-filter contradicts --mode " << o.mode_name << "\n";
    return kExitBadInput;
  }
  if (o.timeout_ms == 0) {
    std::cerr << "ioreq-filter replay: --timeout must be at least 1 ms\n";
    return kExitBadInput;
  }
  int worst = kExitOk;
  nlohmann::ordered_json report = nlohmann::ordered_json::array();
  for (const auto& path : o.traces) {
    TraceOutcome t = replayOne(o, path, policies);
    // Precedence: an internal error over bad input over a refusal over success.
    auto rank = [](int code) { return code == kExitInternal ? 3 : code == kExitBadInput ? 2 : code == kExitRefused ? 1 : 0; };
    if (rank(t.exit) > rank(worst)) worst = t.exit;
    if (!t.json.is_null()) report.push_back(std::move(t.json));
  }
  if (o.json) std::cout << report.dump(2) << "\n";
  return worst;
}

RunFn setup(CLI::App& app) {
  auto o = std::make_shared<ReplayOptions>();
  auto* sub = app.add_subcommand("replay", "Replay traces through the filter into a real QEMU device model (qtest)");
  addPolicyOptions(*sub, o->policy_files, o->policy_dirs);
  sub->add_flag("--no-filter", o->no_filter, "Forward every request (QEMU's behaviour without the filter)");
  sub->add_option("--qemu-args", o->qemu_args, "QEMU machine arguments (default: the trace's '# qemu:' header)");
  sub->add_option("--qemu", o->qemu_binary, "QEMU binary (default: $IOREQ_FILTER_QEMU or qemu-system-x86_64)");
  sub->add_option("--timeout", o->timeout_ms, "Milliseconds QEMU may take to answer one command before it counts as hung (default 10000)");
  sub->add_option("--mode", o->mode_name,
                  "enforce (default): refuse what the policy refuses; monitor: forward everything, report and count "
                  "what would be refused; learn: like monitor, and record the missing transitions");
  sub->add_flag("--stop-at-first-refusal", o->stop_at_first_refusal, "End the replay at the first refused request");
  sub->add_option("--show", o->show, "Refusals and differing responses printed per trace (default 20)");
  sub->add_flag("--all-steps", o->all_steps, "Report every command's verdict and response");
  sub->add_flag("--json", o->json, "Machine-readable report");
  sub->add_option("traces", o->traces, "Trace files (qtest scripts, optionally .xz)")->required();
  return [o] { return run(*o); };
}

IOF_REGISTER_COMMAND(setup);

}  // namespace
}  // namespace iof::cli
