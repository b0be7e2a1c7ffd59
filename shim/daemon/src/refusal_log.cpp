#include "ioreq_filter/daemon/refusal_log.h"

namespace iof::daemon {

Verdict RecordingFilter::onRequest(const IoRequest& request) noexcept {
  const Verdict v = inner_ ? inner_->onRequest(request) : Verdict{};
  if (!v.forwarded() || v.monitored) {
    if (head_ - tail_ < ring_.size())
      ring_[head_++ % ring_.size()] = RefusalRecord{request, v};
    else
      ++lost_;
  }
  // A forwarded read is recorded with its answer, in onResponse.
  const bool answered_later = request.dir == Dir::Read && !request.data_is_ptr && v.forwarded();
  if (trace_ && !answered_later) trace_->push(TraceRecord{request, 0, false});
  return v;
}

void RateLimitedLog::refusal(const std::string& line, std::uint64_t now_ms) {
  flush(now_ms);
  if (in_window_ < per_second_) {
    ++in_window_;
    sink_(line);
  } else {
    ++suppressed_;
    ++suppressed_total_;
  }
}

void RateLimitedLog::flush(std::uint64_t now_ms) {
  if (now_ms - window_start_ < 1000) return;
  if (suppressed_)
    sink_("{\"event\":\"refusals-suppressed\",\"count\":" + std::to_string(suppressed_) + "}");
  suppressed_ = 0;
  in_window_ = 0;
  window_start_ = now_ms;
}

}  // namespace iof::daemon
