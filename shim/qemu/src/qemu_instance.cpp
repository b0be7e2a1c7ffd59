#include "ioreq_filter/qemu/qemu_instance.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <thread>

namespace iof::qemu {
namespace {

constexpr std::size_t kStderrShown = 4000;

std::string errnoText(const char* call) { return std::string(call) + ": " + std::strerror(errno); }

std::string lastLines(std::string text, std::size_t max) {
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  if (text.size() > max) text = "..." + text.substr(text.size() - max);
  return text;
}

}  // namespace

const char* toString(FateKind kind) noexcept {
  switch (kind) {
    case FateKind::Running: return "running";
    case FateKind::Exited: return "exited";
    case FateKind::Crashed: return "crashed";
    case FateKind::Hung: return "hung";
  }
  return "?";
}

std::string describe(const Fate& f) {
  std::string out;
  switch (f.kind) {
    case FateKind::Running: out = "running"; break;
    case FateKind::Exited: out = "exited with status " + std::to_string(f.exit_status); break;
    case FateKind::Crashed:
      out = "crashed: killed by signal " + std::to_string(f.signal) + " (" + strsignal(f.signal) + ")";
      break;
    case FateKind::Hung: out = "hung"; break;
  }
  if (!f.detail.empty()) out += " — " + f.detail;
  return out;
}

Result<MachineArgs> dropDisplayOptions(const std::vector<std::string>& args, const std::string& where) {
  MachineArgs out;
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string flag = args[i].starts_with("--") ? args[i].substr(1) : args[i];
    if (flag == "-display") {
      if (i + 1 >= args.size()) return fail(where, "'" + args[i] + "' without a value (e.g. -display none)");
      out.notes.push_back("dropped '" + args[i] + " " + args[i + 1] +
                          "': it only selects QEMU's user interface, and ioreq-filter runs QEMU with -display none");
      ++i;
    } else if (flag == "-nographic") {
      out.notes.push_back("dropped '" + args[i] +
                          "': it only turns off QEMU's window and points the default serial/monitor at stdio; the "
                          "devices are the same, and ioreq-filter runs QEMU with -display none");
    } else {
      out.args.push_back(args[i]);
    }
  }
  return out;
}

