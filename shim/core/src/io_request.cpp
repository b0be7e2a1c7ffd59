#include "ioreq_filter/core/io_request.h"

#include <cstdio>

#include "ioreq_filter/core/verdict.h"

namespace iof {

const char* toString(Malformation m) noexcept {
  switch (m) {
    case Malformation::None: return "well-formed";
    case Malformation::BadSize: return "size is not 1, 2, 4 or 8";
    case Malformation::ZeroCount: return "count is 0";
    case Malformation::HugeCount: return "count exceeds 65536";
    case Malformation::AddressWrap: return "access wraps the address space";
    case Malformation::PortOutOfRange: return "port above 0xffff";
    case Malformation::ConfigOutOfRange: return "config register above 0xfff, crossing a dword, or repeated";
    case Malformation::UnknownType: return "unknown ioreq type";
    case Malformation::BadDirection: return "direction is neither read nor write";
    case Malformation::CrossesRegion: return "access runs past the end of the device region it starts in";
  }
  return "?";
}

const char* toString(IoType t) noexcept {
  switch (t) {
    case IoType::Pio: return "PIO";
    case IoType::Copy: return "MMIO";
    case IoType::PciConfig: return "PCI_CONFIG";
    case IoType::TimeOffset: return "TIMEOFFSET";
    case IoType::Invalidate: return "INVALIDATE";
  }
  return "UNKNOWN";
}

const char* toString(Dir d) noexcept { return d == Dir::Write ? "write" : d == Dir::Read ? "read" : "bad-dir"; }

std::string toString(Sbdf s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%04x:%02x:%02x.%x", s.segment, s.bus, s.dev, s.fn);
  return buf;
}

std::string describe(const IoRequest& r) {
  char buf[192];
  if (r.type == IoType::PciConfig) {
    std::snprintf(buf, sizeof buf, "PCI_CONFIG %s %s reg 0x%03llx size %u", toString(r.dir),
                  toString(Sbdf::fromRaw(std::uint32_t(r.addr >> 32))).c_str(),
                  static_cast<unsigned long long>(r.addr & 0xffffffffu), unsigned(r.size));
  } else {
    std::snprintf(buf, sizeof buf, "%s %s 0x%llx size %u", toString(r.type), toString(r.dir),
                  static_cast<unsigned long long>(r.addr), unsigned(r.size));
  }
  std::string out = buf;
  if (r.dir == Dir::Write) {
    std::snprintf(buf, sizeof buf, r.data_is_ptr ? " data @gpa 0x%llx" : " data 0x%llx",
                  static_cast<unsigned long long>(r.data));
    out += buf;
  }
  if (r.count != 1) out += " count " + std::to_string(r.count) + (r.df ? " (df)" : "");
  out += " vcpu " + std::to_string(r.vcpu);
  return out;
}

const char* toString(Action a) noexcept { return a == Action::Forward ? "forward" : "refuse"; }

const char* toString(Reason r) noexcept {
  switch (r) {
    case Reason::None: return "accepted";
    case Reason::Unclaimed: return "unclaimed";
    case Reason::Malformed: return "malformed";
    case Reason::Order: return "order";
    case Reason::Value: return "value";
    case Reason::Count: return "count";
    case Reason::StopGap: return "stop-gap rule";
    case Reason::NeedsData: return "needs data";
    case Reason::Uncovered: return "uncovered-region";
  }
  return "?";
}

const char* toString(Escalation e) noexcept {
  switch (e) {
    case Escalation::None: return "refuse";
    case Escalation::Pause: return "refuse-and-pause";
    case Escalation::Crash: return "refuse-and-crash";
  }
  return "?";
}

}  // namespace iof
