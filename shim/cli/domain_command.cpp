// dom0 subcommands talking to a domain's ioreq-filterd over its UNIX control socket (root only):
//   ioreq-filter attach|detach|status|stats|reload --domid N [--json]
//   ioreq-filter mode --domid N enforce|monitor|learn [--json]
#include <CLI/CLI.hpp>

#include <iomanip>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>

#include <nlohmann/json.hpp>

#include "command.h"
#include "ioreq_filter/daemon/client.h"

namespace iof::cli {
namespace {

using json = nlohmann::json;

struct DomainArgs {
  unsigned domid = 0;
  bool as_json = false;
  std::string run_dir = daemon::kDefaultRunDir;
  std::string mode;
};

void addCommon(CLI::App* sub, DomainArgs& a) {
  sub->add_option("--domid", a.domid, "the domain")->required();
  sub->add_flag("--json", a.as_json, "print the daemon's JSON reply");
  sub->add_option("--run-dir", a.run_dir, "where the daemons' control sockets live");
}

void table(std::ostream& out, const std::vector<std::vector<std::string>>& rows) {
  std::vector<std::size_t> width;
  for (const auto& r : rows)
    for (std::size_t i = 0; i < r.size(); ++i) {
      if (width.size() <= i) width.push_back(0);
      width[i] = std::max(width[i], r[i].size());
    }
  for (const auto& r : rows) {
    for (std::size_t i = 0; i < r.size(); ++i)
      out << (i + 1 < r.size() ? std::string(r[i]) + std::string(width[i] - r[i].size() + 2, ' ') : r[i]);
    out << "\n";
  }
}

std::string str(const json& j) { return j.is_string() ? j.get<std::string>() : j.dump(); }

void printStatus(const json& r) {
  std::cout << "domid " << r.value("domid", 0) << ": "
            << (r.value("attached", false) ? "attached" : "not attached") << " (" << r.value("mode", std::string("?")) << ")";
  if (r.contains("server"))
    std::cout << ", ioreq server " << r["server"] << ", " << r["vcpus"] << " vCPUs, journal generation " << r["generation"]
              << (r.value("resumed", false) ? " (resumed after a restart)" : "");
  std::cout << "\n";
  if (r.contains("devices") && !r["devices"].empty()) {
    std::vector<std::vector<std::string>> rows{{"DEVICE", "KIND", "POLICY"}};
    for (const auto& d : r["devices"]) rows.push_back({str(d["name"]), str(d["kind"]), str(d["policy"])});
    table(std::cout, rows);
  }
  if (r.contains("uncovered") && !r["uncovered"].empty()) {
    std::cout << "emulated devices no policy covers:";
    for (const auto& u : r["uncovered"]) std::cout << " " << str(u);
    std::cout << "\n";
  }
  if (r.contains("unfiltered") && !r["unfiltered"].empty()) {
    std::cout << "allowed to run unfiltered (--unfiltered):";
    for (const auto& u : r["unfiltered"]) std::cout << " " << str(u);
    std::cout << "\n";
  }
}

void printStats(const json& r) {
  if (r.contains("relay")) {
    std::vector<std::vector<std::string>> rows{{"COUNTER", "VALUE"}};
    for (auto it = r["relay"].begin(); it != r["relay"].end(); ++it) rows.push_back({it.key(), str(it.value())});
    for (auto it = r["log"].begin(); it != r["log"].end(); ++it) rows.push_back({it.key(), str(it.value())});
    table(std::cout, rows);
  } else {
    std::cout << "domid " << r.value("domid", 0) << ": not attached\n";
  }
  if (r.contains("devices")) {
    std::cout << "\n";
    std::vector<std::vector<std::string>> rows{
        {"DEVICE", "FORWARDED", "ORDER", "VALUE", "COUNT", "STOPGAP", "MALFORMED", "UNCOVERED", "PASSED", "MONITORED"}};
    for (const auto& d : r["devices"])
      rows.push_back({str(d["name"]), str(d["forwarded"]), str(d["refused_order"]), str(d["refused_value"]),
                      str(d["refused_count"]), str(d["refused_stopgap"]), str(d["refused_malformed"]),
                      str(d.value("refused_uncovered", json(0))), str(d.value("passed", json(0))), str(d["monitored"])});
    table(std::cout, rows);
  }
}

RunFn domainCommand(CLI::App& app, const std::string& name, const std::string& help) {
  auto a = std::make_shared<DomainArgs>();
  CLI::App* sub = app.add_subcommand(name, help);
  addCommon(sub, *a);
  if (name == "mode")
    sub->add_option("mode", a->mode, "enforce | monitor | learn")->required()->check(CLI::IsMember({"enforce", "monitor", "learn"}));
  return [a, name]() -> int {
    json req{{"cmd", name}, {"domid", a->domid}};
    if (name == "mode") req["mode"] = a->mode;
    auto r = daemon::request(daemon::socketPath(a->run_dir, a->domid), req);
    if (!r) {
      if (a->as_json)
        std::cout << json{{"ok", false}, {"error", r.error().message()}}.dump(2) << "\n";
      else
        std::cerr << "ioreq-filter " << name << ": " << r.error().message() << "\n";
      return kExitInternal;
    }
    if (a->as_json) {
      std::cout << r->dump(2) << "\n";
      return kExitOk;
    }
    if (name == "status") printStatus(*r);
    else if (name == "stats") printStats(*r);
    else if (name == "mode") std::cout << "domid " << a->domid << ": mode " << str((*r)["mode"]) << "\n";
    else if (name == "reload") std::cout << "domid " << a->domid << ": policies reloaded (" << str((*r)["reloads"]) << " reloads)\n";
    else if (name == "attach") std::cout << "domid " << a->domid << ": attached, shadow " << str((*r)["shadow"]) << "\n";
    else std::cout << "domid " << a->domid << ": detached (filtered requests wait until a daemon attaches)\n";
    return kExitOk;
  };
}

IOF_REGISTER_COMMAND([](CLI::App& app) { return domainCommand(app, "attach", "attach the domain's daemon to its ioreq server again (from the journal)"); });
IOF_REGISTER_COMMAND([](CLI::App& app) { return domainCommand(app, "detach", "stop serving the domain (its filtered requests wait; never unfiltered)"); });
IOF_REGISTER_COMMAND([](CLI::App& app) { return domainCommand(app, "status", "mode, devices and their policies, devices no policy covers"); });
IOF_REGISTER_COMMAND([](CLI::App& app) { return domainCommand(app, "stats", "relay and per-device verdict counters"); });
IOF_REGISTER_COMMAND([](CLI::App& app) { return domainCommand(app, "mode", "switch between enforce, monitor and learn"); });
IOF_REGISTER_COMMAND([](CLI::App& app) { return domainCommand(app, "reload", "reload the policies without dropping a request"); });

}  // namespace
}  // namespace iof::cli
