// ioreq-filter: the dom0/offline command line. Only main() turns errors into exit codes.
#include <CLI/CLI.hpp>

#include <exception>
#include <iostream>
#include <memory>
#include <utility>
#include <vector>

#include "command.h"

namespace iof::cli {
namespace {
std::vector<SetupFn>& registry() {
  static std::vector<SetupFn> commands;
  return commands;
}
}  // namespace

bool registerCommand(SetupFn setup) {
  registry().push_back(std::move(setup));
  return true;
}
}  // namespace iof::cli

int main(int argc, char** argv) {
  using namespace iof::cli;
  CLI::App app{"ioreq-filter: filter a Xen guest's emulated-device I/O by the sequences its drivers can produce"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "ioreq-filter 0.1.0");
  std::vector<std::pair<CLI::App*, RunFn>> commands;
  for (auto& setup : registry()) {
    const auto before = app.get_subcommands({}).size();
    RunFn run = setup(app);
    auto subs = app.get_subcommands({});
    if (subs.size() > before) commands.emplace_back(subs.back(), std::move(run));
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    return rc == 0 ? kExitOk : kExitBadInput;
  }
  try {
    for (auto& [sub, run] : commands) {
      if (sub->parsed()) return run();
    }
    std::cerr << "ioreq-filter: no subcommand given\n";
    return kExitBadInput;
  } catch (const std::exception& e) {
    std::cerr << "ioreq-filter: internal error: " << e.what() << "\n";
    return kExitInternal;
  }
}
