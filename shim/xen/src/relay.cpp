#include "ioreq_filter/xen/relay.h"

#include <algorithm>
#include <cstring>

namespace iof::xen {
namespace {

void bump(std::atomic<std::uint64_t>& c) noexcept { c.fetch_add(1, std::memory_order_relaxed); }

// Copies every field Xen reads from a request except state, which is published last.
void copyRequestFields(IoreqSlot& dst, const IoreqSlot& src) noexcept {
  dst.addr = src.addr;
  dst.data = src.data;
  dst.count = src.count;
  dst.size = src.size;
  dst.data_is_ptr = src.data_is_ptr;
  dst.dir = src.dir;
  dst.df = src.df;
  dst.type = src.type;
}

bool isBroadcast(std::uint8_t type) noexcept {
  return type == std::uint8_t(IoType::Invalidate) || type == std::uint8_t(IoType::TimeOffset);
}

}  // namespace

bool initJournal(Journal& j, DomId domid, ServerId server, unsigned vcpus, bool fresh) noexcept {
  if (!fresh && j.magic == kJournalMagic && j.version == kJournalVersion) {
    if (j.domid != domid || j.server != server || j.vcpus != vcpus) return false;
    ++j.generation;
    return true;
  }
  std::memset(static_cast<void*>(&j), 0, sizeof j);
  j.version = kJournalVersion;
  j.domid = domid;
  j.server = server;
  j.vcpus = vcpus;
  j.generation = 1;
  std::atomic_ref<std::uint64_t>(j.magic).store(kJournalMagic, std::memory_order_release);
  return true;
}

Relay::Relay(Hypervisor& hv, DomId domid, IoreqPages real, IoreqPages shadow, Journal& journal, unsigned vcpus,
             RequestFilter* filter) noexcept
    : hv_(hv), domid_(domid), real_(real), shadow_(shadow), journal_(journal),
      vcpus_(std::min(vcpus, kMaxVcpus)), filter_(filter) {}

void Relay::setPhase(unsigned v, JournalPhase p) noexcept {
  std::atomic_ref<std::uint32_t>(journal_.entry[v].phase).store(std::uint32_t(p), std::memory_order_release);
}
JournalPhase Relay::phase(unsigned v) noexcept {
  return JournalPhase(std::atomic_ref<std::uint32_t>(journal_.entry[v].phase).load(std::memory_order_acquire));
}

Step Relay::onRealEvent(unsigned v) noexcept {
  if (v >= vcpus_) return {};
  IoreqSlot& slot = real_.sync->vcpu[v];
  if (loadState(slot) != SlotState::Ready) {
    bump(counters_.spurious);
    return {};
  }
  // Journal first: a daemon killed right after taking the slot finds the request to re-vet.
  auto& e = journal_.entry[v];
  e.request = slot;
  e.rep = 0;
  setPhase(v, JournalPhase::Vetting);
  // READY -> INPROCESS, as QEMU's cpu_get_ioreq_from_shared_memory does. CAS: never backwards.
  auto ref = flagsByte(slot);
  std::uint8_t old = ref.load(std::memory_order_acquire);
  if ((old & 0xf) != std::uint8_t(SlotState::Ready) ||
      !ref.compare_exchange_strong(old, std::uint8_t((old & 0xf0) | std::uint8_t(SlotState::InProcess)),
                                   std::memory_order_acq_rel)) {
    setPhase(v, JournalPhase::Idle);
    return {};
  }
  e.request = slot;
  bump(counters_.requests);
  return vet(v);
}

Step Relay::vet(unsigned v) noexcept {
  const IoreqSlot request = journal_.entry[v].request;
  // Buffered writes issued before this request reach QEMU first (QEMU drains its buffered ring
  // ahead of the synchronous slot in cpu_handle_ioreq).
  pumpBuffered();
  if (isBroadcast(request.type)) {
    bump(counters_.broadcasts);
    return forward(v, request);
  }
  const IoRequest r = toRequest(request, std::uint16_t(v));
  const Verdict verdict = filter_ ? filter_->onRequest(r) : Verdict{};
  if (verdict.malformation != Malformation::None) bump(counters_.malformed);
  if (verdict.monitored) bump(counters_.monitored);
  if (verdict.forwarded()) return forward(v, request);
  if (verdict.reason == Reason::NeedsData && request.data_is_ptr && request.dir == std::uint8_t(Dir::Write) &&
      verdict.malformation == Malformation::None) {
    bump(counters_.split_requests);
    journal_.entry[v].rep = 0;
    return splitNext(v);
  }
  return refuse(v, verdict);
}

Step Relay::forward(unsigned v, const IoreqSlot& request) noexcept {
  IoreqSlot& sh = shadow_.sync->vcpu[v];
  if (loadState(sh) != SlotState::None) {
    // QEMU still holds an earlier request in this slot: it cannot have one (the vCPU was blocked),
    // so the shadow side is broken; completing as refused keeps the guest from hanging.
    bump(counters_.shadow_busy);
    return refuse(v, Verdict{Action::Refuse});
  }
  setPhase(v, JournalPhase::Forwarded);
  copyRequestFields(sh, request);
  storeState(sh, SlotState::Ready);
  bump(counters_.forwarded);
  return Step{true, false};
}

Step Relay::complete(unsigned v, std::uint64_t data) noexcept {
  auto& e = journal_.entry[v];
  e.completion_data = data;
  setPhase(v, JournalPhase::Completing);
  IoreqSlot& slot = real_.sync->vcpu[v];
  // Only data and state may change (Xen copies back only data: ioreq.c:181,203).
  if (needsCompletion(e.request.data_is_ptr, e.request.type, e.request.dir)) slot.data = data;
  storeState(slot, SlotState::RespReady);
  if (loadState(shadow_.sync->vcpu[v]) == SlotState::RespReady) storeState(shadow_.sync->vcpu[v], SlotState::None);
  setPhase(v, JournalPhase::Idle);
  return Step{false, true};
}

Step Relay::refuse(unsigned v, const Verdict& verdict) noexcept {
  bump(counters_.refused);
  const IoreqSlot& req = journal_.entry[v].request;
  std::uint64_t data = req.data;
  if (req.dir == std::uint8_t(Dir::Read)) {
    if (!req.data_is_ptr) {
      data = allOnes(req.size);
    } else if (req.size <= 8 && req.count <= kMaxRepCount) {
      // A refused REP INS reads all-ones into every element, like an unclaimed port.
      unsigned char chunk[256];
      std::memset(chunk, 0xff, sizeof chunk);
      std::uint64_t total = std::uint64_t(req.count) * req.size;
      std::uint64_t gpa = req.df ? req.data - total + req.size : req.data;
      while (total > 0) {
        const std::size_t n = std::size_t(std::min<std::uint64_t>(total, sizeof chunk));
        if (hv_.writeGuest(domid_, gpa, chunk, n) != 0) {
          bump(counters_.guest_memory_errors);
          break;
        }
        gpa += n, total -= n;
      }
    }
  }
  escalate(verdict);
  return complete(v, data);
}

void Relay::escalate(const Verdict& verdict) noexcept {
  switch (verdict.escalation) {
    case Escalation::None: break;
    case Escalation::Crash:
      bump(counters_.crashes_requested);
      (void)hv_.shutdown(domid_, kShutdownCrash);
      break;
    case Escalation::Pause:
      // No pause DMOP exists; a restricted daemon can only refuse (or crash). Counted so the
      // control plane can ask an unrestricted helper.
      bump(counters_.pause_unavailable);
      break;
  }
}

Step Relay::splitNext(unsigned v) noexcept {
  auto& e = journal_.entry[v];
  const IoreqSlot& req = e.request;
  if (e.rep >= req.count) return complete(v, req.data);
  const std::uint64_t step = std::uint64_t(req.size) * e.rep;
  const std::uint64_t gpa = req.df ? req.data - step : req.data + step;
  std::uint64_t value = 0;
  if (req.size == 0 || req.size > 8 || hv_.readGuest(domid_, gpa, &value, req.size) != 0) {
    bump(counters_.guest_memory_errors);
    return refuse(v, Verdict{Action::Refuse, Reason::NeedsData});
  }
  IoreqSlot one = req;
  one.data = value;
  one.count = 1;
  one.data_is_ptr = 0;
  if (req.type == std::uint8_t(IoType::Copy)) one.addr = req.df ? req.addr - step : req.addr + step;
  const Verdict verdict = filter_ ? filter_->onRequest(toRequest(one, std::uint16_t(v))) : Verdict{};
  if (!verdict.forwarded()) return refuse(v, verdict);  // the reps already done stay done
  IoreqSlot& sh = shadow_.sync->vcpu[v];
  if (loadState(sh) != SlotState::None) {
    bump(counters_.shadow_busy);
    return refuse(v, Verdict{Action::Refuse});
  }
  setPhase(v, JournalPhase::SplitForwarded);
  copyRequestFields(sh, one);
  storeState(sh, SlotState::Ready);
  bump(counters_.split_reps);
  return Step{true, false};
}

Step Relay::onShadowEvent(unsigned v) noexcept {
  if (v >= vcpus_) return {};
  IoreqSlot& sh = shadow_.sync->vcpu[v];
  if (loadState(sh) != SlotState::RespReady) return {};
  auto& e = journal_.entry[v];
  switch (phase(v)) {
    case JournalPhase::Forwarded: {
      const std::uint64_t data = sh.data;
      if (filter_ && e.request.dir == std::uint8_t(Dir::Read) && !e.request.data_is_ptr && !isBroadcast(e.request.type))
        filter_->onResponse(toRequest(e.request, std::uint16_t(v)), data);
      return complete(v, data);
    }
    case JournalPhase::SplitForwarded:
      storeState(sh, SlotState::None);
      ++e.rep;
      return splitNext(v);
    default:
      // QEMU answered something we did not forward (a stray write to the shadow page): drop it.
      storeState(sh, SlotState::None);
      bump(counters_.spurious);
      return {};
  }
}

unsigned Relay::pumpBuffered() noexcept {
  BufferedIoPage* real = real_.buffered;
  BufferedIoPage* sh = shadow_.buffered;
  if (!real || !sh) return 0;
  unsigned moved = 0;
  for (;;) {
    // Re-read both pointers each round: in ATOMIC mode Xen rebases them together (ioreq.c:1230).
    const std::uint32_t rp = readPointer(*real).load(std::memory_order_acquire);
    const std::uint32_t wp = writePointer(*real).load(std::memory_order_acquire);
    if (rp == wp) break;
    const BufSlot first = real->slot[rp % kBufferedSlots];
    const bool qw = first.size == 3;
    if (qw && rp + 1 == wp) break;  // second half not yet published
    IoRequest r;
    r.type = IoType(first.type);
    r.addr = first.addr;
    r.size = std::uint8_t(1u << first.size);
    r.data = first.data;
    if (qw) r.data |= std::uint64_t(real->slot[(rp + 1) % kBufferedSlots].data) << 32;
    r.dir = Dir::Write;
    r.count = 1;
    bool pass = true;
    if (!isBroadcast(first.type)) {
      const Verdict verdict = filter_ ? filter_->onRequest(r) : Verdict{};
      pass = verdict.forwarded();
      if (!pass) {
        bump(counters_.buffered_refused);
        escalate(verdict);
      }
    }
    if (pass) {
      const std::uint32_t srp = readPointer(*sh).load(std::memory_order_acquire);
      const std::uint32_t swp = writePointer(*sh).load(std::memory_order_relaxed);
      if (swp - srp >= kBufferedSlots - (qw ? 1u : 0u)) break;  // shadow full: leave it in the real ring
      sh->slot[swp % kBufferedSlots] = first;
      if (qw) sh->slot[(swp + 1) % kBufferedSlots] = real->slot[(rp + 1) % kBufferedSlots];
      writePointer(*sh).store(swp + (qw ? 2 : 1), std::memory_order_release);
      bump(counters_.buffered);
      moved += qw ? 2 : 1;
    }
    readPointer(*real).fetch_add(qw ? 2 : 1, std::memory_order_acq_rel);
  }
  return moved;
}

Step Relay::recover(unsigned v) noexcept {
  if (v >= vcpus_) return {};
  IoreqSlot& slot = real_.sync->vcpu[v];
  const SlotState real = loadState(slot);
  const SlotState sh = loadState(shadow_.sync->vcpu[v]);
  const JournalPhase ph = phase(v);
  auto& e = journal_.entry[v];
  switch (real) {
    case SlotState::None:
      if (ph != JournalPhase::Idle) setPhase(v, JournalPhase::Idle);
      return {};
    case SlotState::Ready:
      if (ph != JournalPhase::Idle) bump(counters_.recovered);
      setPhase(v, JournalPhase::Idle);
      return onRealEvent(v);
    case SlotState::RespReady:
      // Completed before the daemon died; the notification may have been lost: send it again.
      if (sh == SlotState::RespReady && (ph == JournalPhase::Completing || ph == JournalPhase::Forwarded))
        storeState(shadow_.sync->vcpu[v], SlotState::None);
      if (ph != JournalPhase::Idle) bump(counters_.recovered);
      setPhase(v, JournalPhase::Idle);
      return Step{false, true};
    case SlotState::InProcess:
      break;
  }
  bump(counters_.recovered);
  switch (ph) {
    case JournalPhase::Idle:
      e.request = slot;  // taken by a previous incarnation before it journaled anything
      [[fallthrough]];
    case JournalPhase::Vetting:
      return vet(v);  // the device has not seen it
    case JournalPhase::Forwarded:
    case JournalPhase::SplitForwarded:
      if (sh == SlotState::RespReady) return onShadowEvent(v);
      if (sh == SlotState::None) {
        // Killed between journaling and publishing: publish now (QEMU never saw it).
        if (ph == JournalPhase::Forwarded) {
          setPhase(v, JournalPhase::Vetting);
          return forward(v, e.request);
        }
        return splitNext(v);
      }
      return Step{true, false};  // QEMU holds it; re-notify in case the signal was lost
    case JournalPhase::Completing:
      return complete(v, e.completion_data);
  }
  return {};
}

}  // namespace iof::xen
