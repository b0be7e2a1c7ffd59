// ioreq-filterd: the proxy-mode daemon for one domain (started by the device_model_override
// wrapper, integration/ioreq-filter-dm-wrapper). Only main() turns errors into exit codes.
#include <CLI/CLI.hpp>

#include <csignal>
#include <iostream>
#include <unistd.h>

#include "ioreq_filter/daemon/daemon.h"
#include "ioreq_filter/xen/libxen_hypervisor.h"

int main(int argc, char** argv) {
  iof::daemon::DaemonOptions o;
  unsigned domid = 0;
  std::string mode = "enforce";
  CLI::App app{"ioreq-filterd: vets a Xen guest's emulated-device I/O ahead of QEMU-xen (proxy mode)"};
  app.add_option("--domid", domid, "domain to serve")->required();
  app.add_option("--run-dir", o.run_dir, "where the control socket and shadow/journal file live");
  app.add_option("--policy-dir", o.policy_dir, "policy tree (JSON)")->required();
  app.add_option("--devices", o.devices_file, "JSON list of the domain's emulated devices");
  app.add_option("--qmp", o.qmp_socket, "the daemon's own QMP socket of the domain's QEMU");
  app.add_option("--unfiltered", o.unfiltered,
                 "devices (instance name or QOM kind, comma-separated) that may run without a policy; any other "
                 "device no policy covers fails the attach")
      ->delimiter(',');
  app.add_option("--allow-server", o.allowed_servers,
                 "ids of ioreq servers besides QEMU's that may exist for the domain (comma-separated, 0-7); any other "
                 "server that appears crashes the domain")
      ->delimiter(',')
      ->check(CLI::Range(0u, 7u));
  app.add_option("--mode", mode, "enforce | monitor | learn")->check(CLI::IsMember({"enforce", "monitor", "learn"}));
  app.add_option("--dm-uid", o.dm_uid, "uid QEMU runs as under dm_restrict (may attach)");
  app.add_option("--refusals-per-second", o.refusals_per_second, "refusal log lines per second");
  app.add_option("--poll-us", o.poll_us, "adaptive polling budget after each wake-up, microseconds (CPU for latency)");
  app.add_option("--reply-poll-us", o.reply_poll_us,
                 "after forwarding a request, watch for QEMU's answer instead of sleeping: adaptive, at most this many "
                 "microseconds (CPU for latency; cost in `ioreq-filter stats` reply_polling)")
      ->check(CLI::Range(0u, 1000u));
  app.add_flag("--standby", o.standby,
               "hot standby: find the daemon serving --domid, build the filter, wait for that daemon to die, then "
               "take over from the journal at once");
  unsigned standby_wait_s = 60;
  app.add_option("--standby-wait", standby_wait_s, "with --standby: seconds to look for the serving daemon")
      ->check(CLI::Range(1u, 3600u));
  app.add_flag("--restrict", o.restrict_after_attach, "restrict Xen handles to the domain once attached");
  app.add_option("--user", o.drop_to_user, "drop to this user once attached");
  app.add_option("--verify-restriction", o.verify_restriction_domid,
                 "with --restrict: this other domain must be out of reach afterwards, or the attach fails")
      ->check(CLI::Range(std::int64_t(0), std::int64_t(0x7fef)));
  app.add_option("--record", o.record_path,
                 "write every request seen to this trace file (docs/trace-format.md); FILE.tmp until the domain is gone");
  CLI11_PARSE(app, argc, argv);
  // After a takeover the daemon starts its own successor standby: this binary, these options.
  char exe[4096];
  const ssize_t n = ::readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n > 0) {
    o.standby_command.emplace_back(exe, std::size_t(n));
    for (int i = 1; i < argc; ++i)
      if (std::string(argv[i]) != "--standby") o.standby_command.emplace_back(argv[i]);
    o.standby_command.emplace_back("--standby");
  }
  std::signal(SIGCHLD, SIG_IGN);  // successor standbys are reaped by the kernel
  o.domid = iof::xen::DomId(domid);
  o.standby_find = std::chrono::seconds(standby_wait_s);
  o.mode = mode == "monitor" ? iof::Mode::Monitor : mode == "learn" ? iof::Mode::Learn : iof::Mode::Enforce;

  auto hv = iof::xen::openLibxen();
  if (!hv) {
    std::cerr << "ioreq-filterd: " << hv.error().message() << "\n";
    return 1;
  }
  iof::daemon::Daemon daemon(**hv, o);
  if (auto ok = daemon.start(); !ok) {
    std::cerr << "ioreq-filterd: " << ok.error().message() << "\n";
    return 1;
  }
  daemon.run();
  return 0;
}
