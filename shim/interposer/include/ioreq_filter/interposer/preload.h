// Entry points of libioreq-interposer.so besides the wrapped libxen symbols.
#pragma once

#include "ioreq_filter/interposer/interposer.h"

namespace iof::interposer {

// Tests: serve the wrapped calls from `hv` (the simulator) instead of the real libxen, with `config`.
// Handles returned by the wrapped *_open calls are then tokens. Call before the first wrapped call.
__attribute__((visibility("default"))) void useHypervisorForTesting(xen::Hypervisor* hv, InterposerConfig config);
// The process-wide interposer (null before QEMU created its ioreq server).
__attribute__((visibility("default"))) Interposer* current() noexcept;

}  // namespace iof::interposer
