// ioreq-filterd for one domain: owns the proxy endpoint (real ioreq channel <-> QEMU's shadow
// channel), the engine built from the policies, a UNIX control socket (root only, SO_PEERCRED;
// QEMU's uid may only attach), signals (TERM/INT: detach and exit; HUP: reload) and a 100 ms timer
// (buffered-ring pump, rate-limited refusal logs, domain-destroyed check). Boost.Asio, one thread:
// the relay, the engine and reloads all run on it, so a reload never races a request.
#pragma once

#include <cstdint>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <sys/types.h>
#include <vector>

#include <nlohmann/json.hpp>

#include "ioreq_filter/core/device.h"
#include "ioreq_filter/core/engine.h"
#include "ioreq_filter/core/error.h"
#include "ioreq_filter/xen/hypervisor.h"

namespace iof::daemon {

struct DaemonOptions;
// Builds the domain's filter. `uncovered` receives emulated devices no policy covers.
using FilterFactory = std::function<Result<std::unique_ptr<RequestFilter>>(
    const DaemonOptions& options, bool resumed, std::vector<std::string>* uncovered)>;

struct DaemonOptions {
  xen::DomId domid = 0;
  std::string run_dir = "/run/ioreq-filter";
  std::string socket_path;   // default: run_dir/dom<N>.sock
  std::string shadow_path;   // default: run_dir/dom<N>.shadow
  std::string policy_dir;
  std::string devices_file;  // JSON device list (docs/xen.md); or:
  std::string qmp_socket;    // the daemon's own QMP monitor of the domain's QEMU
  // QMP discovery retries connecting and QEMU's greeting for this long (QEMU serves its monitor only
  // once its main loop runs). Used for the first attach without a device list (docs/xen.md).
  std::chrono::milliseconds qmp_wait{0};
  // Devices of the domain that may run without a policy, by instance name or QOM kind ("fdc",
  // "isa-serial"). Any other device no policy covers fails the attach (fail closed; docs/xen.md).
  std::vector<std::string> unfiltered;
  Mode mode = Mode::Enforce;
  uid_t dm_uid = 0;          // besides root, this uid (QEMU under dm_restrict) may send "attach"
  unsigned refusals_per_second = 20;
  unsigned poll_us = 0;      // adaptive polling budget after each wake-up (0: sleep at once)
  // Reply polling bound: after forwarding, watch the shadow slot for QEMU's answer for about twice
  // its recent turnaround, at most this long, instead of sleeping (0: off). ProxyOptions::reply_poll_max.
  unsigned reply_poll_us = 0;
  bool restrict_after_attach = false;  // xentoolcore_restrict_all(domid) once attached
  std::string drop_to_user;            // setuid after attaching (empty: stay)
  // With restrict_after_attach: another domain that must be out of reach once restricted (a
  // device-model call against it must fail, or the attach fails: a restriction that did not take
  // is not silently accepted). -1: no check.
  std::int64_t verify_restriction_domid = -1;
  std::string record_path;             // write every request seen as a trace here (empty: don't)
  // Hot standby (--standby): start() finds the daemon serving the domain (its control socket), builds
  // the filter, waits for that daemon's death (pidfd) and then resumes from the journal at once, so
  // an outage lasts a few hypercalls instead of a process start, a policy load and a QMP discovery.
  bool standby = false;
  std::chrono::milliseconds standby_find{60000};  // how long to look for the serving daemon
  // Returns when process `pid` has exited (default: pidfd_open + poll). Tests run both daemons in one
  // process and replace it.
  std::function<Result<void>(pid_t pid)> wait_for_exit;
  // After a standby took over, it starts the next standby with this command line (empty: none), so a
  // domain keeps a hot standby through any number of deaths. ioreq-filterd sets it to its own argv.
  std::vector<std::string> standby_command;
  // Ioreq servers of the domain besides the adopted one that may exist (e.g. XenServer's varstored
  // registers its own). Any other server found by the 100 ms watch crashes the domain (xen::ServerWatch).
  std::vector<unsigned> allowed_servers;
  std::function<void(const std::string&)> log;  // one JSON object per line; default stderr
  FilterFactory filter_factory;                 // default: policies + devices -> iof::Engine
};

// Parses the JSON device list: [{"name","kind","isa_ports":[[base,len]...],"pci":{"vendor","device",
// "class"},"sbdf":"0000:00:04.0"}...]. Errors name the file and the entry.
Result<std::vector<DeviceInstance>> parseDeviceList(const nlohmann::json& list, const std::string& where);
Result<std::vector<DeviceInstance>> loadDeviceList(const std::string& path);
FilterFactory engineFilterFactory();

class Daemon {
 public:
  Daemon(xen::Hypervisor& hv, DaemonOptions options);
  ~Daemon();
  // Binds the control socket; resumes from an existing journal (a restart) before returning.
  Result<void> start();
  void run();   // until stop(), a signal, or the domain's destruction
  void stop();  // any thread
  // The command handler (control plane), also reachable over the socket. Never throws: a malformed
  // request (not an object, a field missing, wrong-typed, out of range or unknown) gets an
  // {"ok":false,"error":...} reply naming the field and why.
  nlohmann::json handle(const nlohmann::json& request, uid_t peer_uid);
  // One request line as the socket delivers it (any bytes) to one reply line ending in '\n'.
  std::string handleLine(std::string_view line, uid_t peer_uid);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace iof::daemon
