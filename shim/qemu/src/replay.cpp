#include "ioreq_filter/qemu/replay.h"

namespace iof::qemu {
namespace {

// A guest-RAM read of one byte: no device sees it.
constexpr const char* kSettleProbe = "read 0x0 0x1";

// How QEMU ended up when a command got no proper answer.
Fate fateAfterFailure(QemuInstance& qemu, const ChannelError& failure, const std::string& command) {
  if (failure.kind == ChannelFailure::Closed) {
    // The socket closes a moment before the process is gone; give the kernel time to reap it.
    Fate f = qemu.waitForExit(std::chrono::milliseconds(5'000));
    if (f.kind != FateKind::Running) return f;
    return Fate{FateKind::Hung, 0, 0, "closed its qtest connection at '" + command + "' but did not exit"};
  }
  if (failure.kind == ChannelFailure::Timeout) {
    Fate f = qemu.poll();
    if (f.kind != FateKind::Running) return f;
    return Fate{FateKind::Hung, 0, 0,
                "no answer to '" + command + "' within " + std::to_string(qemu.qtest().timeout().count()) + " ms"};
  }
  Fate f = qemu.poll();
  if (f.kind == FateKind::Running) f.detail = failure.error.message();
  return f;
}

}  // namespace

Result<ReplayReport> replayTrace(const Trace& trace, QemuInstance& qemu, RequestFilter* filter,
                                 const ReplayOptions& options) {
  ReplayReport report;
  report.trace = trace.file;
  report.trigger_lines = trace.triggerLines();
  bool clock_unsupported = false;
  report.completed = true;
  for (std::size_t i = 0; i < trace.commands.size(); ++i) {
    const TraceCommand& c = trace.commands[i];
    ReplayStep step;
    step.command = i;
    step.line = c.line;
    step.is_io = c.isIo();
    step.expected = c.ret;
    if (step.is_io) {
      step.request = *toIoRequest(c);
      ++report.io_requests;
      if (filter) step.verdict = filter->onRequest(step.request);
      if (!step.verdict.forwarded()) {
        ++report.refused;
        if (!report.first_refusal_line) report.first_refusal_line = c.line;
        // Completed the way Xen completes a request no server takes.
        if (c.isRead()) step.response = accessMask(c.size);
      }
    }
    const bool is_clock = c.op == TraceOp::ClockStep || c.op == TraceOp::ClockSet;
    if (is_clock && clock_unsupported) {
      step.skipped = true;
    } else if (!step.is_io || step.verdict.forwarded()) {
      const std::string line = toQtest(c);
      auto reply = qemu.qtest().command(line);
      if (!reply) {
        if (reply.error().kind == ChannelFailure::System && qemu.poll().kind == FateKind::Running) {
          return fail(trace.where(c), reply.error().error.message());
        }
        // The command was handed to QEMU; it is what QEMU died or hung on.
        step.forwarded = true;
        if (step.is_io) ++report.forwarded;
        report.fate = fateAfterFailure(qemu, reply.error(), line);
        report.stopped_at_line = c.line;
        report.completed = false;
        report.steps.push_back(std::move(step));
        break;
      }
      if (!reply->ok) {
        // Debian's QEMU has no qtest accelerator, so the virtual clock cannot be stepped; the
        // replay goes on without it and says so.
        if (is_clock && reply->text.find("Unknown command") != std::string::npos) {
          clock_unsupported = true;
          step.skipped = true;
          report.notes.push_back("this QEMU cannot step the virtual clock under qtest ('" + reply->text +
                                 "'): clock_step/clock_set commands were skipped");
        } else {
          step.qemu_error = reply->text;
          ++report.qemu_errors;
        }
      } else {
        step.forwarded = true;
        if (step.is_io) {
          ++report.forwarded;
          if (c.isRead()) {
            if (!reply->value) return fail(trace.where(c), "qtest answered a read without a value: '" + reply->text + "'");
            step.response = *reply->value & accessMask(c.size);
            if (filter) filter->onResponse(step.request, *step.response);
          }
        }
      }
    }
    if (step.skipped) ++report.skipped;
    if (step.response && step.expected && *step.response != *step.expected) {
      step.mismatch = true;
      ++report.mismatches;
    }
    const bool refused = step.is_io && !step.verdict.forwarded();
    report.steps.push_back(std::move(step));
    if (refused && options.stop_at_first_refusal) {
      report.completed = i + 1 == trace.commands.size();
      break;
    }
  }
  if (report.completed) {
    // Devices finish work in bottom halves after the reply (DMA completions, timers): a couple of
    // harmless round trips through QEMU's main loop let a late crash surface in this replay.
    for (int probe = 0; probe < 2 && report.fate.kind == FateKind::Running; ++probe) {
      auto reply = qemu.qtest().command(kSettleProbe);
      if (!reply) {
        report.fate = fateAfterFailure(qemu, reply.error(), kSettleProbe);
        report.notes.push_back("QEMU " + std::string(toString(report.fate.kind)) + " after the last command");
      }
    }
  }
  if (report.fate.kind == FateKind::Running) report.fate = qemu.poll();
  return report;
}

}  // namespace iof::qemu
