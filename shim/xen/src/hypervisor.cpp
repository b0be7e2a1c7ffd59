#include "ioreq_filter/xen/hypervisor.h"

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
