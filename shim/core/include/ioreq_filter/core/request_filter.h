// The seam between a backend (Xen ioreq server, QEMU qtest replay, simulated hypervisor) and
// the engine. Envoy-style: a small object behind a pure interface, called on the data plane.
#pragma once

#include "ioreq_filter/core/io_request.h"
#include "ioreq_filter/core/verdict.h"

namespace iof {

class RequestFilter {
 public:
  virtual ~RequestFilter() = default;
  // Called once per guest request, before it reaches the device model. Must not throw,
  // allocate, lock or block: a guest vCPU is waiting.
  virtual Verdict onRequest(const IoRequest& request) noexcept = 0;
  // Called after a forwarded read completed, with the value the device model returned.
  virtual void onResponse(const IoRequest& request, std::uint64_t value) noexcept { (void)request, (void)value; }
};

}  // namespace iof
