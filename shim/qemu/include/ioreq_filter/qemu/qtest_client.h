// Client of QEMU's qtest protocol: one command line out, one reply line back, with asynchronous
// "IRQ raise N" / "IRQ lower N" lines interleaved that are collected rather than taken as replies.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ioreq_filter/qemu/line_channel.h"

namespace iof::qemu {

struct QtestReply {
  bool ok = false;                      // "OK..." (else "ERR ..." or "FAIL ...": QEMU refused the command)
  std::optional<std::uint64_t> value;   // "OK 0x..." that fits in 64 bits (port/MMIO reads)
  std::string text;                     // the whole reply line
};

class QtestClient {
 public:
  QtestClient(std::unique_ptr<LineChannel> channel, std::chrono::milliseconds timeout);

  // Sends one command and waits up to the timeout for its reply.
  ChannelResult<QtestReply> command(std::string_view line);
  // Parses one reply line (exposed for tests). Unknown replies are protocol errors.
  static Result<QtestReply> parseReply(std::string_view line);

  void setTimeout(std::chrono::milliseconds timeout) { timeout_ = timeout; }
  std::chrono::milliseconds timeout() const { return timeout_; }
  const std::vector<std::string>& irqEvents() const { return irq_events_; }

 private:
  std::unique_ptr<LineChannel> channel_;
  std::chrono::milliseconds timeout_;
  std::vector<std::string> irq_events_;
};

}  // namespace iof::qemu
