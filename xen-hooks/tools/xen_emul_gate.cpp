// xen-emul-gate: switch the Xen emulation context gate for one HVM domain and read its
// denial counters. Works with Debian's unpatched libxenctrl: the gate is an ordinary HVM
// parameter (added by xen-hooks/patches/0003), set with xc_hvm_param_set().
//
//   xen-emul-gate DOMID off|log|enforce
//   xen-emul-gate DOMID status        mode, total denials and denials per context
//
// An unpatched hypervisor rejects the unknown parameter with EINVAL; that is reported as
// such rather than as a generic failure.

extern "C" {
#include <xenctrl.h>
}

#include <array>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <expected>
#include <string>
#include <string_view>

namespace {

// Must match xen/include/public/hvm/params.h as patched; tests/run-static-check.sh compares.
constexpr uint32_t kParamEmulGate = 39;
constexpr uint32_t kParamEmulGateDenied = 40;
constexpr uint32_t kParamEmulGateSelect = 41;

// enum x86emul_gate_ctx order (xen/arch/x86/x86_emulate/gate.h); compared by the same test.
constexpr std::array<std::string_view, 13> kContexts = {
    "decode-only", "mmio",     "apic-access", "string-pio",    "cr-access", "invlpg",   "sysdesc",
    "ud-intercept", "hvm-fep", "realmode",    "ro-mmio",       "introspection", "shadow-pt"};
constexpr std::array<std::string_view, 3> kModes = {"off", "log", "enforce"};

struct Error {
  std::string what;
};

class XenCtrl {
 public:
  XenCtrl() : xch_(xc_interface_open(nullptr, nullptr, 0)) {}
  ~XenCtrl() {
    if (xch_) xc_interface_close(xch_);
  }
  XenCtrl(const XenCtrl&) = delete;
  XenCtrl& operator=(const XenCtrl&) = delete;
  explicit operator bool() const { return xch_ != nullptr; }

  std::expected<void, Error> set(uint32_t domid, uint32_t param, uint64_t value) {
    if (xc_hvm_param_set(xch_, domid, param, value) == 0) return {};
    return std::unexpected(failure("set", domid, param));
  }
  std::expected<uint64_t, Error> get(uint32_t domid, uint32_t param) {
    uint64_t value = 0;
    if (xc_hvm_param_get(xch_, domid, param, &value) == 0) return value;
    return std::unexpected(failure("get", domid, param));
  }

 private:
  static Error failure(const char* op, uint32_t domid, uint32_t param) {
    int err = errno;
    std::string why = std::strerror(err);
    if (err == EINVAL)
      why += " (is the hypervisor built with xen-hooks/patches? unpatched Xen has no parameter " +
             std::to_string(param) + ")";
    return Error{std::string("xc_hvm_param_") + op + "(domain " + std::to_string(domid) + ", param " +
                 std::to_string(param) + "): " + why};
  }
  xc_interface* xch_;
};

int usage() {
  std::fprintf(stderr, "usage: xen-emul-gate DOMID off|log|enforce|status\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) return usage();
  char* end = nullptr;
  unsigned long domid = std::strtoul(argv[1], &end, 0);
  if (!*argv[1] || *end || domid >= 0x7ff0) {
    std::fprintf(stderr, "xen-emul-gate: '%s' is not a domain id\n", argv[1]);
    return 2;
  }
  std::string_view cmd = argv[2];

  XenCtrl xc;
  if (!xc) {
    std::fprintf(stderr, "xen-emul-gate: xc_interface_open failed: %s (dom0 with privcmd?)\n",
                 std::strerror(errno));
    return 1;
  }

  for (size_t mode = 0; mode < kModes.size(); ++mode) {
    if (cmd != kModes[mode]) continue;
    if (auto r = xc.set(domid, kParamEmulGate, mode); !r) {
      std::fprintf(stderr, "xen-emul-gate: %s\n", r.error().what.c_str());
      return 1;
    }
    std::printf("domain %lu: emulation gate %s\n", domid, kModes[mode].data());
    return 0;
  }
  if (cmd != "status") return usage();

  auto mode = xc.get(domid, kParamEmulGate);
  if (!mode) {
    std::fprintf(stderr, "xen-emul-gate: %s\n", mode.error().what.c_str());
    return 1;
  }
  std::printf("domain %lu: emulation gate %s\n", domid,
              *mode < kModes.size() ? kModes[*mode].data() : "unknown");
  for (size_t sel = 0; sel <= kContexts.size(); ++sel) {
    auto set = xc.set(domid, kParamEmulGateSelect, sel);
    auto denied = set ? xc.get(domid, kParamEmulGateDenied) : std::unexpected(set.error());
    if (!denied) {
      std::fprintf(stderr, "xen-emul-gate: %s\n", denied.error().what.c_str());
      return 1;
    }
    if (sel == 0)
      std::printf("denied total %llu\n", static_cast<unsigned long long>(*denied));
    else if (*denied)
      std::printf("denied %s %llu\n", kContexts[sel - 1].data(), static_cast<unsigned long long>(*denied));
  }
  (void)xc.set(domid, kParamEmulGateSelect, 0);
  return 0;
}
