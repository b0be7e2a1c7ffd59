// The libxen symbols QEMU 7.2 uses for its ioreq server (hw/i386/xen/xen-hvm.c), wrapped. Every
// other libxen call QEMU makes goes straight to the real library. The real entry points are found
// with dlsym(RTLD_NEXT): inside this library the plain names resolve to the wrappers themselves.
//
// Environment (set by integration/ioreq-filter-dm-wrapper):
//   IOREQ_FILTER_MODE         inline | proxy
//   IOREQ_FILTER_RUN_DIR      proxy: the daemon's socket and shadow file (default /run/ioreq-filter)
//   IOREQ_FILTER_POLICY_DIR   inline: policy tree
//   IOREQ_FILTER_DEVICES      inline: JSON device list
//   IOREQ_FILTER_ENGINE_MODE  inline: enforce | monitor | learn
//   IOREQ_FILTER_ALLOW_SERVERS inline: ioreq server ids besides QEMU's that may exist (else: crash)
// Fails closed: if the filter cannot be set up, creating the ioreq server fails and QEMU exits.
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dlfcn.h>
#include <mutex>

#include "ioreq_filter/core/engine.h"
#include "ioreq_filter/daemon/daemon.h"
#include "ioreq_filter/interposer/preload.h"
#include "ioreq_filter/policy/policy_json.h"
#include "ioreq_filter/xen/libxen_calls.h"
#include "ioreq_filter/xen/libxen_hypervisor.h"

extern "C" {
#include <xen/memory.h>
}

#define IOF_EXPORT extern "C" __attribute__((visibility("default")))

namespace iof::interposer {
namespace {

struct Global {
  std::mutex mu;
  bool initialised = false;
  xen::LibxenCalls real;
  xen::Hypervisor* hv = nullptr;
  std::unique_ptr<xen::Hypervisor> own_hv;
  std::unique_ptr<RequestFilter> filter;
  std::unique_ptr<Interposer> ip;
  InterposerConfig config;
  bool testing = false;
  void* ioreq_xce = nullptr;  // QEMU's event-channel handle that bound ioreq ports
  int token = 0x1000;
};

Global& g() {
  static Global* global = new Global();  // never destroyed: QEMU may call us from exit handlers
  return *global;
}

void say(const std::string& s) { std::fprintf(stderr, "ioreq-interposer: %s\n", s.c_str()); }

void loadReal(Global& s) {
#define IOF_DLSYM(name) s.real.name = reinterpret_cast<decltype(s.real.name)>(dlsym(RTLD_NEXT, #name));
  IOF_LIBXEN_CALLS(IOF_DLSYM)
#undef IOF_DLSYM
}

const char* env(const char* name, const char* def) {
  const char* v = std::getenv(name);
  return v && *v ? v : def;
}

// Builds the interposer on first use; null (with a message) means: fail closed.
Interposer* ensure() {
  Global& s = g();
  std::lock_guard lk(s.mu);
  if (s.ip) return s.ip.get();
  if (!s.testing) {
    if (!s.initialised) loadReal(s);
    s.initialised = true;
    auto hv = xen::openLibxen(&s.real);
    if (!hv) {
      say(hv.error().message());
      return nullptr;
    }
    s.own_hv = std::move(*hv);
    s.hv = s.own_hv.get();
    const std::string mode = env("IOREQ_FILTER_MODE", "inline");
    s.config.mode = mode == "proxy" ? Deployment::Proxy : Deployment::Inline;
    s.config.run_dir = env("IOREQ_FILTER_RUN_DIR", "/run/ioreq-filter");
    s.config.log = say;
    // As ioreq-filterd --allow-server: ioreq server ids besides QEMU's that may exist (comma-separated).
    for (const char* a = env("IOREQ_FILTER_ALLOW_SERVERS", ""); *a;) {
      char* end = nullptr;
      const unsigned long id = std::strtoul(a, &end, 10);
      if (end == a || id >= iof::xen::kMaxServers || (*end && *end != ',')) {
        say(std::string("IOREQ_FILTER_ALLOW_SERVERS: expected ioreq server ids 0-7, comma-separated, got '") +
            env("IOREQ_FILTER_ALLOW_SERVERS", "") + "'");
        return nullptr;
      }
      s.config.allowed_servers.push_back(iof::xen::ServerId(id));
      a = *end ? end + 1 : end;
    }
    if (s.config.mode == Deployment::Inline) {
      daemon::DaemonOptions o;
      o.policy_dir = env("IOREQ_FILTER_POLICY_DIR", "");
      o.devices_file = env("IOREQ_FILTER_DEVICES", "");
      // As ioreq-filterd --unfiltered: the devices that may run without a policy, comma-separated.
      const std::string unfiltered = env("IOREQ_FILTER_UNFILTERED", "");
      for (std::size_t at = 0; at < unfiltered.size();) {
        const std::size_t comma = std::min(unfiltered.find(',', at), unfiltered.size());
        if (comma > at) o.unfiltered.push_back(unfiltered.substr(at, comma - at));
        at = comma + 1;
      }
      const std::string m = env("IOREQ_FILTER_ENGINE_MODE", "enforce");
      o.mode = m == "monitor" ? Mode::Monitor : m == "learn" ? Mode::Learn : Mode::Enforce;
      if (o.devices_file.empty()) {
        say("inline mode needs IOREQ_FILTER_DEVICES (JSON device list)");
        return nullptr;
      }
      std::vector<std::string> uncovered;
      auto f = daemon::engineFilterFactory()(o, false, &uncovered);
      if (!f) {
        say(f.error().message());
        return nullptr;
      }
      s.filter = std::move(*f);
      s.config.filter = s.filter.get();
      for (auto& u : uncovered) say("no policy covers emulated device " + u);
    }
  }
  s.ip = std::make_unique<Interposer>(*s.hv, s.config);
  return s.ip.get();
}

Interposer* existing() noexcept { return g().ip.get(); }

void* token() { return reinterpret_cast<void*>(static_cast<std::uintptr_t>(g().token += 0x10)); }

const xen::LibxenCalls& real() {
  Global& s = g();
  if (!s.initialised) {
    std::lock_guard lk(s.mu);
    if (!s.initialised) loadReal(s);
    s.initialised = true;
  }
  return s.real;
}

int ret(int rc) {
  if (rc < 0) {
    errno = -rc;
    return -1;
  }
  return rc;
}

}  // namespace

void useHypervisorForTesting(xen::Hypervisor* hv, InterposerConfig config) {
  Global& s = g();
  std::lock_guard lk(s.mu);
  s.ip.reset();
  s.testing = true;
  s.hv = hv;
  s.config = std::move(config);
  s.ioreq_xce = nullptr;
}

Interposer* current() noexcept { return existing(); }

}  // namespace iof::interposer

