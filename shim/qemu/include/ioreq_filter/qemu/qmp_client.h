// Client of the QEMU Machine Protocol: greeting, capability negotiation, synchronous commands.
// Asynchronous events are kept aside; a malformed reply is an Error quoting what arrived.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "ioreq_filter/qemu/line_channel.h"

namespace iof::qemu {

class QmpClient {
 public:
  QmpClient(std::unique_ptr<LineChannel> channel, std::chrono::milliseconds timeout);

  // Reads the greeting and sends qmp_capabilities. Must be called once before execute().
  Result<void> handshake();
  // The "return" member of the reply, or an Error with QEMU's "error" class and description.
  Result<nlohmann::json> execute(std::string_view command, const nlohmann::json& arguments = nullptr);

  const std::vector<nlohmann::json>& events() const { return events_; }

 private:
  ChannelResult<nlohmann::json> readMessage(Clock::time_point deadline);
  std::unique_ptr<LineChannel> channel_;
  std::chrono::milliseconds timeout_;
  std::vector<nlohmann::json> events_;
};

}  // namespace iof::qemu
