// A line-oriented stream socket with deadlines: the transport under both qtest and QMP.
#pragma once

#include <chrono>
#include <expected>
#include <string>
#include <string_view>

#include "ioreq_filter/core/error.h"

namespace iof::qemu {

using Clock = std::chrono::steady_clock;

// Why a channel operation failed: the replay tells a hung QEMU (Timeout) from a dead one (Closed).
enum class ChannelFailure { Timeout, Closed, System };

struct ChannelError {
  ChannelFailure kind = ChannelFailure::System;
  Error error;
};

template <typename T>
using ChannelResult = std::expected<T, ChannelError>;

class LineChannel {
 public:
  // Takes ownership of a connected stream socket. `name` prefixes messages ("qtest", "qmp").
  LineChannel(int fd, std::string name);
  ~LineChannel();
  LineChannel(const LineChannel&) = delete;
  LineChannel& operator=(const LineChannel&) = delete;

  // Connects to a unix socket path; failure is an Error naming the path.
  static Result<int> connectUnix(const std::string& path);

  ChannelResult<void> writeLine(std::string_view line, Clock::time_point deadline);
  // One line without its "\n" (and "\r"). Lines longer than 64 MiB are a protocol error.
  ChannelResult<std::string> readLine(Clock::time_point deadline);
  const std::string& name() const { return name_; }

 private:
  int fd_;
  std::string name_;
  std::string buffer_;
};

}  // namespace iof::qemu
