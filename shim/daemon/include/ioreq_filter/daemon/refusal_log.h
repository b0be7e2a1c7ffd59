// Refusals seen on the data plane, handed to the control plane without allocation or locks: the
// filter wrapper writes into a fixed ring from the event-loop thread; the daemon's timer drains it
// into log lines, at most `per_second` a second, summarising the rest (a guest must not be able to
// flood the journal).
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <string>

#include "ioreq_filter/core/request_filter.h"
#include "ioreq_filter/daemon/trace_record.h"

namespace iof::daemon {

struct RefusalRecord {
  IoRequest request;
  Verdict verdict;
};

class RecordingFilter final : public RequestFilter {
 public:
  explicit RecordingFilter(RequestFilter* inner) noexcept : inner_(inner) {}
  void setInner(RequestFilter* inner) noexcept { inner_ = inner; }
  RequestFilter* inner() const noexcept { return inner_; }
  Verdict onRequest(const IoRequest& request) noexcept override;
  void onResponse(const IoRequest& request, std::uint64_t value) noexcept override {
    if (trace_) trace_->push(TraceRecord{request, value, true});
    if (inner_) inner_->onResponse(request, value);
  }
  // Every request seen is also copied here (--record); nullptr: not recording.
  void setTrace(TraceRing* trace) noexcept { trace_ = trace; }
  // Control plane, same thread.
  template <typename F>
  void drain(F&& f) {
    while (tail_ != head_) f(ring_[tail_++ % ring_.size()]);
  }
  std::uint64_t lost() const noexcept { return lost_; }

 private:
  RequestFilter* inner_;
  TraceRing* trace_ = nullptr;
  std::array<RefusalRecord, 256> ring_{};
  std::uint64_t head_ = 0, tail_ = 0, lost_ = 0;
};

class RateLimitedLog {
 public:
  RateLimitedLog(unsigned per_second, std::function<void(const std::string&)> sink)
      : per_second_(per_second), sink_(std::move(sink)) {}
  // now_ms: a monotonic clock in milliseconds (injected so tests need no sleeps).
  void refusal(const std::string& line, std::uint64_t now_ms);
  void flush(std::uint64_t now_ms);
  std::uint64_t suppressed_total() const { return suppressed_total_; }

 private:
  unsigned per_second_;
  std::function<void(const std::string&)> sink_;
  std::uint64_t window_start_ = 0;
  unsigned in_window_ = 0;
  std::uint64_t suppressed_ = 0, suppressed_total_ = 0;
};

}  // namespace iof::daemon
