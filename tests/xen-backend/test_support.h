// Shared fixtures for the Xen-backend tests: fake filters (fakes over mocks), a proxy driver
// thread, and small request builders.
#pragma once

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <mutex>
#include <poll.h>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

#include "ioreq_filter/core/request_filter.h"
#include "ioreq_filter/xen/proxy.h"

namespace iof::test {

inline IoRequest pio(std::uint64_t port, Dir dir, std::uint8_t size = 1, std::uint64_t data = 0) {
  IoRequest r;
  r.type = IoType::Pio;
  r.addr = port;
  r.dir = dir;
  r.size = size;
  r.data = data;
  return r;
}
inline IoRequest mmio(std::uint64_t addr, Dir dir, std::uint8_t size = 4, std::uint64_t data = 0) {
  IoRequest r = pio(addr, dir, size, data);
  r.type = IoType::Copy;
  return r;
}

// Refuses every access to one port (reads and writes); records what it saw.
class RefusePortFilter : public RequestFilter {
 public:
  explicit RefusePortFilter(std::uint64_t port, Escalation esc = Escalation::None) : port_(port), esc_(esc) {}
  Verdict onRequest(const IoRequest& r) noexcept override {
    seen.fetch_add(1);
    if (r.type == IoType::Pio && r.addr <= port_ && port_ < r.addr + r.size) {
      Verdict v{Action::Refuse, Reason::StopGap};
      v.escalation = esc_;
      return v;
    }
    return Verdict{};
  }
  std::atomic<int> seen{0};

 private:
  std::uint64_t port_;
  Escalation esc_;
};

// Writes to `port` must not carry `bad`; data_is_ptr writes there need their data (per rep).
class ValueFilter : public RequestFilter {
 public:
  ValueFilter(std::uint64_t port, std::uint64_t bad) : port_(port), bad_(bad) {}
  Verdict onRequest(const IoRequest& r) noexcept override {
    if (r.addr != port_ || r.dir != Dir::Write) return Verdict{};
    if (r.data_is_ptr) return Verdict{Action::Refuse, Reason::NeedsData};
    if (r.data == bad_) return Verdict{Action::Refuse, Reason::Value};
    return Verdict{};
  }

 private:
  std::uint64_t port_, bad_;
};

// Refuses MMIO writes inside [base, base+len) (buffered VGA writes, BAR windows).
class RefuseMmioFilter : public RequestFilter {
 public:
  RefuseMmioFilter(std::uint64_t base, std::uint64_t len) : base_(base), len_(len) {}
  Verdict onRequest(const IoRequest& r) noexcept override {
    if (r.type == IoType::Copy && r.dir == Dir::Write && r.addr >= base_ && r.addr < base_ + len_)
      return Verdict{Action::Refuse, Reason::Order};
    return Verdict{};
  }

 private:
  std::uint64_t base_, len_;
};

// Drives a ProxyEndpoint from its own thread, as the daemon's event loop does.
class ProxyThread {
 public:
  explicit ProxyThread(xen::ProxyEndpoint& p) : p_(p) {
    t_ = std::thread([this] {
      pollfd pfd{p_.fd(), POLLIN, 0};
      while (run_) {
        if (poll(&pfd, 1, 10) > 0) p_.handleEvents();
      }
    });
  }
  ~ProxyThread() { stop(); }
  void stop() {
    run_ = false;
    if (t_.joinable()) t_.join();
  }

 private:
  xen::ProxyEndpoint& p_;
  std::atomic<bool> run_{true};
  std::thread t_;
};

// Log lines a daemon or interposer under test wrote (from any thread), searchable by substring.
class LogCapture {
 public:
  std::function<void(const std::string&)> sink() {
    return [this](const std::string& l) {
      std::lock_guard lk(mu_);
      lines_.push_back(l);
    };
  }
  std::vector<std::string> lines(const std::string& needle) {
    std::lock_guard lk(mu_);
    std::vector<std::string> out;
    for (auto& l : lines_)
      if (l.find(needle) != std::string::npos) out.push_back(l);
    return out;
  }

 private:
  std::mutex mu_;
  std::vector<std::string> lines_;
};

inline std::string tempPath(const std::string& stem) {
  return (std::filesystem::temp_directory_path() /
          (stem + "-" + std::to_string(getpid()) + "-" + std::to_string(reinterpret_cast<std::uintptr_t>(&stem)))).string();
}

}  // namespace iof::test
