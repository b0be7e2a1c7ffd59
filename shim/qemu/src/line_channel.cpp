#include "ioreq_filter/qemu/line_channel.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace iof::qemu {
namespace {
constexpr std::size_t kMaxLine = 64u << 20;

int millisUntil(Clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return left <= 0 ? 0 : left > 60'000 ? 60'000 : int(left);
}

std::unexpected<ChannelError> failWith(ChannelFailure kind, const std::string& where, std::string what) {
  return std::unexpected(ChannelError{kind, Error{where, std::move(what)}});
}
}  // namespace

LineChannel::LineChannel(int fd, std::string name) : fd_(fd), name_(std::move(name)) {}

LineChannel::~LineChannel() {
  if (fd_ >= 0) ::close(fd_);
}

Result<int> LineChannel::connectUnix(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path) return fail(path, "unix socket path is too long");
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return fail(path, std::string("socket(AF_UNIX): ") + std::strerror(errno));
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    const int err = errno;
    ::close(fd);
    return fail(path, std::string("connect: ") + std::strerror(err));
  }
  return fd;
}

ChannelResult<void> LineChannel::writeLine(std::string_view line, Clock::time_point deadline) {
  std::string data(line);
  data.push_back('\n');
  std::size_t done = 0;
  while (done < data.size()) {
    pollfd p{fd_, POLLOUT, 0};
    const int n = ::poll(&p, 1, millisUntil(deadline));
    if (n < 0) {
      if (errno == EINTR) continue;
      return failWith(ChannelFailure::System, name_, std::string("poll: ") + std::strerror(errno));
    }
    if (n == 0) return failWith(ChannelFailure::Timeout, name_, "QEMU did not accept a command before the deadline");
    // MSG_NOSIGNAL: a QEMU that died must become an error, not a SIGPIPE that kills us.
    const ssize_t w = ::send(fd_, data.data() + done, data.size() - done, MSG_NOSIGNAL);
    if (w < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      if (errno == EPIPE || errno == ECONNRESET) return failWith(ChannelFailure::Closed, name_, "QEMU closed the connection");
      return failWith(ChannelFailure::System, name_, std::string("send: ") + std::strerror(errno));
    }
    done += std::size_t(w);
  }
  return {};
}

ChannelResult<std::string> LineChannel::readLine(Clock::time_point deadline) {
  for (;;) {
    const auto nl = buffer_.find('\n');
    if (nl != std::string::npos) {
      std::string line = buffer_.substr(0, nl);
      buffer_.erase(0, nl + 1);
      if (!line.empty() && line.back() == '\r') line.pop_back();
      return line;
    }
    if (buffer_.size() > kMaxLine) {
      return failWith(ChannelFailure::System, name_, "protocol error: a line longer than 64 MiB");
    }
    pollfd p{fd_, POLLIN, 0};
    const int n = ::poll(&p, 1, millisUntil(deadline));
    if (n < 0) {
      if (errno == EINTR) continue;
      return failWith(ChannelFailure::System, name_, std::string("poll: ") + std::strerror(errno));
    }
    if (n == 0) return failWith(ChannelFailure::Timeout, name_, "no answer from QEMU before the deadline");
    char chunk[65536];
    const ssize_t r = ::recv(fd_, chunk, sizeof chunk, 0);
    if (r < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      if (errno == ECONNRESET) return failWith(ChannelFailure::Closed, name_, "QEMU closed the connection");
      return failWith(ChannelFailure::System, name_, std::string("recv: ") + std::strerror(errno));
    }
    if (r == 0) return failWith(ChannelFailure::Closed, name_, "QEMU closed the connection");
    buffer_.append(chunk, std::size_t(r));
  }
}

}  // namespace iof::qemu
