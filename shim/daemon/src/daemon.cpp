#include "ioreq_filter/daemon/daemon.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <optional>
#include <cstring>
#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <pwd.h>
#include <sys/syscall.h>
#include <sys/socket.h>
#include <thread>
#include <unistd.h>

#include <boost/asio.hpp>

#include "ioreq_filter/daemon/client.h"
#include "ioreq_filter/daemon/refusal_log.h"
#include "ioreq_filter/daemon/trace_record.h"
#include "ioreq_filter/policy/policy_json.h"
#include "ioreq_filter/xen/proxy.h"
#if __has_include("ioreq_filter/qemu/discovery.h") && defined(IOF_HAVE_QEMU)
#include "ioreq_filter/qemu/discovery.h"
#endif

namespace iof::daemon {

namespace asio = boost::asio;
using json = nlohmann::json;

namespace {

constexpr std::size_t kMaxRequestBytes = 64 * 1024;

std::uint64_t nowMs() {
  return std::uint64_t(std::chrono::duration_cast<std::chrono::milliseconds>(
                           std::chrono::steady_clock::now().time_since_epoch()).count());
}

std::optional<Mode> parseMode(const std::string& s) {
  if (s == "enforce") return Mode::Enforce;
  if (s == "monitor") return Mode::Monitor;
  if (s == "learn") return Mode::Learn;
  return std::nullopt;
}

std::optional<std::uint64_t> number(const json& j) {
  if (j.is_number_unsigned()) return j.get<std::uint64_t>();
  if (j.is_number_integer() && j.get<std::int64_t>() >= 0) return std::uint64_t(j.get<std::int64_t>());
  if (j.is_string()) {
    const auto s = j.get<std::string>();
    // strtoull would skip blanks and wrap "-1" to 2^64-1: only digits (decimal, 0x hex, 0 octal) count.
    if (s.empty() || s[0] < '0' || s[0] > '9') return std::nullopt;
    char* end = nullptr;
    errno = 0;
    const auto v = std::strtoull(s.c_str(), &end, 0);
    if (errno == 0 && end && *end == '\0') return v;
  }
  return std::nullopt;
}

// "number 1.5", "string \"x\"", "null": what a client sent, short enough for one reply line.
std::string got(const json& j) {
  if (j.is_null()) return "null";
  std::string text = j.dump(-1, ' ', false, json::error_handler_t::replace);
  if (text.size() > 40) text = text.substr(0, 37) + "...";
  return std::string(j.type_name()) + " " + text;
}

// The control commands and the fields each takes (besides "cmd" and "domid", which every one takes).
struct ControlCommand {
  const char* name;
  std::vector<const char*> fields;
};
const std::vector<ControlCommand>& controlCommands() {
  static const std::vector<ControlCommand> commands = {
      {"attach", {"server", "vcpus"}}, {"detach", {}}, {"status", {}}, {"stats", {}}, {"mode", {"mode"}}, {"reload", {}}};
  return commands;
}

}  // namespace

Result<std::vector<DeviceInstance>> parseDeviceList(const json& list, const std::string& where) {
  if (!list.is_array()) return fail(where, "device list must be a JSON array");
  std::vector<DeviceInstance> out;
  for (std::size_t i = 0; i < list.size(); ++i) {
    const json& d = list[i];
    const std::string at = where + ": devices[" + std::to_string(i) + "]";
    if (!d.is_object() || !d.contains("name") || !d["name"].is_string() || !d.contains("kind") || !d["kind"].is_string())
      return fail(at, "needs string fields \"name\" and \"kind\"");
    DeviceInstance inst;
    inst.name = d["name"];
    inst.kind = d["kind"];
    if (d.contains("isa_ports")) {
      for (const json& r : d["isa_ports"]) {
        if (!r.is_array() || r.size() != 2) return fail(at, "isa_ports entries are [base, length]");
        const auto b = number(r[0]), l = number(r[1]);
        if (!b || !l || *l == 0 || *b + *l > 0x10000) return fail(at, "isa_ports entry out of the port space");
        inst.isa_ports.push_back(PortRange{*b, *l});
      }
    }
    if (d.contains("pci")) {
      const json& p = d["pci"];
      const auto v = number(p.value("vendor", json())), dev = number(p.value("device", json()));
      if (!v || !dev || *v > 0xffff || *dev > 0xffff) return fail(at, "pci needs 16-bit \"vendor\" and \"device\"");
      PciIdentity id;
      id.vendor = std::uint16_t(*v);
      id.device = std::uint16_t(*dev);
      if (auto c = number(p.value("class", json()))) id.class_code = std::uint32_t(*c);
      inst.pci = id;
      unsigned seg = 0, bus = 0, slot = 0, fn = 0;
      const std::string sbdf = d.value("sbdf", std::string());
      if (std::sscanf(sbdf.c_str(), "%x:%x:%x.%x", &seg, &bus, &slot, &fn) != 4 || slot > 31 || fn > 7)
        return fail(at, "pci devices need \"sbdf\": \"SSSS:BB:DD.F\"");
      inst.sbdf = Sbdf{std::uint16_t(seg), std::uint8_t(bus), std::uint8_t(slot), std::uint8_t(fn)};
    }
    out.push_back(std::move(inst));
  }
  return out;
}

Result<std::vector<DeviceInstance>> loadDeviceList(const std::string& path) {
  std::ifstream in(path);
  if (!in) return fail(path, "cannot open the device list");
  auto j = json::parse(in, nullptr, false);
  if (j.is_discarded()) return fail(path, "not valid JSON");
  return parseDeviceList(j, path);
}

FilterFactory engineFilterFactory() {
  return [](const DaemonOptions& o, bool resumed, std::vector<std::string>* uncovered) -> Result<std::unique_ptr<RequestFilter>> {
    if (o.policy_dir.empty()) return fail("ioreq-filterd", "no --policy-dir given");
    auto policies = loadPolicyDir(o.policy_dir);
    if (!policies) return std::unexpected(policies.error());
    if (policies->empty()) return fail(o.policy_dir, "no policies (*.json) found: an empty policy set would filter nothing");
    std::vector<DeviceInstance> devices;
    if (!o.devices_file.empty()) {
      auto d = loadDeviceList(o.devices_file);
      if (!d) return std::unexpected(d.error());
      devices = std::move(*d);
    } else {
#ifdef IOF_HAVE_QEMU
      if (o.qmp_socket.empty()) return fail("ioreq-filterd", "need --devices FILE or --qmp SOCKET to find the domain's devices");
      // QEMU answers on its monitor only once its main loop runs: retry for up to qmp_wait.
      const auto deadline = std::chrono::steady_clock::now() + o.qmp_wait;
      for (;;) {
        Error last;
        if (auto fd = qemu::LineChannel::connectUnix(o.qmp_socket); !fd) {
          last = fd.error();
        } else {
          qemu::QmpClient qmp(std::make_unique<qemu::LineChannel>(*fd, o.qmp_socket), std::chrono::milliseconds(5000));
          if (auto ok = qmp.handshake(); !ok) {
            last = ok.error();
          } else {
            auto d = qemu::discoverDevices(qmp);
            if (!d) return std::unexpected(d.error());
            devices = std::move(*d);
            break;
          }
        }
        if (std::chrono::steady_clock::now() >= deadline) return std::unexpected(last);
        std::this_thread::sleep_for(std::chrono::milliseconds(250));
      }
#else
      return fail("ioreq-filterd", "built without QMP discovery: give --devices FILE");
#endif
    }
    std::vector<std::string> no_policy;
    auto bound = bindPolicies(devices, *policies, &no_policy);
    if (!bound) return std::unexpected(bound.error());
    // Fail closed: a device no policy covers runs unfiltered only if the operator said so by name.
    std::string refused;
    for (const auto& name : no_policy) {
      const auto inst = std::ranges::find_if(devices, [&](const DeviceInstance& d) { return d.name == name; });
      const std::string kind = inst == devices.end() ? std::string() : inst->kind;
      const bool allowed = std::ranges::any_of(o.unfiltered, [&](const std::string& u) { return u == name || (!kind.empty() && u == kind); });
      if (!allowed) refused += (refused.empty() ? "" : ", ") + name + (kind.empty() || kind == name ? "" : " (" + kind + ")");
    }
    if (!refused.empty())
      return fail("ioreq-filterd", "no policy covers " + refused +
                                       ": give each a policy, or name it (instance or kind) in --unfiltered to let its requests through unfiltered");
    if (bound->empty())
      return fail(o.policy_dir, "no policy matches any of the domain's " + std::to_string(devices.size()) +
                                    " devices: nothing would be filtered");
    if (uncovered) *uncovered = no_policy;
    EngineOptions eo;
    eo.mode = o.mode;
    // After a daemon restart the guest is mid-sequence: start unsynchronised (docs/architecture.md).
    eo.start = resumed ? StartState::Unsynchronised : StartState::Boot;
    auto engine = Engine::create(std::move(*bound), eo);
    if (!engine) return std::unexpected(engine.error());
    return std::unique_ptr<RequestFilter>(std::move(*engine));
  };
}

struct Daemon::Impl {
  xen::Hypervisor& hv;
  DaemonOptions o;
  asio::io_context io;
  std::unique_ptr<asio::local::stream_protocol::acceptor> acceptor;
  asio::signal_set signals{io};
  asio::steady_timer timer{io};
  std::unique_ptr<xen::ProxyEndpoint> proxy;
  std::unique_ptr<RequestFilter> filter;
  std::unique_ptr<RecordingFilter> recorder;
  std::unique_ptr<TraceRing> trace_ring;
  std::optional<TraceFile> trace_file;
  std::unique_ptr<asio::posix::stream_descriptor> events_sd;  // real and shadow ports: one handle
  std::vector<std::string> uncovered;
  RateLimitedLog refusals;
  std::uint64_t reloads = 0;
  bool attached_once = false;
  // First attach without a device list (--qmp only): QEMU is blocked in the very enable call that
  // asked for the attach, so its monitor cannot answer yet. The attach completes (server adopted,
  // ports bound) while the filter is built by QMP discovery on `discovery`'s thread; until then no
  // request is handled: a vCPU that issues one waits (the domain is normally still paused). If
  // discovery fails, the domain is crashed. `holding` also makes any request that is handled refused.
  bool holding = false;
  std::thread discovery;
  // --standby: the filter built before the takeover, and when the serving daemon was seen to die.
  std::unique_ptr<RequestFilter> prebuilt;
  std::vector<std::string> prebuilt_uncovered;
  std::optional<std::chrono::steady_clock::time_point> takeover_at;
  bool bound_socket = false;
  bool domain_gone = false;  // a standby woke to a domain that is gone: start() returns, run() does nothing
  struct RefuseAll final : RequestFilter {
    Verdict onRequest(const IoRequest&) noexcept override { return Verdict{Action::Refuse, Reason::Uncovered}; }
  } refuse_all;
  bool watch_fired = false;  // the domain was crashed for a foreign ioreq server (once)

