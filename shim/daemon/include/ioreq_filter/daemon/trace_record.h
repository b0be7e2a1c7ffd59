// `ioreq-filterd --record FILE`: the requests the daemon saw, written in the repo's trace format
// (docs/trace-format.md) so a workload observed on real Xen can be checked offline against any
// policy set (`ioreq-filter check`). The data plane only copies fixed-size records into a ring;
// formatting and file I/O happen on the control plane (the daemon's timer), same thread.
#pragma once

#include <array>
#include <cstdint>
#include <fstream>
#include <string>

#include "ioreq_filter/core/error.h"
#include "ioreq_filter/core/io_request.h"

namespace iof::daemon {

struct TraceRecord {
  IoRequest request;
  std::uint64_t ret = 0;
  bool has_ret = false;  // a read whose answer is known (forwarded and completed)
};

// The qtest lines for one request, each ending in '\n'. PCI_CONFIG requests become the CF8/CFC pair
// Xen decoded them from; requests the format cannot express (guest-memory REP transfers, extended
// config space, odd sizes) become a `#` comment naming the request, so nothing is silently dropped.
std::string traceLines(const TraceRecord& record);

class TraceRing {
 public:
  // Data plane: noexcept, allocation-free. A full ring counts the record as lost.
  void push(const TraceRecord& r) noexcept {
    if (head_ - tail_ < ring_.size())
      ring_[head_++ % ring_.size()] = r;
    else
      ++lost_;
  }
  bool halfFull() const noexcept { return head_ - tail_ >= ring_.size() / 2; }
  template <typename F>
  void drain(F&& f) {
    while (tail_ != head_) f(ring_[tail_++ % ring_.size()]);
  }
  std::uint64_t lost() const noexcept { return lost_; }

 private:
  std::array<TraceRecord, 8192> ring_{};
  std::uint64_t head_ = 0, tail_ = 0, lost_ = 0;
};

// Writes FILE.tmp while recording and renames it to FILE when closed, so a reader never sees half
// a trace under the final name (a killed daemon leaves only the .tmp).
class TraceFile {
 public:
  static Result<TraceFile> open(const std::string& path, const std::string& source);
  TraceFile(TraceFile&&) = default;
  TraceFile& operator=(TraceFile&&) = default;
  ~TraceFile();
  void drain(TraceRing& ring);
  Result<void> close(TraceRing& ring);
  std::uint64_t lines() const noexcept { return requests_; }
  const std::string& path() const noexcept { return path_; }

 private:
  TraceFile() = default;
  std::string path_;
  std::ofstream out_;
  std::uint64_t requests_ = 0, comments_ = 0;
  bool closed_ = false;
};

}  // namespace iof::daemon
