// A real QEMU started paused (-S) under qtest with its own QMP socket, for as long as this object
// lives: the destructor kills it (SIGKILL) and removes its socket directory, and the child gets
// PR_SET_PDEATHSIG so it cannot outlive a crashed parent either.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "ioreq_filter/core/error.h"
#include "ioreq_filter/qemu/qmp_client.h"
#include "ioreq_filter/qemu/qtest_client.h"

namespace iof::qemu {

// What became of QEMU.
enum class FateKind {
  Running,  // alive (and answering, as far as we know)
  Exited,   // exited on its own with a status
  Crashed,  // killed by a signal (abort(), SIGSEGV, or killed from outside)
  Hung,     // alive but did not answer within the timeout
};

struct Fate {
  FateKind kind = FateKind::Running;
  int exit_status = 0;  // Exited
  int signal = 0;       // Crashed
  std::string detail;   // what we observed (last stderr line, the command that got no answer)
};
const char* toString(FateKind kind) noexcept;
std::string describe(const Fate& fate);

struct LaunchOptions {
  // The QEMU binary; empty means $IOREQ_FILTER_QEMU or else qemu-system-x86_64 from PATH.
  std::string binary;
  // The machine (a trace's `# qemu:` words). -qtest, -qmp, -S, -display none are added here.
  std::vector<std::string> machine_args;
  std::chrono::milliseconds startup_timeout{15'000};
  std::chrono::milliseconds command_timeout{10'000};
};

// Machine arguments copied from a bug report often say how to show the guest (`-display none`,
// `-nographic`). Those options add, remove or configure no device: `-display` only picks the UI, and
// `-nographic` turns the UI off and points the default serial port, parallel port and monitor (their
// chardevs, not the devices) at stdio. ioreq-filter runs QEMU headless itself (launch() adds
// `-display none`), so they are dropped here, each with a note saying so; `-vga` and the like change
// the devices and are kept. A `-display` without its value is an error naming `where`.
struct MachineArgs {
  std::vector<std::string> args;
  std::vector<std::string> notes;  // "dropped '-display none': ..."
};
Result<MachineArgs> dropDisplayOptions(const std::vector<std::string>& args, const std::string& where);

class QemuInstance {
 public:
  static Result<std::unique_ptr<QemuInstance>> launch(const LaunchOptions& options);
  ~QemuInstance();
  QemuInstance(const QemuInstance&) = delete;
  QemuInstance& operator=(const QemuInstance&) = delete;

  QtestClient& qtest() { return *qtest_; }
  QmpClient& qmp() { return *qmp_; }
  pid_t pid() const { return pid_; }
  const std::vector<std::string>& argv() const { return argv_; }

  // Non-blocking: Running, or how it ended (reaps the child).
  Fate poll();
  // Waits up to `timeout` for QEMU to end on its own; Running if it did not.
  Fate waitForExit(std::chrono::milliseconds timeout);
  // Asks QEMU to quit over QMP and waits; kills it if it does not comply in time.
  Fate shutdown(std::chrono::milliseconds timeout = std::chrono::milliseconds(5'000));
  // SIGKILL and reap: for a QEMU that hangs (QMP would only time out).
  Fate kill();
  // What QEMU wrote to stderr so far (bounded), for error messages.
  std::string stderrText() const;

 private:
  QemuInstance() = default;
  Fate reap(int status);
  pid_t pid_ = -1;
  bool reaped_ = false;
  Fate final_fate_;
  std::string dir_;
  std::vector<std::string> argv_;
  std::unique_ptr<QtestClient> qtest_;
  std::unique_ptr<QmpClient> qmp_;
};

}  // namespace iof::qemu
