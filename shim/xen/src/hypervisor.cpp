#include "ioreq_filter/xen/hypervisor.h"

#include <algorithm>
#include <cstring>

namespace iof::xen {

const char* toString(SlotState s) noexcept {
  switch (s) {
    case SlotState::None: return "NONE";
    case SlotState::Ready: return "READY";
    case SlotState::InProcess: return "INPROCESS";
    case SlotState::RespReady: return "IORESP_READY";
  }
  return "INVALID";
}

Error callError(const std::string& call, int err) {
  if (err < 0) err = -err;
  const char* name = strerrorname_np(err);
  return Error{call, std::string(name ? name : "errno " + std::to_string(err)) + " (" + std::strerror(err) + ")"};
}

std::string ServerWatch::check(Hypervisor& hv) const {
  for (ServerId id = 0; id < kMaxServers; ++id) {
    if (id == own_ || std::find(allowed_.begin(), allowed_.end(), id) != allowed_.end()) continue;
    auto exists = hv.serverExists(domid_, id);
    if (!exists) return "could not check for other ioreq servers: " + exists.error().message();
    if (*exists)
      return "ioreq server " + std::to_string(id) + " of domid " + std::to_string(domid_) +
             " is not the filter's (server " + std::to_string(own_) +
             "): Xen may route the guest's I/O to it past the filter";
  }
  return {};
}

IoreqPages pagesOf(const Mapping& m) noexcept {
  auto* base = static_cast<unsigned char*>(m.get());
  if (!base) return {};
  return IoreqPages{reinterpret_cast<BufferedIoPage*>(base), reinterpret_cast<SharedIoPage*>(base + kPageSize)};
}

IoRequest toRequest(const IoreqSlot& slot, std::uint16_t vcpu) noexcept {
  IoRequest r;
  r.addr = slot.addr;
  r.data = slot.data;
  r.count = slot.count;
  r.size = slot.size > 0xff ? 0 : std::uint8_t(slot.size);  // 0 is classified as BadSize
  r.dir = slot.dir ? Dir::Read : Dir::Write;
  r.df = slot.df;
  r.data_is_ptr = slot.data_is_ptr;
  r.type = IoType(slot.type);
  r.vcpu = vcpu;
  return r;
}

}  // namespace iof::xen