using namespace iof::interposer;

// The handshake with integration/ioreq-filter-dm-wrapper. LD_PRELOAD alone cannot be trusted: a
// missing or unloadable library is only a warning from ld.so, and QEMU would then run unfiltered.
// So the wrapper appends kInterposerRequired to QEMU's argv, an option QEMU rejects ("invalid
// option", exit 1, before any device exists), and this constructor, which glibc runs before main()
// with the process's argc/argv (ELF init_array), replaces it in place with an option QEMU-xen is
// given anyway. Only a QEMU that really carries the interposer gets past its own option parser.
namespace {
constexpr const char* kInterposerRequired = "-ioreq-filter-interposer-required";
char kNeutralOption[] = "-no-user-config";  // libxl passes it to QEMU-xen already; repeating it is a no-op

__attribute__((constructor)) void acknowledgeWrapper(int argc, char** argv, char**) {
  if (!argv) return;
  for (int i = 1; i < argc; ++i)
    if (argv[i] && std::strcmp(argv[i], kInterposerRequired) == 0) argv[i] = kNeutralOption;
}
}  // namespace

// --- handles: only tokens under test, the real thing otherwise ---
IOF_EXPORT xendevicemodel_handle* xendevicemodel_open(xentoollog_logger* l, unsigned f) {
  if (g().testing) return static_cast<xendevicemodel_handle*>(token());
  return real().xendevicemodel_open(l, f);
}
IOF_EXPORT int xendevicemodel_close(xendevicemodel_handle* h) { return g().testing ? 0 : real().xendevicemodel_close(h); }
IOF_EXPORT xenforeignmemory_handle* xenforeignmemory_open(xentoollog_logger* l, unsigned f) {
  if (g().testing) return static_cast<xenforeignmemory_handle*>(token());
  return real().xenforeignmemory_open(l, f);
}
IOF_EXPORT int xenforeignmemory_close(xenforeignmemory_handle* h) { return g().testing ? 0 : real().xenforeignmemory_close(h); }
IOF_EXPORT xenevtchn_handle* xenevtchn_open(xentoollog_logger* l, unsigned f) {
  if (g().testing) return static_cast<xenevtchn_handle*>(token());
  return real().xenevtchn_open(l, f);
}
IOF_EXPORT int xenevtchn_close(xenevtchn_handle* h) {
  if (h && h == g().ioreq_xce) {
    if (auto* ip = existing()) ip->closeEvents();
    g().ioreq_xce = nullptr;
  }
  return g().testing ? 0 : real().xenevtchn_close(h);
}

// --- the ioreq server ---
IOF_EXPORT int xendevicemodel_create_ioreq_server(xendevicemodel_handle* h, domid_t domid, int bufioreq, ioservid_t* id) {
  (void)h;
  Interposer* ip = ensure();
  if (!ip) {
    errno = EPERM;  // fail closed: QEMU reports it and exits
    return -1;
  }
  iof::xen::ServerId sid = 0;
  const int rc = ip->createServer(domid, bufioreq, &sid);
  if (rc == 0) *id = sid;
  return ret(rc);
}

