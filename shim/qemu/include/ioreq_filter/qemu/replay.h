// Replays a trace into a real QEMU through an optional filter: the QEMU device-model backend.
// I/O commands become IoRequests; accepted ones are forwarded as qtest commands, refused ones are
// completed here the way Xen completes them (reads all-ones, writes dropped). Guest-RAM and clock
// commands are always forwarded. Read responses are compared with the trace's recorded `ret` values.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "ioreq_filter/core/error.h"
#include "ioreq_filter/core/request_filter.h"
#include "ioreq_filter/qemu/qemu_instance.h"
#include "ioreq_filter/trace/trace.h"

namespace iof::qemu {

struct ReplayStep {
  std::size_t command = 0;  // index into Trace::commands
  std::size_t line = 0;
  bool is_io = false;
  IoRequest request{};      // is_io only
  Verdict verdict{};        // is_io only; Forward when there is no filter
  bool forwarded = false;   // reached QEMU
  bool skipped = false;     // not forwarded because this QEMU cannot execute it (e.g. clock_step)
  std::optional<std::uint64_t> response;  // reads: what the guest saw (QEMU's answer or all-ones)
  std::optional<std::uint64_t> expected;  // reads: the trace's `ret`
  bool mismatch = false;    // response differs from expected
  std::string qemu_error;   // QEMU answered ERR/FAIL
};

struct ReplayReport {
  std::string trace;
  std::vector<ReplayStep> steps;  // one per command executed, in order
  std::size_t io_requests = 0, forwarded = 0, refused = 0, mismatches = 0, skipped = 0, qemu_errors = 0;
  std::optional<std::size_t> first_refusal_line;
  std::vector<std::size_t> trigger_lines;
  bool completed = false;  // every command of the trace was executed
  std::optional<std::size_t> stopped_at_line;  // QEMU died or hung while executing this line
  Fate fate;               // QEMU's state when the replay ended
  std::vector<std::string> notes;

  // A refusal at or before the first trigger line (false if there is none of either).
  bool refusedAtOrBeforeTrigger() const {
    return first_refusal_line && !trigger_lines.empty() && *first_refusal_line <= trigger_lines.front();
  }
};

struct ReplayOptions {
  // Stop at the first refusal (what enforcement with "refuse and crash the domain" would do).
  bool stop_at_first_refusal = false;
};

// Returns an Error only for internal/protocol problems; QEMU dying or hanging is a Fate in the report.
Result<ReplayReport> replayTrace(const Trace& trace, QemuInstance& qemu, RequestFilter* filter,
                                 const ReplayOptions& options = {});

}  // namespace iof::qemu
