// The shared-page ABI between Xen and a device model, restated without Xen headers so the simulator
// and the relay compile anywhere. libxen_hypervisor.cpp static_asserts that every offset matches
// Xen 4.17's xen/include/public/hvm/ioreq.h.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "ioreq_filter/core/io_request.h"

namespace iof::xen {

using DomId = std::uint16_t;
using ServerId = std::uint16_t;
using Port = std::uint32_t;

inline constexpr std::size_t kPageSize = 4096;
inline constexpr unsigned kMaxServers = 8;        // MAX_NR_IOREQ_SERVERS
inline constexpr unsigned kBufferedSlots = 511;   // IOREQ_BUFFER_SLOT_NUM
inline constexpr unsigned kMaxVcpus = kPageSize / 32;

// STATE_IOREQ_* / STATE_IORESP_*: a slot only ever moves forward (NONE -> READY -> INPROCESS ->
// IORESP_READY -> NONE); Xen crashes the domain when it sees a state go backwards (ioreq.c:168).
enum class SlotState : std::uint8_t { None = 0, Ready = 1, InProcess = 2, RespReady = 3 };
const char* toString(SlotState s) noexcept;

// struct ioreq (32 bytes).
struct IoreqSlot {
  std::uint64_t addr;
  std::uint64_t data;
  std::uint32_t count;
  std::uint32_t size;
  std::uint32_t vp_eport;
  std::uint16_t pad0;
  std::uint8_t state : 4;
  std::uint8_t data_is_ptr : 1;
  std::uint8_t dir : 1;
  std::uint8_t df : 1;
  std::uint8_t pad1 : 1;
  std::uint8_t type;
};
static_assert(sizeof(IoreqSlot) == 32);
static_assert(std::is_trivially_copyable_v<IoreqSlot>);

// Byte 30 holds state and the flag bits; the state nibble is published with release/acquire
// ordering, as Xen and QEMU do with smp_wmb/smp_rmb around it.
inline constexpr std::size_t kSlotFlagsOffset = 30;

inline std::atomic_ref<std::uint8_t> flagsByte(IoreqSlot& slot) noexcept {
  return std::atomic_ref<std::uint8_t>(reinterpret_cast<std::uint8_t*>(&slot)[kSlotFlagsOffset]);
}
inline SlotState loadState(IoreqSlot& slot) noexcept {
  return SlotState(flagsByte(slot).load(std::memory_order_acquire) & 0xf);
}
inline void storeState(IoreqSlot& slot, SlotState s) noexcept {
  auto ref = flagsByte(slot);
  std::uint8_t old = ref.load(std::memory_order_relaxed);
  while (!ref.compare_exchange_weak(old, std::uint8_t((old & 0xf0) | std::uint8_t(s)), std::memory_order_release,
                                    std::memory_order_relaxed)) {
  }
}

struct SharedIoPage {
  IoreqSlot vcpu[kMaxVcpus];
};
static_assert(sizeof(SharedIoPage) == kPageSize);

// struct buf_ioreq (8 bytes): size is log2 of the access size; an 8-byte write takes two slots.
struct BufSlot {
  std::uint8_t type;
  std::uint8_t pad : 1;
  std::uint8_t dir : 1;
  std::uint8_t size : 2;
  std::uint32_t addr : 20;
  std::uint32_t data;
};
static_assert(sizeof(BufSlot) == 8);

struct BufferedIoPage {
  std::uint32_t read_pointer;
  std::uint32_t write_pointer;
  BufSlot slot[kBufferedSlots];
};
static_assert(sizeof(BufferedIoPage) <= kPageSize);

inline std::atomic_ref<std::uint32_t> readPointer(BufferedIoPage& p) noexcept {
  return std::atomic_ref<std::uint32_t>(p.read_pointer);
}
inline std::atomic_ref<std::uint32_t> writePointer(BufferedIoPage& p) noexcept {
  return std::atomic_ref<std::uint32_t>(p.write_pointer);
}

// What map_resource(XENMEM_resource_ioreq_server, id, frame 0, 2 frames) yields: frame 0 is the
// buffered page, frame 1 the synchronous page (xen/include/public/memory.h:665-666).
struct IoreqPages {
  BufferedIoPage* buffered = nullptr;
  SharedIoPage* sync = nullptr;
};

// ioreq_t <-> the core's request model. Raw fields are kept as they are so that malformed values
// reach the engine's classify() instead of being silently normalised here.
IoRequest toRequest(const IoreqSlot& slot, std::uint16_t vcpu) noexcept;

// ioreq_needs_completion (xen/include/xen/ioreq.h:76): only these requests have their data copied
// back into the vCPU's latched request.
constexpr bool needsCompletion(bool data_is_ptr, std::uint8_t type, std::uint8_t dir) noexcept {
  return !data_is_ptr && (type != std::uint8_t(IoType::Pio) || dir != std::uint8_t(Dir::Write));
}

// All-ones of the access size: what a refused (or unclaimed) read returns (emulate.c:78).
constexpr std::uint64_t allOnes(std::uint32_t size) noexcept {
  return size >= 8 ? ~std::uint64_t{0} : ((std::uint64_t{1} << (size * 8)) - 1);
}

}  // namespace iof::xen
