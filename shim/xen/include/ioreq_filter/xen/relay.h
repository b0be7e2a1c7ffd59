// The data plane between the real ioreq channel (Xen's pages) and the shadow channel QEMU serves.
// Used by both deployment modes: the daemon's proxy loop and the interposer's inline wrappers.
// Everything here is noexcept and allocation-free; a guest can only cause verdicts and counters.
//
// Life of one synchronous request (slot states only move forward on both sides):
//   real READY --(journal Vetting)--> real INPROCESS --verdict-->
//     refuse:  journal Completing(data) -> real IORESP_READY -> notify real        -> journal Idle
//     forward: journal Forwarded -> shadow fields, shadow READY -> notify shadow
//              ... QEMU: shadow INPROCESS -> data -> shadow IORESP_READY -> notify ...
//              journal Completing(data) -> real data, real IORESP_READY -> shadow NONE -> notify real
//     split (data_is_ptr write the engine must see per rep, Reason::NeedsData): each rep's value is
//              read once from guest memory by us and forwarded as a plain write (no TOCTOU).
// The journal lives in shared memory that outlives the daemon, so a restarted daemon finishes
// every slot it finds in READY/INPROCESS exactly once (recover()).
#pragma once

#include <atomic>
#include <cstdint>

#include "ioreq_filter/core/request_filter.h"
#include "ioreq_filter/xen/hypervisor.h"
#include "ioreq_filter/xen/ioreq_abi.h"

namespace iof::xen {

enum class JournalPhase : std::uint32_t { Idle = 0, Vetting = 1, Forwarded = 2, SplitForwarded = 3, Completing = 4 };

struct JournalEntry {
  std::uint32_t phase;  // JournalPhase, stored with release ordering
  std::uint32_t rep;    // split requests: the rep forwarded (or next to forward)
  std::uint64_t completion_data;
  IoreqSlot request;    // the request as taken from the real slot
};
static_assert(sizeof(JournalEntry) == 48);

inline constexpr std::uint64_t kJournalMagic = 0x6c6e726a66726f69ull;  // "iorfjrnl"
inline constexpr std::uint32_t kJournalVersion = 1;

// Pages 2-3 of the shadow file. Ports are dom0-local event channels between daemon and QEMU.
struct Journal {
  std::uint64_t magic;
  std::uint32_t version;
  std::uint16_t domid;
  std::uint16_t server;       // the real server id (QEMU's)
  std::uint32_t vcpus;
  std::uint32_t generation;   // bumped by every daemon start that adopted this journal
  std::uint32_t shadow_buf_port;  // daemon-side end the interposer hands QEMU for the buffered channel
  std::uint32_t qemu_buf_port;    // QEMU's local end once bound (0 before)
  std::uint32_t qemu_vcpu_port[kMaxVcpus];  // QEMU's local ends of the per-vCPU shadow channels
  JournalEntry entry[kMaxVcpus];
};
static_assert(sizeof(Journal) <= 2 * 4096);

// The shadow file: what QEMU maps (pages 0-1) plus the journal (after them).
inline constexpr std::size_t kShadowPages = 2 + (sizeof(Journal) + kPageSize - 1) / kPageSize;
inline constexpr std::size_t kShadowBytes = kShadowPages * kPageSize;

struct RelayCounters {
  std::atomic<std::uint64_t> requests{0}, forwarded{0}, refused{0}, monitored{0}, malformed{0};
  std::atomic<std::uint64_t> broadcasts{0}, buffered{0}, buffered_refused{0}, split_requests{0}, split_reps{0};
  std::atomic<std::uint64_t> recovered{0}, shadow_busy{0}, guest_memory_errors{0}, crashes_requested{0};
  std::atomic<std::uint64_t> pause_unavailable{0}, spurious{0};
};

// What the caller must signal after a step. Both may be set.
struct Step {
  bool notify_shadow = false;  // a request waits in the vCPU's shadow slot
  bool notify_real = false;    // the vCPU's real slot is complete (IORESP_READY)
};

class Relay {
 public:
  Relay(Hypervisor& hv, DomId domid, IoreqPages real, IoreqPages shadow, Journal& journal, unsigned vcpus,
        RequestFilter* filter) noexcept;

  // Swapped only from the thread that drives the relay, between events: no request is dropped.
  void setFilter(RequestFilter* filter) noexcept { filter_ = filter; }

  Step onRealEvent(unsigned vcpu) noexcept;    // the vCPU's real port fired
  Step onShadowEvent(unsigned vcpu) noexcept;  // QEMU notified the vCPU's shadow port
  // Moves vetted buffered writes from the real ring into the shadow ring, in order; returns how many
  // entries reached the shadow ring. Stops (leaving the rest in the real ring) when the shadow ring
  // is full: QEMU drains it, and the real ring then fills so Xen falls back to synchronous requests.
  unsigned pumpBuffered() noexcept;
  // After a (re)start: finishes whatever the journal and both slots say was in flight.
  Step recover(unsigned vcpu) noexcept;

  const RelayCounters& counters() const noexcept { return counters_; }
  RelayCounters& counters() noexcept { return counters_; }
  unsigned vcpus() const noexcept { return vcpus_; }

 private:
  Step vet(unsigned vcpu) noexcept;
  Step forward(unsigned vcpu, const IoreqSlot& request) noexcept;
  Step complete(unsigned vcpu, std::uint64_t data) noexcept;
  Step refuse(unsigned vcpu, const Verdict& verdict) noexcept;
  Step splitNext(unsigned vcpu) noexcept;
  void escalate(const Verdict& verdict) noexcept;
  void setPhase(unsigned vcpu, JournalPhase phase) noexcept;
  JournalPhase phase(unsigned vcpu) noexcept;

  Hypervisor& hv_;
  DomId domid_;
  IoreqPages real_, shadow_;
  Journal& journal_;
  unsigned vcpus_;
  RequestFilter* filter_;
  RelayCounters counters_;
};

// Makes a fresh journal (all Idle) or checks an existing one for this domain/server.
// Returns false (journal untouched) when an existing journal belongs to another domain.
bool initJournal(Journal& journal, DomId domid, ServerId server, unsigned vcpus, bool fresh) noexcept;

}  // namespace iof::xen
