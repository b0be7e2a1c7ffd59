#include "ioreq_filter/daemon/client.h"

#include <cerrno>
#include <cstring>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

namespace iof::daemon {

std::string socketPath(const std::string& run_dir, unsigned domid) {
  return run_dir + "/dom" + std::to_string(domid) + ".sock";
}
std::string shadowPath(const std::string& run_dir, unsigned domid) {
  return run_dir + "/dom" + std::to_string(domid) + ".shadow";
}

namespace {
std::string sys(const std::string& what) { return what + ": " + std::strerror(errno); }
}  // namespace

Result<nlohmann::json> request(const std::string& socket, const nlohmann::json& message, std::chrono::milliseconds timeout) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (socket.size() >= sizeof addr.sun_path) return fail(socket, "socket path too long");
  std::memcpy(addr.sun_path, socket.c_str(), socket.size() + 1);
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return fail(socket, sys("socket"));
  struct Closer {
    int fd;
    ~Closer() { close(fd); }
  } closer{fd};
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0)
    return fail(socket, sys("connect") + " (is ioreq-filterd running for this domain?)");
  const std::string line = message.dump() + "\n";
  for (std::size_t off = 0; off < line.size();) {
    const ssize_t n = send(fd, line.data() + off, line.size() - off, MSG_NOSIGNAL);
    if (n < 0) return fail(socket, sys("send"));
    off += std::size_t(n);
  }
  std::string reply;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  char buf[4096];
  while (reply.find('\n') == std::string::npos) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return fail(socket, "no reply within " + std::to_string(timeout.count()) + " ms");
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, int(left.count())) <= 0) continue;
    const ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n < 0) return fail(socket, sys("recv"));
    if (n == 0) return fail(socket, "daemon closed the connection without a reply");
    reply.append(buf, std::size_t(n));
  }
  reply.resize(reply.find('\n'));
  auto j = nlohmann::json::parse(reply, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return fail(socket, "malformed reply: " + reply.substr(0, 200));
  if (!j.value("ok", false)) return fail(socket, j.value("error", std::string("request failed")));
  return j;
}

}  // namespace iof::daemon