Result<std::unique_ptr<QemuInstance>> QemuInstance::launch(const LaunchOptions& options) {
  // These would fight the control channels this object sets up (or detach QEMU from it).
  for (const auto& a : options.machine_args) {
    const std::string flag = a.starts_with("--") ? a.substr(1) : a;
    for (const char* reserved : {"-qtest", "-qtest-log", "-qmp", "-qmp-pretty", "-S", "-display", "-daemonize",
                                 "-nographic", "-incoming", "-pidfile", "-runas", "-chroot"}) {
      if (flag == reserved) {
        return fail("qemu arguments", "'" + a + "' is set by ioreq-filter itself (QEMU runs paused under qtest with "
                                        "its own QMP socket); remove it from the machine arguments" +
                                        (flag == "-display" || flag == "-nographic" ? " (dropDisplayOptions() does)" : ""));
      }
    }
  }
  std::unique_ptr<QemuInstance> q(new QemuInstance());
  const char* tmp = std::getenv("TMPDIR");
  std::string pattern = std::string(tmp && *tmp ? tmp : "/tmp") + "/ioreq-qemu-XXXXXX";
  if (!::mkdtemp(pattern.data())) return fail(pattern, errnoText("mkdtemp"));
  q->dir_ = pattern;
  const std::string qtest_path = q->dir_ + "/qtest.sock";
  const std::string qmp_path = q->dir_ + "/qmp.sock";
  const std::string stderr_path = q->dir_ + "/stderr.log";

  std::string binary = options.binary;
  if (binary.empty()) {
    const char* env = std::getenv("IOREQ_FILTER_QEMU");
    binary = env && *env ? env : "qemu-system-x86_64";
  }
  q->argv_ = {binary};
  q->argv_.insert(q->argv_.end(), options.machine_args.begin(), options.machine_args.end());
  for (const char* a : {"-S", "-display", "none", "-qtest"}) q->argv_.emplace_back(a);
  q->argv_.push_back("unix:" + qtest_path + ",server=on,wait=off");
  // qtest logs every command to stderr unless told otherwise; stderr is for QEMU's own complaints.
  q->argv_.insert(q->argv_.end(), {"-qtest-log", "/dev/null", "-qmp"});
  q->argv_.push_back("unix:" + qmp_path + ",server=on,wait=off");

  const int log_fd = ::open(stderr_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (log_fd < 0) return fail(stderr_path, errnoText("open"));
  int exec_pipe[2];
  if (::pipe2(exec_pipe, O_CLOEXEC) != 0) {
    ::close(log_fd);
    return fail("qemu launch", errnoText("pipe2"));
  }
  std::vector<char*> cargv;
  for (auto& a : q->argv_) cargv.push_back(a.data());
  cargv.push_back(nullptr);
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) {
    ::close(log_fd), ::close(exec_pipe[0]), ::close(exec_pipe[1]);
    return fail("qemu launch", errnoText("fork"));
  }
  if (pid == 0) {
    // Child: only async-signal-safe calls until exec.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);
    const int null_fd = ::open("/dev/null", O_RDWR);
    if (null_fd >= 0) ::dup2(null_fd, 0), ::dup2(null_fd, 1);
    ::dup2(log_fd, 2);
    ::execvp(cargv[0], cargv.data());
    const int err = errno;
    [[maybe_unused]] auto w = ::write(exec_pipe[1], &err, sizeof err);
    ::_exit(127);
  }
  q->pid_ = pid;
  ::close(log_fd);
  ::close(exec_pipe[1]);
  int exec_errno = 0;
  const ssize_t got = ::read(exec_pipe[0], &exec_errno, sizeof exec_errno);
  ::close(exec_pipe[0]);
  if (got == sizeof exec_errno) {
    return fail(binary, std::string("cannot execute QEMU: ") + std::strerror(exec_errno));
  }

  // QEMU creates both listening sockets during start-up; a QEMU that rejects its arguments exits.
  const auto deadline = Clock::now() + options.startup_timeout;
  // QEMU opens its sockets before it creates devices, so bad arguments can surface at any step.
  auto notReady = [&](const Fate& f) {
    std::string cmd;
    for (auto& a : q->argv_) cmd += (cmd.empty() ? "" : " ") + a;
    Fate shown = f;
    shown.detail.clear();
    return fail(binary, "QEMU " + describe(shown) + " before it was ready; its stderr: " +
                            lastLines(q->stderrText(), kStderrShown) + "\n  command: " + cmd);
  };
  int qtest_fd = -1, qmp_fd = -1;
  std::string last_error;
  while (qtest_fd < 0 || qmp_fd < 0) {
    Fate f = q->poll();
    if (f.kind != FateKind::Running) {
      if (qtest_fd >= 0) ::close(qtest_fd);
      if (qmp_fd >= 0) ::close(qmp_fd);
      return notReady(f);
    }
    if (qtest_fd < 0) {
      if (auto fd = LineChannel::connectUnix(qtest_path)) qtest_fd = *fd;
      else last_error = fd.error().message();
    }
    if (qmp_fd < 0) {
      if (auto fd = LineChannel::connectUnix(qmp_path)) qmp_fd = *fd;
      else last_error = fd.error().message();
    }
    if (qtest_fd >= 0 && qmp_fd >= 0) break;
    if (Clock::now() > deadline) {
      if (qtest_fd >= 0) ::close(qtest_fd);
      if (qmp_fd >= 0) ::close(qmp_fd);
      return fail(binary, "QEMU did not open its qtest/QMP sockets within " +
                              std::to_string(options.startup_timeout.count()) + " ms (" + last_error + ")");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  q->qtest_ = std::make_unique<QtestClient>(std::make_unique<LineChannel>(qtest_fd, "qtest"), options.command_timeout);
  q->qmp_ = std::make_unique<QmpClient>(std::make_unique<LineChannel>(qmp_fd, "qmp"), options.command_timeout);
  if (auto hs = q->qmp_->handshake(); !hs) {
    if (Fate f = q->waitForExit(std::chrono::milliseconds(2'000)); f.kind != FateKind::Running) return notReady(f);
    return fail(hs.error().where, hs.error().what + "; QEMU's stderr: " + lastLines(q->stderrText(), kStderrShown));
  }
  return q;
}

Fate QemuInstance::reap(int status) {
  reaped_ = true;
  Fate f;
  if (WIFSIGNALED(status)) {
    f.kind = FateKind::Crashed;
    f.signal = WTERMSIG(status);
  } else {
    f.kind = FateKind::Exited;
    f.exit_status = WEXITSTATUS(status);
  }
  const std::string err = lastLines(stderrText(), 400);
  if (!err.empty()) f.detail = "stderr: " + err;
  final_fate_ = f;
  return f;
}

Fate QemuInstance::poll() {
  if (reaped_) return final_fate_;
  int status = 0;
  const pid_t r = ::waitpid(pid_, &status, WNOHANG);
  if (r == pid_) return reap(status);
  return Fate{};
}

Fate QemuInstance::waitForExit(std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    Fate f = poll();
    if (f.kind != FateKind::Running || Clock::now() >= deadline) return f;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

Fate QemuInstance::shutdown(std::chrono::milliseconds timeout) {
  if (reaped_) return final_fate_;
  if (qmp_) (void)qmp_->execute("quit");
  Fate f = waitForExit(timeout);
  if (f.kind == FateKind::Running) {
    ::kill(pid_, SIGKILL);
    f = waitForExit(timeout);
  }
  return f;
}

Fate QemuInstance::kill() {
  if (reaped_) return final_fate_;
  ::kill(pid_, SIGKILL);
  return waitForExit(std::chrono::milliseconds(5'000));
}

std::string QemuInstance::stderrText() const {
  std::ifstream in(dir_ + "/stderr.log", std::ios::binary);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (text.size() > 1 << 20) text.erase(0, text.size() - (1 << 20));
  return text;
}

QemuInstance::~QemuInstance() {
  qtest_.reset();
  qmp_.reset();
  if (pid_ > 0 && !reaped_) {
    ::kill(pid_, SIGKILL);
    int status = 0;
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
  }
  if (!dir_.empty()) {
    for (const char* f : {"/qtest.sock", "/qmp.sock", "/stderr.log"}) ::unlink((dir_ + f).c_str());
    ::rmdir(dir_.c_str());
  }
}

}  // namespace iof::qemu
