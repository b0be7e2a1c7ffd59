#include "ioreq_filter/qemu/qmp_client.h"

#include "json_util.h"

namespace iof::qemu {

QmpClient::QmpClient(std::unique_ptr<LineChannel> channel, std::chrono::milliseconds timeout)
    : channel_(std::move(channel)), timeout_(timeout) {}

ChannelResult<nlohmann::json> QmpClient::readMessage(Clock::time_point deadline) {
  auto line = channel_->readLine(deadline);
  if (!line) return std::unexpected(line.error());
  auto message = nlohmann::json::parse(*line, nullptr, /*allow_exceptions=*/false);
  if (message.is_discarded() || !message.is_object()) {
    return std::unexpected(ChannelError{
        ChannelFailure::System, Error{"qmp", "malformed message (not a JSON object): '" + line->substr(0, 200) + "'"}});
  }
  return message;
}

Result<void> QmpClient::handshake() {
  const auto deadline = Clock::now() + timeout_;
  auto greeting = readMessage(deadline);
  if (!greeting) return std::unexpected(greeting.error().error);
  if (!greeting->contains("QMP")) {
    return fail("qmp", "expected the QMP greeting, got '" + greeting->dump().substr(0, 200) + "'");
  }
  auto caps = execute("qmp_capabilities");
  if (!caps) return std::unexpected(caps.error());
  return {};
}

Result<nlohmann::json> QmpClient::execute(std::string_view command, const nlohmann::json& arguments) {
  nlohmann::json request = {{"execute", command}};
  if (!arguments.is_null()) request["arguments"] = arguments;
  const auto deadline = Clock::now() + timeout_;
  const std::string where = "qmp " + std::string(command);
  if (auto w = channel_->writeLine(request.dump(), deadline); !w) return fail(where, w.error().error.what);
  for (;;) {
    auto message = readMessage(deadline);
    if (!message) return fail(where, message.error().error.what);
    if (message->contains("event")) {
      events_.push_back(std::move(*message));
      continue;
    }
    if (auto it = message->find("return"); it != message->end()) return *it;
    if (auto it = message->find("error"); it != message->end() && it->is_object()) {
      return fail(where, "QEMU refused: " + jsonString(*it, "class") + ": " +
                             jsonString(*it, "desc"));
    }
    return fail(where, "malformed reply (neither return, error nor event): '" + message->dump().substr(0, 200) + "'");
  }
}

}  // namespace iof::qemu