  Impl(xen::Hypervisor& h, DaemonOptions opts)
      : hv(h), o(std::move(opts)), refusals(o.refusals_per_second, [this](const std::string& l) { log(l); }) {}

  void log(const std::string& line) {
    if (o.log) o.log(line);
    else std::cerr << line << std::endl;
  }
  void event(const std::string& name, json fields = json::object()) {
    fields["event"] = name;
    fields["domid"] = o.domid;
    log(fields.dump());
  }

  Engine* engine() { return dynamic_cast<Engine*>(filter.get()); }

  Result<void> attach(xen::ServerId server, unsigned vcpus) {
    if (proxy) return fail("attach", "domid " + std::to_string(o.domid) + " is already attached");
    bool resumed = false;
    {
      // A journal left by an earlier daemon means the guest is mid-run.
      std::ifstream probe(o.shadow_path, std::ios::binary);
      std::uint64_t magic = 0;
      if (probe && probe.seekg(2 * xen::kPageSize) && probe.read(reinterpret_cast<char*>(&magic), sizeof magic))
        resumed = magic == xen::kJournalMagic;
    }
    std::vector<std::string> unc;
    const bool defer = !resumed && o.devices_file.empty() && !o.qmp_socket.empty();
    if (defer) {
      recorder = std::make_unique<RecordingFilter>(&refuse_all);
    } else if (prebuilt) {
      filter = std::move(prebuilt);
      unc = std::move(prebuilt_uncovered);
      recorder = std::make_unique<RecordingFilter>(filter.get());
    } else {
      auto f = o.filter_factory(o, resumed, &unc);
      if (!f) return std::unexpected(f.error());
      filter = std::move(*f);
      recorder = std::make_unique<RecordingFilter>(filter.get());
    }
    if (!o.record_path.empty() && !trace_file) {
      // One trace per daemon: a re-attach (detach/attach) keeps appending to it.
      auto tf = TraceFile::open(o.record_path, "ioreq-filterd --record, domid " + std::to_string(o.domid) +
                                                   ", mode " + toString(o.mode) + (resumed ? ", resumed mid-run" : ""));
      if (!tf) {
        recorder.reset();
        filter.reset();
        return std::unexpected(tf.error());
      }
      trace_file.emplace(std::move(*tf));
      trace_ring = std::make_unique<TraceRing>();
    }
    if (trace_ring) recorder->setTrace(trace_ring.get());
    xen::ProxyOptions po;
    po.domid = o.domid;
    po.server = server;
    po.vcpus = vcpus;
    po.shadow_path = o.shadow_path;
    po.filter = recorder.get();
    po.reply_poll_max = std::chrono::microseconds(o.reply_poll_us);
    po.log = [this](std::string_view s) {
      json j{{"stage", std::string(s)}};
      if (takeover_at)  // where a standby's takeover spends its time
        j["t_us"] = microsSince(*takeover_at);
      event("bring-up", j);
    };
    auto p = xen::ProxyEndpoint::open(hv, po);
    if (!p) {
      recorder.reset();
      filter.reset();
      return std::unexpected(p.error());
    }
    proxy = std::move(*p);
    // A standby's outage ends here: ports bound, in-flight slots recovered, the next line serves. (The
    // first handleEvents() may itself serve the guest for a while when it is busy.)
    std::optional<std::int64_t> takeover_us;
    if (takeover_at) {
      takeover_us = microsSince(*takeover_at);
      takeover_at.reset();
    }
    uncovered = std::move(unc);
    // CLOEXEC: a successor standby must not inherit the event-channel handle, or the ports would stay
    // bound after this daemon dies (plain dup() drops the flag).
    events_sd = std::make_unique<asio::posix::stream_descriptor>(io, ::fcntl(proxy->fd(), F_DUPFD_CLOEXEC, 0));
    if (defer) {
      holding = true;
      startDiscovery();
    } else {
      arm(*events_sd);
      proxy->handleEvents();
    }
    // Policy regions that bind nowhere on this domain's devices (a BAR the instance lacks): said once here.
    json unbound = json::array();
    if (Engine* e = engine())
      for (const auto& u : e->unboundRegions())
        unbound.push_back(e->device(u.device).instance.name + " region '" + e->device(u.device).policy.regions[u.region].name +
                          "': " + u.reason);
    json attached{{"server", server}, {"vcpus", proxy->relay().vcpus()}, {"resumed", proxy->resumed()},
                  {"uncovered", uncovered}, {"unbound", unbound}, {"holding", holding}};
    // Death of the serving daemon (pidfd readable) to serving again: the outage the guest sees.
    if (takeover_us) attached["takeover_us"] = *takeover_us;
    event("attached", attached);
    if (attached.contains("takeover_us") && !o.standby_command.empty()) spawnStandby();
    if (!attached_once) {
      attached_once = true;
      if (o.restrict_after_attach) {
        json priv{{"restricted_to", o.domid}};
        const auto other = xen::DomId(o.verify_restriction_domid);
        auto reach = [&] {
          auto n = hv.vcpuCount(other);
          return n ? json{{"reachable", true}, {"nr_vcpus", *n}} : json{{"reachable", false}, {"error", n.error().message()}};
        };
        if (o.verify_restriction_domid >= 0) priv["before"] = reach();
        if (auto ok = hv.restrictTo(o.domid); !ok) return std::unexpected(ok.error());
        if (o.verify_restriction_domid >= 0) {
          priv["probe_domid"] = other;
          priv["after"] = reach();
          if (priv["after"]["reachable"].get<bool>()) {
            event("privileges", priv);
            detach();  // QEMU's enable fails with the attach: the domain never runs with this daemon
            return fail("--restrict", "domid " + std::to_string(other) + " is still reachable after restricting to domid " +
                                          std::to_string(o.domid));
          }
        }
        event("privileges", priv);
      }
      if (!o.drop_to_user.empty()) {
        const passwd* pw = getpwnam(o.drop_to_user.c_str());
        if (!pw) return fail("--user", "no such user '" + o.drop_to_user + "'");
        if (setgid(pw->pw_gid) != 0 || setuid(pw->pw_uid) != 0) return fail("--user", "setuid/setgid failed");
        event("privileges", {{"user", o.drop_to_user}});
      }
    }
    return {};
  }