IOF_EXPORT int xendevicemodel_get_ioreq_server_info(xendevicemodel_handle* h, domid_t domid, ioservid_t id,
                                                    xen_pfn_t* ioreq_gfn, xen_pfn_t* bufioreq_gfn,
                                                    evtchn_port_t* bufioreq_port) {
  Interposer* ip = existing();
  if (!ip || !ip->ownsServer(domid, id))
    return g().testing ? ret(-ENOENT) : real().xendevicemodel_get_ioreq_server_info(h, domid, id, ioreq_gfn, bufioreq_gfn, bufioreq_port);
  if (ioreq_gfn || bufioreq_gfn) return ret(-EOPNOTSUPP);  // only the resource mapping path exists
  iof::xen::Port port = 0;
  const int rc = ip->serverInfo(domid, id, &port);
  if (rc == 0 && bufioreq_port) *bufioreq_port = port;
  return ret(rc);
}

IOF_EXPORT int xendevicemodel_set_ioreq_server_state(xendevicemodel_handle* h, domid_t domid, ioservid_t id, int enabled) {
  Interposer* ip = existing();
  if (!ip || !ip->ownsServer(domid, id))
    return g().testing ? ret(-ENOENT) : real().xendevicemodel_set_ioreq_server_state(h, domid, id, enabled);
  return ret(ip->setServerState(domid, id, enabled != 0));
}

IOF_EXPORT int xendevicemodel_destroy_ioreq_server(xendevicemodel_handle* h, domid_t domid, ioservid_t id) {
  Interposer* ip = existing();
  if (!ip || !ip->ownsServer(domid, id))
    return g().testing ? ret(-ENOENT) : real().xendevicemodel_destroy_ioreq_server(h, domid, id);
  return ret(ip->destroyServer(domid, id));
}

static xenforeignmemory_resource_handle* const kShadowResource =
    reinterpret_cast<xenforeignmemory_resource_handle*>(static_cast<std::uintptr_t>(0x5ead));

IOF_EXPORT xenforeignmemory_resource_handle* xenforeignmemory_map_resource(xenforeignmemory_handle* fmem, domid_t domid,
                                                                          unsigned int type, unsigned int id,
                                                                          unsigned long frame, unsigned long nr_frames,
                                                                          void** paddr, int prot, int flags) {
  Interposer* ip = existing();
  if (!ip || type != XENMEM_resource_ioreq_server || !ip->ownsServer(domid, iof::xen::ServerId(id))) {
    if (g().testing) {
      errno = EOPNOTSUPP;
      return nullptr;
    }
    return real().xenforeignmemory_map_resource(fmem, domid, type, id, frame, nr_frames, paddr, prot, flags);
  }
  int err = 0;
  void* shadow = ip->mapResource(domid, iof::xen::ServerId(id), frame, nr_frames, &err);
  if (!shadow) {
    errno = err;
    return nullptr;
  }
  *paddr = shadow;
  return kShadowResource;
}

IOF_EXPORT int xenforeignmemory_unmap_resource(xenforeignmemory_handle* fmem, xenforeignmemory_resource_handle* fres) {
  if (fres == kShadowResource) {
    if (auto* ip = existing()) ip->unmapResource();
    return 0;
  }
  return g().testing ? 0 : real().xenforeignmemory_unmap_resource(fmem, fres);
}

// --- QEMU's ioreq event channel ---
IOF_EXPORT xenevtchn_port_or_error_t xenevtchn_bind_interdomain(xenevtchn_handle* xce, uint32_t domid, evtchn_port_t port) {
  Interposer* ip = existing();
  if (!ip || !ip->isIoreqPort(iof::xen::DomId(domid), port))
    return g().testing ? ret(-EINVAL) : real().xenevtchn_bind_interdomain(xce, domid, port);
  g().ioreq_xce = xce;
  const long p = ip->bind(iof::xen::DomId(domid), port);
  return p < 0 ? ret(int(p)) : xenevtchn_port_or_error_t(p);
}

IOF_EXPORT int xenevtchn_fd(xenevtchn_handle* xce) {
  if (xce == g().ioreq_xce && existing()) return existing()->fd();
  return g().testing ? ret(-EBADF) : real().xenevtchn_fd(xce);
}

IOF_EXPORT xenevtchn_port_or_error_t xenevtchn_pending(xenevtchn_handle* xce) {
  if (xce == g().ioreq_xce && existing()) return xenevtchn_port_or_error_t(existing()->pending());
  return g().testing ? ret(-EBADF) : real().xenevtchn_pending(xce);
}

IOF_EXPORT int xenevtchn_unmask(xenevtchn_handle* xce, evtchn_port_t port) {
  if (xce == g().ioreq_xce && existing()) return ret(existing()->unmask(port));
  return g().testing ? ret(-EBADF) : real().xenevtchn_unmask(xce, port);
}

IOF_EXPORT int xenevtchn_notify(xenevtchn_handle* xce, evtchn_port_t port) {
  if (xce == g().ioreq_xce && existing()) return ret(existing()->notify(port));
  return g().testing ? ret(-EBADF) : real().xenevtchn_notify(xce, port);
}
