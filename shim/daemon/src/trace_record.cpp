#include "ioreq_filter/daemon/trace_record.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <unistd.h>

namespace iof::daemon {

namespace {

char sizeSuffix(std::uint8_t size) {
  switch (size) {
    case 1: return 'b';
    case 2: return 'w';
    case 4: return 'l';
    case 8: return 'q';
    default: return 0;
  }
}

std::string hex(std::uint64_t v) {
  char b[24];
  std::snprintf(b, sizeof b, "0x%llx", static_cast<unsigned long long>(v));
  return b;
}

std::uint64_t mask(std::uint8_t size) { return size >= 8 ? ~std::uint64_t(0) : (std::uint64_t(1) << (8 * size)) - 1; }

std::string comment(const IoRequest& r, const char* why) { return "# not expressible (" + std::string(why) + "): " + describe(r) + "\n"; }

// One access (count 1) as a qtest command with its annotations.
std::string access(bool port, Dir dir, std::uint64_t addr, std::uint8_t size, std::uint64_t data, const TraceRecord& rec) {
  std::string s = port ? (dir == Dir::Write ? "out" : "in") : (dir == Dir::Write ? "write" : "read");
  s += sizeSuffix(size);
  s += " " + hex(addr);
  if (dir == Dir::Write) s += " " + hex(data & mask(size));
  s += " # cpu " + std::to_string(rec.request.vcpu);
  if (dir == Dir::Read && rec.has_ret) s += " ret " + hex(rec.ret & mask(size));
  return s + "\n";
}

}  // namespace

std::string traceLines(const TraceRecord& rec) {
  const IoRequest& r = rec.request;
  if (r.data_is_ptr) return comment(r, "REP transfer from/to guest memory");
  if (classify(r) != Malformation::None) return comment(r, toString(classify(r)));
  switch (r.type) {
    case IoType::Pio:
    case IoType::Copy: {
      const bool port = r.type == IoType::Pio;
      if (!sizeSuffix(r.size) || (port && r.size > 4)) return comment(r, "access size");
      if (r.count > 4096) return comment(r, "REP count");
      std::string s;
      for (std::uint32_t i = 0; i < r.count; ++i) {
        // A REP of values (not from memory) walks MMIO addresses; a port stays put.
        const std::uint64_t step = port ? 0 : std::uint64_t(i) * r.size;
        s += access(port, r.dir, r.df ? r.addr - step : r.addr + step, r.size, r.data, rec);
      }
      return s;
    }
    case IoType::PciConfig: {
      const auto sbdf = Sbdf::fromRaw(std::uint32_t(r.addr >> 32));
      const std::uint32_t reg = std::uint32_t(r.addr);
      if (sbdf.segment != 0 || reg > 0xff) return comment(r, "needs ECAM, not CF8");
      if (r.count != 1 || r.size > 4 || !sizeSuffix(r.size)) return comment(r, "access size");
      const std::uint32_t cf8 = 0x80000000u | (std::uint32_t(sbdf.bus) << 16) | (std::uint32_t(sbdf.dev) << 11) |
                                (std::uint32_t(sbdf.fn) << 8) | (reg & 0xfc);
      TraceRecord latch;
      latch.request.vcpu = r.vcpu;
      return access(true, Dir::Write, 0xcf8, 4, cf8, latch) + access(true, r.dir, 0xcfc + (reg & 3), r.size, r.data, rec);
    }
    default:
      return comment(r, "broadcast");
  }
}

Result<TraceFile> TraceFile::open(const std::string& path, const std::string& source) {
  TraceFile f;
  f.path_ = path;
  f.out_.open(path + ".tmp", std::ios::out | std::ios::trunc);
  if (!f.out_) return fail(path + ".tmp", std::string("cannot create the trace file: ") + std::strerror(errno));
  f.out_ << "# source: " << source << "\n"
         << "# description: every request ioreq-filterd was asked about, at the guest's own access sizes, in the order seen\n";
  return f;
}

void TraceFile::drain(TraceRing& ring) {
  if (closed_) return;
  ring.drain([this](const TraceRecord& r) {
    const std::string s = traceLines(r);
    (s[0] == '#' ? comments_ : requests_) += 1;
    out_ << s;
  });
}

Result<void> TraceFile::close(TraceRing& ring) {
  if (closed_) return {};
  drain(ring);
  out_ << "# recorded: " << requests_ << " requests, " << comments_ << " not expressible, " << ring.lost()
       << " lost (ring full)\n";
  out_.flush();
  const bool ok = bool(out_);
  out_.close();
  closed_ = true;
  if (!ok) return fail(path_ + ".tmp", "write failed");
  if (std::rename((path_ + ".tmp").c_str(), path_.c_str()) != 0)
    return fail(path_, std::string("cannot rename the finished trace into place: ") + std::strerror(errno));
  return {};
}

TraceFile::~TraceFile() {
  if (!closed_ && out_.is_open()) out_.flush();
}

}  // namespace iof::daemon