  void startDiscovery() {
    DaemonOptions opts = o;
    if (opts.qmp_wait.count() == 0) opts.qmp_wait = std::chrono::seconds(60);
    event("discovering", {{"qmp", o.qmp_socket}, {"wait_ms", opts.qmp_wait.count()}});
    discovery = std::thread([this, opts = std::move(opts)] {
      std::vector<std::string> unc;
      auto f = opts.filter_factory(opts, false, &unc);
      asio::post(io, [this, f = std::make_shared<decltype(f)>(std::move(f)), unc = std::move(unc)]() mutable {
        finishDiscovery(std::move(*f), std::move(unc));
      });
    });
  }

  void finishDiscovery(Result<std::unique_ptr<RequestFilter>> f, std::vector<std::string> unc) {
    if (discovery.joinable()) discovery.join();
    if (!proxy || !holding) return;  // detached meanwhile
    if (!f) {
      // Fail closed: nothing was ever forwarded; requests stay held and the domain is stopped.
      const int rc = hv.shutdown(o.domid, xen::kShutdownCrash);
      event("discovery-failed", {{"error", f.error().message()}, {"action", "crash"}, {"shutdown_rc", rc}});
      return;
    }
    filter = std::move(*f);
    recorder->setInner(filter.get());
    uncovered = std::move(unc);
    holding = false;
    json devs = json::array();
    if (Engine* e = engine())
      for (std::size_t i = 0; i < e->deviceCount(); ++i) devs.push_back(e->device(i).instance.name);
    event("filtering", {{"devices", devs}, {"uncovered", uncovered}});
    arm(*events_sd);
    proxy->handleEvents();
  }

