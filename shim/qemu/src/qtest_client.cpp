#include "ioreq_filter/qemu/qtest_client.h"

namespace iof::qemu {

QtestClient::QtestClient(std::unique_ptr<LineChannel> channel, std::chrono::milliseconds timeout)
    : channel_(std::move(channel)), timeout_(timeout) {}

Result<QtestReply> QtestClient::parseReply(std::string_view line) {
  QtestReply reply;
  reply.text = std::string(line);
  if (line == "OK" || line.starts_with("OK ")) {
    reply.ok = true;
    std::string_view rest = line.size() > 3 ? line.substr(3) : std::string_view{};
    if (rest.size() > 2 && rest[0] == '0' && rest[1] == 'x') {
      rest.remove_prefix(2);
      while (rest.size() > 16 && rest.front() == '0') rest.remove_prefix(1);
      std::uint64_t v = 0;
      bool digits = rest.size() <= 16 && !rest.empty();
      for (char c : rest) {
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0) {
          digits = false;
          break;
        }
        v = v << 4 | unsigned(d);
      }
      if (digits) reply.value = v;
    }
    return reply;
  }
  if (line == "ERR" || line.starts_with("ERR ") || line == "FAIL" || line.starts_with("FAIL ")) return reply;
  return fail("qtest", "protocol error: unexpected reply '" + std::string(line.substr(0, 120)) + "'");
}

ChannelResult<QtestReply> QtestClient::command(std::string_view line) {
  const auto deadline = Clock::now() + timeout_;
  if (auto w = channel_->writeLine(line, deadline); !w) return std::unexpected(w.error());
  for (;;) {
    auto got = channel_->readLine(deadline);
    if (!got) return std::unexpected(got.error());
    if (got->starts_with("IRQ ")) {
      irq_events_.push_back(std::move(*got));
      continue;
    }
    auto reply = parseReply(*got);
    if (!reply) return std::unexpected(ChannelError{ChannelFailure::System, reply.error()});
    return std::move(*reply);
  }
}

}  // namespace iof::qemu
