// The Hypervisor over Debian's real libxen 4.17 libraries.
#pragma once

#include <memory>

#include "ioreq_filter/core/error.h"
#include "ioreq_filter/xen/hypervisor.h"

namespace iof::xen {

// Opens the libxendevicemodel and libxenforeignmemory handles (stage "handle"). Fails with the call
// and errno when /dev/xen/privcmd is missing (not a Xen dom0).
struct LibxenCalls;
// `calls` null: the linked libraries (see libxen_calls.h).
Result<std::unique_ptr<Hypervisor>> openLibxen(const LibxenCalls* calls = nullptr);

}  // namespace iof::xen