  // Why the domain counts as gone, if it does. A destroyed domain lingers as long as someone maps its
  // pages, and nr_vcpus keeps answering (seen on real Xen 4.17: daemons outlived their domains); Xen
  // destroys the domain's ioreq servers when it starts killing it, so a vanished server is the signal too.
  std::optional<Error> goneReason(xen::ServerId server) {
    if (auto n = hv.vcpuCount(o.domid); !n) return n.error();
    if (auto info = hv.serverInfo(o.domid, server); !info) return info.error();
    return std::nullopt;
  }

  static std::int64_t microsSince(std::chrono::steady_clock::time_point t) {
    return std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t).count();
  }

  // The next standby, before this daemon restricts itself or drops privileges (the child needs both).
  void spawnStandby() {
    std::vector<char*> argv;
    for (auto& a : o.standby_command) argv.push_back(a.data());
    argv.push_back(nullptr);
    // Only stdin/out/err: a Xen handle inherited by the child (libxen does not open all of them
    // O_CLOEXEC) would keep this daemon's event-channel ports bound after it dies, and the child's
    // own takeover would then fail to bind them.
    posix_spawn_file_actions_t fa;
    ::posix_spawn_file_actions_init(&fa);
    ::posix_spawn_file_actions_addclosefrom_np(&fa, 3);
    pid_t child = 0;
    const int rc = ::posix_spawn(&child, argv[0], &fa, nullptr, argv.data(), environ);
    ::posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) event("standby-spawn-failed", {{"error", std::strerror(rc)}});
    else event("standby-spawned", {{"pid", child}});
  }

  Result<void> standBy() {
    // The serving daemon: attached, and its pid from its own control socket.
    const auto deadline = std::chrono::steady_clock::now() + o.standby_find;
    pid_t pid = 0;
    xen::ServerId server = 0;
    for (;;) {
      auto st = request(o.socket_path, json{{"cmd", "status"}}, std::chrono::milliseconds(2000));
      if (st && st->value("attached", false) && st->contains("pid") && (*st)["pid"].is_number_integer() &&
          st->contains("server") && (*st)["server"].is_number_unsigned() && (*st)["server"].get<unsigned>() < xen::kMaxServers) {
        pid = (*st)["pid"].get<pid_t>();
        server = xen::ServerId((*st)["server"].get<unsigned>());
        break;
      }
      if (std::chrono::steady_clock::now() >= deadline)
        return fail("--standby", "no attached ioreq-filterd for domid " + std::to_string(o.domid) + " answered on " +
                                     o.socket_path + (st ? std::string(" (not attached yet)") : ": " + st.error().message()));
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    // Opened before the filter is built: a death meanwhile is still seen (the pidfd becomes readable).
    int pidfd = -1;
    if (!o.wait_for_exit) {
      pidfd = int(::syscall(SYS_pidfd_open, pid, 0));
      if (pidfd < 0) return fail("--standby", "pidfd_open(" + std::to_string(pid) + "): " + std::strerror(errno));
    }
    // The filter, built now: the guest is mid-run when we take over (resumed: unsynchronised start).
    DaemonOptions opts = o;
    if (opts.qmp_wait.count() == 0) opts.qmp_wait = std::chrono::seconds(60);
    std::vector<std::string> unc;
    auto f = opts.filter_factory(opts, true, &unc);
    if (!f) {
      if (pidfd >= 0) ::close(pidfd);
      return std::unexpected(f.error());
    }
    prebuilt = std::move(*f);
    prebuilt_uncovered = std::move(unc);
    // Warm the takeover path: a process's first libxen calls resolve symbols and fault in code,
    // which cost tens of ms of the outage under TCG (seen: open + two binds took 71 ms).
    (void)hv.openEventChannel();
    (void)hv.serverExists(o.domid, 0);
    event("standby", {{"watching", pid}});
    if (pidfd >= 0) {
      pollfd p{pidfd, POLLIN, 0};
      while (::poll(&p, 1, -1) < 0 && errno == EINTR) {
      }
      ::close(pidfd);
    } else if (auto ok = o.wait_for_exit(pid); !ok) {
      return ok;
    }
    takeover_at = std::chrono::steady_clock::now();
    // The serving daemon also exits when the domain is gone (domain-gone): nothing to take over then.
    if (auto gone = goneReason(server)) {
      event("domain-gone", {{"error", gone->message()}, {"standby", true}});
      domain_gone = true;
      return {};
    }
    event("takeover", {{"pid", pid}});
    return {};
  }

  void detach() {
    if (discovery.joinable()) discovery.join();
    holding = false;
    if (!proxy) return;
    drainRefusals();
    event("final-stats", {{"stats", stats()}});
    events_sd.reset();
    proxy.reset();  // ports unbound: filtered requests wait in their slots for the next daemon
    recorder.reset();
    filter.reset();
    event("detached");
  }

  void arm(asio::posix::stream_descriptor& sd) {
    sd.async_wait(asio::posix::stream_descriptor::wait_read, [this, &sd](const boost::system::error_code& ec) {
      if (ec || !proxy) return;
      proxy->handleEvents();
      // Bounded: a request arriving within the budget skips a sleep/wake-up pair.
      if (o.poll_us)
        while (proxy->pollFor(std::chrono::microseconds(o.poll_us))) {
        }
      if (trace_ring && trace_ring->halfFull()) trace_file->drain(*trace_ring);
      arm(sd);
    });
  }

  void drainRefusals() {
    if (!recorder) return;
    const auto now = nowMs();
    recorder->drain([&](const RefusalRecord& r) {
      json j{{"event", r.verdict.monitored ? "would-refuse" : "refused"},
             {"domid", o.domid},
             {"request", describe(r.request)},
             {"reason", toString(r.verdict.reason)},
             {"device", r.verdict.device}};
      if (r.verdict.malformation != Malformation::None) j["malformation"] = toString(r.verdict.malformation);
      if (r.verdict.escalation != Escalation::None) j["escalation"] = toString(r.verdict.escalation);
      if (auto* e = engine(); e && r.verdict.device >= 0 && std::size_t(r.verdict.device) < e->deviceCount()) {
        j["device_name"] = e->device(std::size_t(r.verdict.device)).instance.name;
        // Which policy set refused (docs/policy-format.md): only worth saying when there are several.
        if (e->setCount() > 1) j["set"] = e->device(std::size_t(r.verdict.device)).set_name;
      }
      refusals.refusal(j.dump(), now);
    });
    refusals.flush(now);
    if (trace_file) trace_file->drain(*trace_ring);
  }

  void closeTrace() {
    if (!trace_file) return;
    if (auto ok = trace_file->close(*trace_ring); !ok)
      event("record-failed", {{"error", ok.error().message()}});
    else
      event("recorded", {{"file", trace_file->path()}, {"requests", trace_file->lines()}, {"lost", trace_ring->lost()}});
    trace_file.reset();
  }

  void tick() {
    timer.expires_after(std::chrono::milliseconds(100));
    timer.async_wait([this](const boost::system::error_code& ec) {
      if (ec) return;
      if (proxy) {
        if (!holding) proxy->handleEvents();  // also pumps buffered writes QEMU made room for
        drainRefusals();
        if (auto gone = goneReason(proxy->session().id())) {
          event("domain-gone", {{"error", gone->message()}});
          detach();
          closeTrace();
          io.stop();
          return;
        }
        // Fail closed: another ioreq server could take the guest's I/O past the filter.
        if (!watch_fired) {
          std::vector<xen::ServerId> allowed(o.allowed_servers.begin(), o.allowed_servers.end());
          if (auto why = xen::ServerWatch(o.domid, proxy->session().id(), allowed).check(hv); !why.empty()) {
            watch_fired = true;
            const int rc = hv.shutdown(o.domid, xen::kShutdownCrash);
            event("foreign-ioreq-server", {{"error", why}, {"action", "crash"}, {"shutdown_rc", rc}});
          }
        }
      }
      tick();
    });
  }

  json stats() {
    json j{{"ok", true}, {"domid", o.domid}, {"attached", bool(proxy)}};
    if (!proxy) return j;
    const auto& c = proxy->relay().counters();
    j["relay"] = {{"requests", c.requests.load()},       {"forwarded", c.forwarded.load()},
                  {"refused", c.refused.load()},         {"monitored", c.monitored.load()},
                  {"malformed", c.malformed.load()},     {"broadcasts", c.broadcasts.load()},
                  {"buffered", c.buffered.load()},       {"buffered_refused", c.buffered_refused.load()},
                  {"split_requests", c.split_requests.load()}, {"split_reps", c.split_reps.load()},
                  {"recovered", c.recovered.load()},     {"shadow_busy", c.shadow_busy.load()},
                  {"guest_memory_errors", c.guest_memory_errors.load()},
                  {"crashes_requested", c.crashes_requested.load()},
                  {"pause_unavailable", c.pause_unavailable.load()}, {"spurious", c.spurious.load()}};
    j["log"] = {{"refusals_suppressed", refusals.suppressed_total()}, {"ring_lost", recorder ? recorder->lost() : 0}};
    j["reloads"] = reloads;
    j["polling"] = {{"budget_us", o.poll_us}, {"spent_ns", proxy->pollNanoseconds()}, {"hits", proxy->pollHits()}};
    const auto& rp = proxy->replyPolling();
    j["reply_polling"] = {{"max_us", o.reply_poll_us},
                          {"budget_ns", proxy->replyPollBudget().count()},
                          {"spent_ns", rp.spent_ns},
                          {"hits", rp.hits},
                          {"misses", rp.misses},
                          {"yields", rp.yields}};
    if (auto* e = engine()) {
      json devs = json::array();
      for (std::size_t i = 0; i < e->deviceCount(); ++i) {
        const auto& d = e->counters(i);
        devs.push_back({{"name", e->device(i).instance.name},
                        {"policy", e->device(i).policy.name},
                        {"forwarded", d.forwarded},
                        {"refused_order", d.refused_order},
                        {"refused_value", d.refused_value},
                        {"refused_count", d.refused_count},
                        {"refused_stopgap", d.refused_stopgap},
                        {"refused_malformed", d.refused_malformed},
                        {"refused_uncovered", d.refused_uncovered},
                        {"passed", d.passed},
                        {"needs_data", d.needs_data},
                        {"monitored", d.monitored}});
      }
      j["devices"] = devs;
      // "unclaimed": requests no filtered device claims, so forwarded unfiltered: to the devices of
      // --unfiltered, or to addresses no device decodes.
      j["engine"] = {{"requests", e->counters().requests}, {"unclaimed", e->counters().unclaimed},
                     {"malformed", e->counters().malformed}};
    }
    return j;
  }

  json status() {
    json j{{"ok", true}, {"domid", o.domid}, {"attached", bool(proxy)}, {"mode", toString(o.mode)}, {"unfiltered", o.unfiltered}};
    if (!proxy) return j;
    j["server"] = proxy->session().id();
    j["vcpus"] = proxy->relay().vcpus();
    j["resumed"] = proxy->resumed();
    j["generation"] = proxy->shadow().journal().generation;
    j["shadow"] = o.shadow_path;
    j["uncovered"] = uncovered;
    j["holding"] = holding;
    j["pid"] = ::getpid();
    json devs = json::array();
    if (auto* e = engine()) {
      j["mode"] = toString(e->mode());
      for (std::size_t i = 0; i < e->deviceCount(); ++i)
        devs.push_back({{"name", e->device(i).instance.name}, {"kind", e->device(i).instance.kind},
                        {"policy", e->device(i).policy.name}});
    }
    j["devices"] = devs;
    return j;
  }

  static json error(const std::string& e) { return json{{"ok", false}, {"error", e}}; }

  // The control plane's boundary: this thread also runs the relay, so nothing a client sends may throw
  // past here. Every field is checked before it is used (handleChecked); the catch is the backstop.
  json handle(const json& req, uid_t uid) {
    try {
      return handleChecked(req, uid);
    } catch (const std::exception& e) {
      return error(std::string("internal error handling the request: ") + e.what());
    }
  }

  // One request line as read from the socket, to one reply line.
  std::string handleLine(std::string_view line, uid_t uid) {
    const auto req = json::parse(line, nullptr, false);
    const json reply = req.is_discarded() ? error("request is not valid JSON") : handle(req, uid);
    // Strings in a reply may echo a client's bytes: never let an odd one stop the reply.
    return reply.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
  }

  json handleChecked(const json& req, uid_t uid) {
    if (!req.is_object()) return error("request must be a JSON object, got " + std::string(req.type_name()));
    if (!req.contains("cmd")) return error("request needs a \"cmd\" string (attach, detach, status, stats, mode, reload)");
    if (!req["cmd"].is_string()) return error("\"cmd\" must be a string, got " + got(req["cmd"]));
    const std::string cmd = req["cmd"];
    if (uid != 0 && !(uid == o.dm_uid && o.dm_uid != 0 && cmd == "attach"))
      return error("permission denied: uid " + std::to_string(uid) + " may not '" + cmd + "' (root only)");
    const auto& commands = controlCommands();
    const auto known = std::ranges::find_if(commands, [&](const ControlCommand& c) { return cmd == c.name; });
    if (known == commands.end()) return error("unknown command '" + cmd + "'");
    for (const auto& [key, value] : req.items()) {
      if (key == "cmd" || key == "domid" || std::ranges::any_of(known->fields, [&](const char* f) { return key == f; })) continue;
      std::string takes = "cmd, domid";
      for (const char* f : known->fields) takes += std::string(", ") + f;
      return error("'" + cmd + "' takes no field \"" + key + "\" (it takes: " + takes + ")");
    }
    if (req.contains("domid")) {
      const auto domid = number(req["domid"]);
      if (!domid) return error("\"domid\" must be a domain id (a non-negative integer), got " + got(req["domid"]));
      if (*domid != o.domid) return error("this daemon serves domid " + std::to_string(o.domid));
    }
    if (cmd == "attach") {
      xen::ServerId server;
      unsigned vcpus;
      if (req.contains("server")) {
        const auto s = number(req["server"]);
        if (!s || *s >= xen::kMaxServers)
          return error("\"server\" must be an ioreq server id 0.." + std::to_string(xen::kMaxServers - 1) + ", got " + got(req["server"]));
        server = xen::ServerId(*s);
        const auto v = req.contains("vcpus") ? number(req["vcpus"]) : std::optional<std::uint64_t>(0);
        if (!v || *v > xen::kMaxVcpus)
          return error("\"vcpus\" must be a vCPU count 0.." + std::to_string(xen::kMaxVcpus) + ", got " + got(req["vcpus"]));
        vcpus = unsigned(*v);
      } else if (req.contains("vcpus")) {
        return error("\"vcpus\" is only meaningful with \"server\" (without it both come from the journal)");
      } else {
        // Re-attach from the journal QEMU's interposer started.
        auto shadow = xen::ShadowFile::open(o.shadow_path);
        if (!shadow) return error(shadow.error().message());
        const auto& jr = shadow->journal();
        if (jr.magic != xen::kJournalMagic) return error(o.shadow_path + ": no journal yet (QEMU has not attached)");
        server = jr.server;
        vcpus = jr.vcpus;
      }
      if (auto ok = attach(server, vcpus); !ok) return error(ok.error().message());
      return json{{"ok", true}, {"shadow", o.shadow_path}};
    }
    if (cmd == "detach") {
      detach();
      return json{{"ok", true}};
    }
    if (cmd == "status") return status();
    if (cmd == "stats") return stats();
    if (cmd == "mode") {
      if (!req.contains("mode")) return error("\"mode\" is missing: enforce, monitor or learn");
      if (!req["mode"].is_string()) return error("\"mode\" must be a string: enforce, monitor or learn; got " + got(req["mode"]));
      const auto m = parseMode(req["mode"].get<std::string>());
      if (!m) return error("\"mode\" must be enforce, monitor or learn, got " + req["mode"].dump(-1, ' ', false, json::error_handler_t::replace));
      o.mode = *m;
      if (auto* e = engine()) {
        e->setMode(*m);
        if (*m == Mode::Enforce) e->resynchronise();  // cursors may have drifted while monitoring
      }
      event("mode", {{"mode", toString(*m)}});
      return json{{"ok", true}, {"mode", toString(*m)}};
    }
    if (cmd == "reload") {
      if (!proxy) return error("not attached");
      if (holding) return error("device discovery is still running; nothing to reload yet");
      std::vector<std::string> unc;
      auto f = o.filter_factory(o, true, &unc);
      if (!f) return error("reload failed, old policy kept: " + f.error().message());
      // Same thread as the relay: the swap happens between two requests.
      recorder->setInner(f->get());
      filter = std::move(*f);
      uncovered = std::move(unc);
      ++reloads;
      event("reloaded", {{"reloads", reloads}});
      return json{{"ok", true}, {"reloads", reloads}};
    }
    return error("unknown command '" + cmd + "'");  // controlCommands() names one this does not handle
  }

  void waitSignal() {
    signals.async_wait([this](const boost::system::error_code& e, int sig) {
      if (e) return;
      event("signal", {{"signal", sig}});
      if (sig == SIGHUP) {
        (void)handle(json{{"cmd", "reload"}}, 0);
        waitSignal();
        return;
      }
      detach();
      closeTrace();
      io.stop();
    });
  }

  void accept() {
    acceptor->async_accept([this](const boost::system::error_code& ec, asio::local::stream_protocol::socket sock) {
      if (ec) return;
      auto s = std::make_shared<asio::local::stream_protocol::socket>(std::move(sock));
      ucred cred{};
      socklen_t len = sizeof cred;
      const uid_t uid = getsockopt(s->native_handle(), SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0 ? cred.uid : uid_t(-1);
      auto buf = std::make_shared<asio::streambuf>(kMaxRequestBytes);
      asio::async_read_until(*s, *buf, '\n', [this, s, buf, uid](const boost::system::error_code& rec, std::size_t n) {
        std::shared_ptr<std::string> out;
        if (rec == asio::error::not_found)  // the buffer filled up before a newline came
          out = std::make_shared<std::string>(
              error("request longer than " + std::to_string(kMaxRequestBytes) + " bytes without a newline").dump() + "\n");
        else if (rec)
          return;
        else {
          const std::string line(asio::buffers_begin(buf->data()), asio::buffers_begin(buf->data()) + std::ptrdiff_t(n));
          out = std::make_shared<std::string>(handleLine(line, uid));
        }
        asio::async_write(*s, asio::buffer(*out), [s, out](const boost::system::error_code&, std::size_t) {});
      });
      accept();
    });
  }
};

Daemon::Daemon(xen::Hypervisor& hv, DaemonOptions options) : impl_(std::make_unique<Impl>(hv, std::move(options))) {
  auto& o = impl_->o;
  if (o.socket_path.empty()) o.socket_path = socketPath(o.run_dir, o.domid);
  if (o.shadow_path.empty()) o.shadow_path = shadowPath(o.run_dir, o.domid);
  if (!o.filter_factory) o.filter_factory = engineFilterFactory();
}

Daemon::~Daemon() {
  impl_->detach();
  impl_->closeTrace();
  if (impl_->bound_socket) ::unlink(impl_->o.socket_path.c_str());  // a standby that never took over owns none
}

Result<void> Daemon::start() {
  auto& d = *impl_;
  // A daemon started for a domain another daemon already serves (systemd restarting a unit, an
  // operator) stands by for it rather than fight over its ports.
  if (!d.o.standby) {
    auto st = request(d.o.socket_path, json{{"cmd", "status"}}, std::chrono::milliseconds(1000));
    if (st && st->value("attached", false)) {
      d.event("serving-daemon-found", {{"pid", st->value("pid", 0)}, {"action", "standby"}});
      d.o.standby = true;
    }
  }
  if (d.o.standby) {
    if (auto ok = d.standBy(); !ok) return ok;
    if (d.domain_gone) return {};
  }
  ::unlink(d.o.socket_path.c_str());
  d.bound_socket = true;
  boost::system::error_code ec;
  d.acceptor = std::make_unique<asio::local::stream_protocol::acceptor>(d.io);
  d.acceptor->open(asio::local::stream_protocol(), ec);
  if (!ec) d.acceptor->bind(asio::local::stream_protocol::endpoint(d.o.socket_path), ec);
  if (!ec) d.acceptor->listen(16, ec);
  if (ec) return fail(d.o.socket_path, "control socket: " + ec.message());
  d.signals.add(SIGINT);
  d.signals.add(SIGTERM);
  d.signals.add(SIGHUP);
  d.waitSignal();
  d.accept();
  d.tick();
  // A restarted daemon finds QEMU's journal and takes over at once.
  std::ifstream probe(d.o.shadow_path, std::ios::binary);
  std::uint64_t magic = 0;
  if (probe && probe.seekg(2 * xen::kPageSize) && probe.read(reinterpret_cast<char*>(&magic), sizeof magic) &&
      magic == xen::kJournalMagic) {
    const json r = d.handle(json{{"cmd", "attach"}}, 0);
    if (!r.value("ok", false)) return fail(d.o.shadow_path, "resuming: " + r.value("error", std::string()));
  }
  d.event("started", {{"socket", d.o.socket_path}});
  return {};
}

void Daemon::run() {
  if (impl_->domain_gone) return;
  impl_->io.run();
}
void Daemon::stop() {
  asio::post(impl_->io, [this] {
    impl_->detach();
    impl_->closeTrace();
    impl_->io.stop();
  });
}
json Daemon::handle(const json& request, uid_t uid) { return impl_->handle(request, uid); }
std::string Daemon::handleLine(std::string_view line, uid_t uid) { return impl_->handleLine(line, uid); }

}  // namespace iof::daemon
