// Subcommands of `ioreq-filter` register themselves, so each lives in its own file
// (`*_command.cpp` in this directory) and components add commands without editing main().
#pragma once

#include <functional>

namespace CLI {
class App;
}

namespace iof::cli {

// Exit codes shared by every subcommand.
inline constexpr int kExitOk = 0;
inline constexpr int kExitInternal = 1;
inline constexpr int kExitBadInput = 2;
inline constexpr int kExitRefused = 3;

// setup(app) adds a subcommand (app.add_subcommand(...)) with its options bound to state it owns,
// and returns the function that runs it once parsing selected it. The function returns the exit code.
using RunFn = std::function<int()>;
using SetupFn = std::function<RunFn(CLI::App& app)>;

bool registerCommand(SetupFn setup);

}  // namespace iof::cli

#define IOF_CLI_CONCAT_(a, b) a##b
#define IOF_CLI_CONCAT(a, b) IOF_CLI_CONCAT_(a, b)
// IOF_REGISTER_COMMAND(setupFunction) at namespace scope in a *_command.cpp file.
#define IOF_REGISTER_COMMAND(fn) \
  static const bool IOF_CLI_CONCAT(iof_registered_command_, __LINE__) = ::iof::cli::registerCommand(fn)
