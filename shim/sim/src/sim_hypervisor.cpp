// Rule by rule, with the Xen 4.17 source each one models (xen-4.17.5 as packaged by Debian bookworm):
//  R1 server ids: lowest free id, at most 8 (xen/common/ioreq.c:663-671).
//  R2 selection: ids 7 down to 0, enabled servers only, the whole access inside one range, no
//     default server (ioreq.c:86-94 FOR_EACH_IOREQ_SERVER, ioreq.c:1099-1153 ioreq_server_select).
//  R3 MMIO extent honours df and count (xen/include/xen/ioreq.h:60-75).
//  R4 the CF8 latch: a 4-byte write to 0xcf8 is latched and still forwarded
//     (xen/arch/x86/hvm/ioreq.c:320-330); 0xcfc-0xcff with the enable bit set becomes PCI_CONFIG
//     with addr = SBDF << 32 | reg (hvm/ioreq.c:274-295, hvm/io.c:252-263, asm/pci.h:6-9), routed by
//     the singleton SBDF (ioreq.c:1140-1146).
//  R5 no server: reads all-ones, writes dropped (hvm/emulate.c:74-87, 323-331).
//  R6 bad size: unhandleable (hvm/emulate.c:178-182).
//  R7 ioreq_send: the slot must be NONE and vp_eport must match, then the request is written with
//     state NONE, state set READY last and the port notified (ioreq.c:1267-1305).
//  R8 the ioreq pages are allocated (cleared) by the first map_resource (ioreq.c:810, 467-478,
//     261-300), and vp_eport is written when the server is enabled, only into pages that already
//     exist (ioreq.c:348-358, 538-554): enable before the first mapping and vp_eport stays 0.
//  R9 the vCPU blocks: READY/INPROCESS wait for an event; IORESP_READY -> NONE and data is taken;
//     a state that moves backwards or is unknown crashes the domain (ioreq.c:154-209).
//  R10 only data travels back, and only when ioreq_needs_completion (ioreq.c:202-204,
//     xen/include/xen/ioreq.h:76-81); every other field a device model writes is ignored.
//  R11 the re-issue check: the re-executed access must match the latched request, else the domain
//     is crashed (hvm/emulate.c:184-207).
//  R12 buffered: stdvga single direct writes in 0xa0000-0xbffff (stdvga.c:50-87) go to the selected
//     server's ring: no data_is_ptr, count 1, addr < 1 MiB; 8-byte writes take two slots; a full ring
//     (write - read >= 511 - qw) falls back to the synchronous path (ioreq.c:1155-1246).
//  R13 event channels: binding an interdomain port marks it pending at once, as lost notifications
//     may have been sent to the unbound port (xen/common/event_channel.c evtchn_bind_interdomain);
//     closing a handle returns remote ends to unbound; a delivered port stays masked until unmasked
//     (Linux evtchn driver semantics).
//     The doorbell itself (the receiver's eventfd, or the vCPUs' wait) is rung after the
//     simulator's lock is released: in Xen the notifier's hypercall returns while the receiver
//     wakes, and a receiver woken onto the notifier's CPU must not find our lock still held.
//  R14 INVALIDATE/TIMEOFFSET broadcasts go to every enabled server (ioreq.c:1312-1329).
#include "ioreq_filter/sim/sim_hypervisor.h"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

namespace iof::sim {

using namespace xen;
using Clock = std::chrono::steady_clock;

const char* toString(GuestStatus s) noexcept {
  switch (s) {
    case GuestStatus::Completed: return "completed";
    case GuestStatus::Buffered: return "buffered";
    case GuestStatus::Unclaimed: return "unclaimed";
    case GuestStatus::StillBlocked: return "still-blocked";
    case GuestStatus::Crashed: return "crashed";
    case GuestStatus::DeviceModelError: return "device-model-error";
    case GuestStatus::Unhandleable: return "unhandleable";
  }
  return "?";
}

namespace {
constexpr unsigned kMaxRanges = 256;  // MAX_NR_IO_RANGES (xen/include/xen/ioreq.h)

struct Pages {
  void* base = nullptr;
  Pages() {
    base = mmap(nullptr, 2 * kPageSize, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED) base = nullptr;
  }
  ~Pages() {
    if (base) munmap(base, 2 * kPageSize);
  }
  BufferedIoPage* buffered() const { return static_cast<BufferedIoPage*>(base); }
  SharedIoPage* sync() const { return reinterpret_cast<SharedIoPage*>(static_cast<char*>(base) + kPageSize); }
};
}  // namespace

class SimEventChannel;

// An event-channel handle's eventfd, kept alive by a doorbell rung after the handle was closed.
struct EventFd {
  int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  EventFd() = default;
  EventFd(const EventFd&) = delete;
  EventFd& operator=(const EventFd&) = delete;
  ~EventFd() {
    if (fd >= 0) close(fd);
  }
  void ring() const noexcept {
    const std::uint64_t one = 1;
    (void)!write(fd, &one, sizeof one);
  }
};

// Wake-ups decided under the state lock and delivered once it is released (R13).
struct Doorbells {
  static constexpr unsigned kCapacity = 8;
  std::shared_ptr<const EventFd> fds[kCapacity];
  unsigned count = 0;
};

struct End {
  enum Kind { Unbound, Interdomain } kind = Unbound;
  DomId remote_dom = 0;
  Port remote_port = 0;
  SimEventChannel* handle = nullptr;  // dom0 ends: who receives
  bool masked = false, latched = false;
};

struct Server {
  bool enabled = false;
  BufioreqMode mode = BufioreqMode::Off;
  std::vector<std::pair<std::uint64_t, std::uint64_t>> ranges[3];  // PIO, MMIO, PCI (SBDF)
  std::shared_ptr<Pages> pages;
  bool allocated = false;  // R8: by the first mapping
  std::vector<Port> vcpu_port;
  Port buf_port = 0;
};

struct Vcpu {
  // Rung on every event for the domain's guest-side ports; the vCPU re-checks its slot (R9).
  std::shared_ptr<const EventFd> wake = std::make_shared<const EventFd>();
  bool pending = false;
  int server = -1;
  IoreqSlot latched{};  // Xen's own copy (vio->req)
  std::uint64_t events = 0;
};

struct Domain {
  DomainConfig config;
  std::vector<std::uint8_t> ram;
  std::unique_ptr<Server> servers[kMaxServers];
  std::vector<Vcpu> vcpus;
  std::uint32_t cf8 = 0;
  bool crashed = false;
  std::string crash_reason;
  std::optional<unsigned> shutdown_reason;
  std::uint64_t ignored_changes = 0;
  Port next_port = 1;
};

struct SimHypervisor::State {
  mutable std::mutex mu;
  // Acquisitions that found the lock taken (the waiter may have slept: a wake-up Xen's spinning
  // per-channel locks do not cost); read by benchmarks to see whether the lock shapes a pipeline.
  std::atomic<std::uint64_t> contended{0};
  std::map<DomId, Domain> domains;
  std::map<std::pair<DomId, Port>, End> ends;
  Port next_dom0_port = 1;
  DomId next_domid = 1;
  std::uint64_t restricted = ~std::uint64_t{0};
  Doorbells doorbells;  // filled under mu, rung by StateLock after unlocking

  void ringLater(const std::shared_ptr<const EventFd>& fd) {
    if (doorbells.count == Doorbells::kCapacity) {
      fd->ring();  // never happens on the request path (one event per locked section)
      return;
    }
    doorbells.fds[doorbells.count++] = fd;
  }
  void wakeVcpusLater(Domain& d) {
    for (auto& v : d.vcpus) ringLater(v.wake);
  }

  Domain* dom(DomId d) {
    auto it = domains.find(d);
    return it == domains.end() ? nullptr : &it->second;
  }
  Server* server(DomId d, ServerId id) {
    Domain* x = dom(d);
    return (x && id < kMaxServers) ? x->servers[id].get() : nullptr;
  }
  void deliver(DomId dom, Port port);  // an event arrives at (dom, port)
  void notifyFrom(DomId dom, Port port) {
    auto it = ends.find({dom, port});
    if (it == ends.end() || it->second.kind != End::Interdomain) return;  // unbound: nobody hears
    deliver(it->second.remote_dom, it->second.remote_port);
  }
  void dropHandle(SimEventChannel* h);
};

// The state lock. Unlocking rings the doorbells collected while it was held.
class StateLock {
 public:
  explicit StateLock(SimHypervisor::State& st) : st_(st), lk_(st.mu, std::try_to_lock) {
    if (lk_.owns_lock()) return;
    st.contended.fetch_add(1, std::memory_order_relaxed);
    lk_.lock();
  }
  ~StateLock() { unlock(); }
  StateLock(const StateLock&) = delete;
  StateLock& operator=(const StateLock&) = delete;
  void unlock() noexcept {
    if (!lk_.owns_lock()) return;
    Doorbells bells = std::move(st_.doorbells);
    st_.doorbells = {};
    lk_.unlock();
    for (unsigned i = 0; i < bells.count; ++i) bells.fds[i]->ring();
  }
  void lock() noexcept { lk_.lock(); }

 private:
  SimHypervisor::State& st_;
  std::unique_lock<std::mutex> lk_;
};

class SimEventChannel final : public EventChannel {
 public:
  explicit SimEventChannel(std::shared_ptr<SimHypervisor::State> st)
      : st_(std::move(st)), fd_(std::make_shared<const EventFd>()) {}
  ~SimEventChannel() override {
    StateLock lk(*st_);
    st_->dropHandle(this);
  }
  int fd() const noexcept override { return fd_->fd; }

  Result<Port> bindInterdomain(DomId remote, Port remotePort) override {
    StateLock lk(*st_);
    if (remote != 0 && !st_->dom(remote)) return std::unexpected(callError("xenevtchn_bind_interdomain(domid " + std::to_string(remote) + ")", ESRCH));
    if (st_->restricted != ~std::uint64_t{0} && remote != 0 && remote != st_->restricted)
      return std::unexpected(callError("xenevtchn_bind_interdomain(domid " + std::to_string(remote) + ")", EPERM));
    auto it = st_->ends.find({remote, remotePort});
    if (it == st_->ends.end() || it->second.kind != End::Unbound || it->second.remote_dom != 0)
      return std::unexpected(callError("xenevtchn_bind_interdomain(domid " + std::to_string(remote) + ", port " +
                                           std::to_string(remotePort) + ")", EINVAL));
    const Port local = st_->next_dom0_port++;
    End me;
    me.kind = End::Interdomain;
    me.remote_dom = remote;
    me.remote_port = remotePort;
    me.handle = this;
    st_->ends[{0, local}] = me;
    it->second.kind = End::Interdomain;
    it->second.remote_dom = 0;
    it->second.remote_port = local;
    ports_.push_back(local);
    st_->deliver(0, local);  // R13: conservatively pending after bind
    return local;
  }
  Result<Port> bindUnbound(DomId remote) override {
    StateLock lk(*st_);
    const Port local = st_->next_dom0_port++;
    End me;
    me.remote_dom = remote;
    me.handle = this;
    st_->ends[{0, local}] = me;
    ports_.push_back(local);
    return local;
  }
  Result<void> unbind(Port local) override {
    StateLock lk(*st_);
    auto it = std::find(ports_.begin(), ports_.end(), local);
    if (it == ports_.end()) return std::unexpected(callError("xenevtchn_unbind(port " + std::to_string(local) + ")", EINVAL));
    ports_.erase(it);
    closePort(local);
    return {};
  }
  Result<void> restrictTo(DomId) override { return {}; }

  int notify(Port local) noexcept override {
    StateLock lk(*st_);
    if (std::find(ports_.begin(), ports_.end(), local) == ports_.end()) return -EINVAL;
    st_->notifyFrom(0, local);
    return 0;
  }
  std::int64_t pending() noexcept override {
    StateLock lk(*st_);
    if (queue_.empty()) {
      drainDoorbell();  // a ring that landed after its port was taken
      errno = EAGAIN;
      return -1;
    }
    const Port p = queue_.front();
    queue_.pop_front();
    if (queue_.empty()) drainDoorbell();
    return p;
  }
  int unmask(Port local) noexcept override {
    StateLock lk(*st_);
    auto it = st_->ends.find({0, local});
    if (it == st_->ends.end() || it->second.handle != this) return -EINVAL;
    it->second.masked = false;
    if (it->second.latched) {
      it->second.latched = false;
      enqueue(local, it->second);
    }
    return 0;
  }

  // Called with the state lock held.
  void enqueue(Port local, End& e) {
    e.masked = true;
    queue_.push_back(local);
    ++rings_owed_;
    st_->ringLater(fd_);
  }
  void closePort(Port local) {
    auto it = st_->ends.find({0, local});
    if (it == st_->ends.end()) return;
    if (it->second.kind == End::Interdomain) {
      auto r = st_->ends.find({it->second.remote_dom, it->second.remote_port});
      if (r != st_->ends.end()) {
        r->second.kind = End::Unbound;  // R13: the other end may be bound again
        r->second.remote_dom = 0;
        r->second.remote_port = 0;
        r->second.masked = r->second.latched = false;
      }
    }
    st_->ends.erase(it);
    std::erase(queue_, local);
  }
  void dropAll() {
    for (Port p : ports_) closePort(p);
    ports_.clear();
  }

 private:
  // With the queue empty, the fd must not stay readable (poll would spin). Rings are counted when
  // scheduled; a read subtracts those that landed, so only a ring still in flight (rung after its
  // port was taken) costs a read later, and an idle handle costs no system call.
  void drainDoorbell() noexcept {
    if (rings_owed_ == 0) return;
    std::uint64_t v = 0;
    if (read(fd_->fd, &v, sizeof v) == sizeof v) rings_owed_ -= std::min(v, rings_owed_);
  }

  std::shared_ptr<SimHypervisor::State> st_;
  std::shared_ptr<const EventFd> fd_;
  std::uint64_t rings_owed_ = 0;  // under the state lock
  std::vector<Port> ports_;
  std::deque<Port> queue_;
};

void SimHypervisor::State::deliver(DomId d, Port port) {
  auto it = ends.find({d, port});
  if (it == ends.end()) return;
  if (d != 0) {
    // A guest-side port: wake the vCPUs (they re-check their slot, as wait_on_xen_event_channel does).
    if (Domain* x = dom(d)) {
      for (auto& v : x->vcpus) ++v.events;
      wakeVcpusLater(*x);
    }
    return;
  }
  End& e = it->second;
  if (!e.handle) return;
  if (e.masked) {
    e.latched = true;
    return;
  }
  e.handle->enqueue(port, e);
}

void SimHypervisor::State::dropHandle(SimEventChannel* h) { h->dropAll(); }

SimHypervisor::SimHypervisor() : state_(std::make_shared<State>()) {}
SimHypervisor::~SimHypervisor() = default;

DomId SimHypervisor::createDomain(const DomainConfig& config) {
  StateLock lk(*state_);
  const DomId id = state_->next_domid++;
  Domain& d = state_->domains[id];
  d.config = config;
  d.ram.assign(config.ram_bytes, 0);
  d.vcpus.resize(config.vcpus);
  return id;
}

void SimHypervisor::destroyDomain(DomId domid) {
  for (unsigned id = 0; id < kMaxServers; ++id) (void)destroyServer(domid, ServerId(id));
  StateLock lk(*state_);
  if (Domain* d = state_->dom(domid)) {
    d->crashed = true;
    d->crash_reason = "destroyed";
    state_->wakeVcpusLater(*d);
  }
  state_->domains.erase(domid);
}

namespace {
Error noDomain(const std::string& call, DomId d) { return callError(call + "(domid " + std::to_string(d) + ")", ESRCH); }

bool containsRange(const std::vector<std::pair<std::uint64_t, std::uint64_t>>& rs, std::uint64_t s, std::uint64_t e) {
  for (auto& [a, b] : rs)
    if (a <= s && e <= b) return true;
  return false;
}

std::uint64_t mmioFirst(const IoreqSlot& p) { return p.df ? p.addr - (std::uint64_t(p.count) - 1) * p.size : p.addr; }
std::uint64_t mmioLast(const IoreqSlot& p) {
  return p.df ? p.addr + p.size - 1 : p.addr + std::uint64_t(p.count) * p.size - 1;
}
}  // namespace

// R2/R3/R4: returns the server index or -1; rewrites p into PCI_CONFIG when routed by SBDF.
static int selectServer(Domain& d, IoreqSlot& p) {
  if (p.type != std::uint8_t(IoType::Copy) && p.type != std::uint8_t(IoType::Pio)) return -1;
  int kind;
  std::uint64_t addr;
  const bool cf8Enabled = (d.cf8 & 0x80000000u) != 0;
  if (p.type == std::uint8_t(IoType::Pio) && (p.addr & ~3ull) == 0xcfc && cf8Enabled) {
    const std::uint32_t bdf = (d.cf8 & 0x00ffff00u) >> 8;
    const std::uint32_t reg = (d.cf8 & 0xfcu) | (p.addr & 3);
    kind = 2;
    addr = (std::uint64_t(bdf) << 32) | reg;  // segment 0
  } else {
    kind = p.type == std::uint8_t(IoType::Pio) ? 0 : 1;
    addr = p.addr;
  }
  for (unsigned id = kMaxServers; id-- > 0;) {
    Server* s = d.servers[id].get();
    if (!s || !s->enabled) continue;
    if (kind == 0 && containsRange(s->ranges[0], addr, addr + p.size - 1)) return int(id);
    if (kind == 1 && containsRange(s->ranges[1], mmioFirst(p), mmioLast(p))) return int(id);
    if (kind == 2 && containsRange(s->ranges[2], addr >> 32, addr >> 32)) {
      p.type = std::uint8_t(IoType::PciConfig);
      p.addr = addr;
      return int(id);
    }
  }
  return -1;
}

// R12. Returns true when the write went into the ring.
static bool sendBuffered(Server& s, const IoreqSlot& p) {
  BufferedIoPage* pg = s.pages->buffered();
  if (s.mode == BufioreqMode::Off) return false;
  if (p.addr > 0xfffff || p.data_is_ptr || p.count != 1) return false;
  unsigned sz, qw = 0;
  switch (p.size) {
    case 1: sz = 0; break;
    case 2: sz = 1; break;
    case 4: sz = 2; break;
    case 8: sz = 3, qw = 1; break;
    default: return false;
  }
  const std::uint32_t wp = writePointer(*pg).load(std::memory_order_relaxed);
  const std::uint32_t rp = readPointer(*pg).load(std::memory_order_acquire);
  if (wp - rp >= kBufferedSlots - qw) return false;  // full: the synchronous path takes it
  BufSlot b{};
  b.type = p.type;
  b.dir = p.dir;
  b.size = sz & 3;
  b.addr = std::uint32_t(p.addr) & 0xfffff;
  b.data = std::uint32_t(p.data);
  pg->slot[wp % kBufferedSlots] = b;
  if (qw) {
    b.data = std::uint32_t(p.data >> 32);
    pg->slot[(wp + 1) % kBufferedSlots] = b;
  }
  writePointer(*pg).store(wp + (qw ? 2 : 1), std::memory_order_release);
  if (s.mode == BufioreqMode::Atomic) {
    // Canonicalise both pointers at once (ioreq.c:1230-1240).
    auto full = std::atomic_ref<std::uint64_t>(*reinterpret_cast<std::uint64_t*>(pg));
    for (unsigned i = 0; i < kBufferedSlots; ++i) {
      std::uint64_t old = full.load(std::memory_order_acquire);
      const std::uint32_t r = std::uint32_t(old), w = std::uint32_t(old >> 32);
      if (r < kBufferedSlots) break;
      const std::uint32_t n = r / kBufferedSlots;
      const std::uint64_t nw = (std::uint64_t(w - n * kBufferedSlots) << 32) | (r - n * kBufferedSlots);
      if (full.compare_exchange_strong(old, nw)) break;
    }
  }
  return true;
}

GuestResult SimHypervisor::guestIo(DomId domid, unsigned vcpu, const IoRequest& r, std::chrono::milliseconds limit) {
  StateLock lk(*state_);
  Domain* d = state_->dom(domid);
  if (!d || vcpu >= d->vcpus.size()) return {GuestStatus::Unhandleable};
  if (d->crashed) return {GuestStatus::Crashed};
  Vcpu& v = d->vcpus[vcpu];
  if (v.pending) return {GuestStatus::StillBlocked};
  // R6
  if (r.size > 8 || r.size == 0 || (r.size & (r.size - 1))) return {GuestStatus::Unhandleable};
  IoreqSlot p{};
  p.type = std::uint8_t(r.type);
  p.addr = r.addr;
  p.size = r.size;
  p.count = r.count;
  p.dir = std::uint8_t(r.dir);
  p.df = r.df;
  p.data = r.data;
  p.data_is_ptr = r.data_is_ptr;
  // R4: the latch, then fall through to the servers.
  if (p.type == std::uint8_t(IoType::Pio) && p.addr == 0xcf8 && p.size == 4 && p.dir == std::uint8_t(Dir::Write))
    d->cf8 = std::uint32_t(p.data);
  // R12
  if (d->config.stdvga && p.type == std::uint8_t(IoType::Copy) && p.dir == std::uint8_t(Dir::Write) && !p.data_is_ptr &&
      p.count == 1 && mmioFirst(p) >= 0xa0000 && mmioLast(p) < 0xc0000) {
    IoreqSlot q = p;
    const int id = selectServer(*d, q);
    if (id >= 0 && sendBuffered(*d->servers[id], q)) {
      state_->notifyFrom(domid, d->servers[id]->buf_port);
      return {GuestStatus::Buffered, 0, id};
    }
  }
  // R14: broadcasts go to every enabled server (modelled for INVALIDATE, which waits).
  const int id = (p.type == std::uint8_t(IoType::Invalidate)) ? -2 : selectServer(*d, p);
  if (id == -1) {
    // R5
    const std::uint64_t ones = allOnes(p.size);
    if (p.dir == std::uint8_t(Dir::Read) && p.data_is_ptr) {
      for (std::uint32_t i = 0; i < p.count; ++i) {
        const std::uint64_t gpa = p.df ? p.data - std::uint64_t(i) * p.size : p.data + std::uint64_t(i) * p.size;
        if (gpa + p.size <= d->ram.size()) std::memcpy(&d->ram[gpa], &ones, p.size);
      }
    }
    return {GuestStatus::Unclaimed, p.dir == std::uint8_t(Dir::Read) ? ones : 0, -1};
  }
  int target = id;
  if (id == -2) {
    for (unsigned s = kMaxServers; s-- > 0;)
      if (d->servers[s] && d->servers[s]->enabled) {
        target = int(s);
        break;
      }
    if (target < 0) return {GuestStatus::Unclaimed};
  }
  Server& s = *d->servers[target];
  // R7
  if (!s.allocated) return {GuestStatus::DeviceModelError, 0, target};
  IoreqSlot& slot = s.pages->sync()->vcpu[vcpu];
  if (loadState(slot) != SlotState::None) return {GuestStatus::DeviceModelError, 0, target};
  if (slot.vp_eport != s.vcpu_port[vcpu]) return {GuestStatus::DeviceModelError, 0, target};
  p.vp_eport = s.vcpu_port[vcpu];
  p.state = std::uint8_t(SlotState::None);
  slot = p;
  storeState(slot, SlotState::Ready);
  v.pending = true;
  v.server = target;
  v.latched = p;
  state_->notifyFrom(domid, s.vcpu_port[vcpu]);
  lk.unlock();
  return guestWait(domid, vcpu, limit);
}

GuestResult SimHypervisor::guestWait(DomId domid, unsigned vcpu, std::chrono::milliseconds limit) {
  StateLock lk(*state_);
  Domain* d = state_->dom(domid);
  if (!d || vcpu >= d->vcpus.size()) return {GuestStatus::Unhandleable};
  Vcpu& v = d->vcpus[vcpu];
  if (!v.pending) return {GuestStatus::Completed};
  const auto deadline = Clock::now() + limit;
  Server* s = d->servers[v.server].get();
  if (!s) {
    v.pending = false;
    return {GuestStatus::Crashed};
  }
  auto pages = s->pages;  // the page outlives a concurrent destroy
  const auto wake = v.wake;
  IoreqSlot& slot = pages->sync()->vcpu[vcpu];
  // R9, following wait_for_io: the loop ends when the slot reads NONE; data stays all-ones unless
  // an IORESP_READY was seen.
  SlotState prev = SlotState::None;
  std::uint64_t data = ~std::uint64_t{0};
  auto crash = [&](std::string why) {
    d->crashed = true;
    d->crash_reason = std::move(why);
    v.pending = false;
    state_->wakeVcpusLater(*d);
    return GuestResult{GuestStatus::Crashed, 0, v.server};
  };
  for (;;) {
    if (d->crashed) {
      v.pending = false;
      return {GuestStatus::Crashed, 0, v.server};
    }
    const SlotState st = loadState(slot);
    if (st == SlotState::None) break;
    if (unsigned(st) < unsigned(prev))
      return crash(std::string("Weird HVM ioreq state transition ") + xen::toString(prev) + " -> " + xen::toString(st));
    prev = st;
    if (st == SlotState::RespReady) {
      storeState(slot, SlotState::None);
      data = slot.data;
      break;
    }
    if (st != SlotState::Ready && st != SlotState::InProcess)
      return crash("Weird HVM iorequest state " + std::to_string(unsigned(st)));
    const std::uint64_t seen = v.events;
    // Block until an event for the domain (the vCPU's wake eventfd, rung after the notifier let go
    // of our lock); the periodic re-check only keeps a lost wake-up in the simulator from turning
    // into a hung test.
    const auto now = Clock::now();
    const auto wait = std::min(deadline - now, std::chrono::steady_clock::duration(std::chrono::milliseconds(20)));
    lk.unlock();
    if (wait > Clock::duration::zero()) {
      pollfd pfd{wake->fd, POLLIN, 0};
      const int ms = int(std::chrono::ceil<std::chrono::milliseconds>(wait).count());
      if (poll(&pfd, 1, ms) > 0) {
        std::uint64_t n;
        (void)!read(wake->fd, &n, sizeof n);
      }
    }
    lk.lock();
    if (v.events == seen && !d->crashed && Clock::now() >= deadline && loadState(slot) == st)
      return {GuestStatus::StillBlocked, 0, v.server};
  }
  // R10: every field but data and state is Xen's latched copy; count the ones a DM changed.
  const IoreqSlot seenSlot = slot;
  const IoreqSlot& l = v.latched;
  if (seenSlot.addr != l.addr || seenSlot.count != l.count || seenSlot.size != l.size || seenSlot.type != l.type ||
      seenSlot.dir != l.dir || seenSlot.df != l.df || seenSlot.data_is_ptr != l.data_is_ptr)
    ++d->ignored_changes;
  v.pending = false;
  // R11: the emulator re-runs the instruction and re-issues exactly the latched request here, so
  // the check (emulate.c:192-201) passes by construction; a mismatch would crash the domain.
  return {GuestStatus::Completed, needsCompletion(l.data_is_ptr, l.type, l.dir) ? data : 0, v.server};
}

void SimHypervisor::guestWrite(DomId domid, std::uint64_t gpa, const void* data, std::size_t len) {
  (void)writeGuest(domid, gpa, data, len);
}
void SimHypervisor::guestRead(DomId domid, std::uint64_t gpa, void* data, std::size_t len) {
  (void)readGuest(domid, gpa, data, len);
}

bool SimHypervisor::crashed(DomId domid) const {
  StateLock lk(*state_);
  auto* d = state_->dom(domid);
  return d && d->crashed;
}
std::string SimHypervisor::crashReason(DomId domid) const {
  StateLock lk(*state_);
  auto* d = state_->dom(domid);
  return d ? d->crash_reason : "";
}
std::optional<unsigned> SimHypervisor::shutdownReason(DomId domid) const {
  StateLock lk(*state_);
  auto* d = state_->dom(domid);
  return d ? d->shutdown_reason : std::nullopt;
}
SlotState SimHypervisor::slotState(DomId domid, ServerId id, unsigned vcpu) const {
  StateLock lk(*state_);
  Server* s = state_->server(domid, id);
  return s ? loadState(s->pages->sync()->vcpu[vcpu]) : SlotState::None;
}
std::uint64_t SimHypervisor::lockContentions() const { return state_->contended.load(std::memory_order_relaxed); }

std::uint64_t SimHypervisor::restrictedTo() const {
  StateLock lk(*state_);
  return state_->restricted;
}
std::uint64_t SimHypervisor::ignoredFieldChanges(DomId domid) const {
  StateLock lk(*state_);
  auto* d = state_->dom(domid);
  return d ? d->ignored_changes : 0;
}
std::uint32_t SimHypervisor::cf8(DomId domid) const {
  StateLock lk(*state_);
  auto* d = state_->dom(domid);
  return d ? d->cf8 : 0;
}

#define SIM_CHECK_RESTRICT(call, domid)                                                  \
  if (state_->restricted != ~std::uint64_t{0} && (domid) != state_->restricted)         \
    return std::unexpected(callError(std::string(call) + "(domid " + std::to_string(domid) + ")", EPERM));

Result<ServerId> SimHypervisor::createServer(DomId domid, BufioreqMode mode) {
  StateLock lk(*state_);
  SIM_CHECK_RESTRICT("xendevicemodel_create_ioreq_server", domid);
  Domain* d = state_->dom(domid);
  if (!d) return std::unexpected(noDomain("xendevicemodel_create_ioreq_server", domid));
  // R1
  unsigned id = 0;
  while (id < kMaxServers && d->servers[id]) ++id;
  if (id == kMaxServers) return std::unexpected(callError("xendevicemodel_create_ioreq_server(domid " + std::to_string(domid) + ")", ENOSPC));
  auto s = std::make_unique<Server>();
  s->mode = mode;
  s->pages = std::make_shared<Pages>();
  if (!s->pages->base) return std::unexpected(callError("xendevicemodel_create_ioreq_server: page allocation", ENOMEM));
  for (unsigned v = 0; v < d->vcpus.size(); ++v) {
    const Port p = d->next_port++;
    state_->ends[{domid, p}] = End{};  // unbound, remote dom0
    s->vcpu_port.push_back(p);
  }
  if (mode != BufioreqMode::Off) {
    s->buf_port = d->next_port++;
    state_->ends[{domid, s->buf_port}] = End{};
  }
  d->servers[id] = std::move(s);
  return ServerId(id);
}

Result<ServerInfo> SimHypervisor::serverInfo(DomId domid, ServerId id) {
  StateLock lk(*state_);
  SIM_CHECK_RESTRICT("xendevicemodel_get_ioreq_server_info", domid);
  Server* s = state_->server(domid, id);
  if (!s) return std::unexpected(callError("xendevicemodel_get_ioreq_server_info(domid " + std::to_string(domid) + ", server " + std::to_string(id) + ")", ENOENT));
  return ServerInfo{s->buf_port};
}

Result<bool> SimHypervisor::serverExists(DomId domid, ServerId id) {
  StateLock lk(*state_);
  SIM_CHECK_RESTRICT("xendevicemodel_get_ioreq_server_info", domid);
  if (!state_->dom(domid)) return std::unexpected(callError("xendevicemodel_get_ioreq_server_info(domid " + std::to_string(domid) + ")", ESRCH));
  return state_->server(domid, id) != nullptr;
}

Result<void> SimHypervisor::mapIoRange(DomId domid, ServerId id, RangeKind kind, std::uint64_t start, std::uint64_t end) {
  StateLock lk(*state_);
  SIM_CHECK_RESTRICT("xendevicemodel_map_io_range_to_ioreq_server", domid);
  const std::string call = "xendevicemodel_map_io_range_to_ioreq_server(domid " + std::to_string(domid) + ", server " + std::to_string(id) + ")";
  Server* s = state_->server(domid, id);
  if (!s) return std::unexpected(callError(call, ENOENT));
  if (start > end) return std::unexpected(callError(call, EINVAL));
  auto& rs = s->ranges[kind == RangeKind::Pio ? 0 : 1];
  for (auto& [a, b] : rs)
    if (!(end < a || b < start)) return std::unexpected(callError(call, EEXIST));
  if (rs.size() >= kMaxRanges) return std::unexpected(callError(call, ENOSPC));
  rs.emplace_back(start, end);
  return {};
}

Result<void> SimHypervisor::unmapIoRange(DomId domid, ServerId id, RangeKind kind, std::uint64_t start, std::uint64_t end) {
  StateLock lk(*state_);
  SIM_CHECK_RESTRICT("xendevicemodel_unmap_io_range_from_ioreq_server", domid);
  const std::string call = "xendevicemodel_unmap_io_range_from_ioreq_server(domid " + std::to_string(domid) + ")";
  Server* s = state_->server(domid, id);
  if (!s) return std::unexpected(callError(call, ENOENT));
  auto& rs = s->ranges[kind == RangeKind::Pio ? 0 : 1];
  auto it = std::find(rs.begin(), rs.end(), std::pair{start, end});
  if (it == rs.end()) return std::unexpected(callError(call, ENOENT));
  rs.erase(it);
  return {};
}

Result<void> SimHypervisor::mapPciDev(DomId domid, ServerId id, Sbdf b) {
  StateLock lk(*state_);
  SIM_CHECK_RESTRICT("xendevicemodel_map_pcidev_to_ioreq_server", domid);
  Server* s = state_->server(domid, id);
  if (!s) return std::unexpected(callError("xendevicemodel_map_pcidev_to_ioreq_server(domid " + std::to_string(domid) + ")", ENOENT));
  const std::uint64_t sbdf = b.raw();
  for (auto& [a, e] : s->ranges[2])
    if (a == sbdf) return std::unexpected(callError("xendevicemodel_map_pcidev_to_ioreq_server(" + toString(b) + ")", EEXIST));
  s->ranges[2].emplace_back(sbdf, sbdf);
  return {};
}

Result<void> SimHypervisor::unmapPciDev(DomId domid, ServerId id, Sbdf b) {
  StateLock lk(*state_);
  Server* s = state_->server(domid, id);
  if (!s) return std::unexpected(callError("xendevicemodel_unmap_pcidev_from_ioreq_server", ENOENT));
  std::erase(s->ranges[2], std::pair<std::uint64_t, std::uint64_t>{b.raw(), b.raw()});
  return {};
}

Result<void> SimHypervisor::setServerState(DomId domid, ServerId id, bool enabled) {
  StateLock lk(*state_);
  SIM_CHECK_RESTRICT("xendevicemodel_set_ioreq_server_state", domid);
  Server* s = state_->server(domid, id);
  if (!s) return std::unexpected(callError("xendevicemodel_set_ioreq_server_state(domid " + std::to_string(domid) + ", server " + std::to_string(id) + ")", ENOENT));
  if (enabled && !s->enabled && s->allocated)
    for (unsigned v = 0; v < s->vcpu_port.size(); ++v) s->pages->sync()->vcpu[v].vp_eport = s->vcpu_port[v];  // R8
  s->enabled = enabled;
  return {};
}

Result<void> SimHypervisor::destroyServer(DomId domid, ServerId id) {
  StateLock lk(*state_);
  SIM_CHECK_RESTRICT("xendevicemodel_destroy_ioreq_server", domid);
  Domain* d = state_->dom(domid);
  if (!d || id >= kMaxServers || !d->servers[id])
    return std::unexpected(callError("xendevicemodel_destroy_ioreq_server(domid " + std::to_string(domid) + ", server " + std::to_string(id) + ")", ENOENT));
  Server& s = *d->servers[id];
  auto drop = [&](Port p) {
    auto it = state_->ends.find({domid, p});
    if (it == state_->ends.end()) return;
    if (it->second.kind == End::Interdomain) {
      auto r = state_->ends.find({0, it->second.remote_port});
      if (r != state_->ends.end()) {
        r->second.kind = End::Unbound;
        r->second.remote_dom = domid;
      }
    }
    state_->ends.erase(it);
  };
  for (Port p : s.vcpu_port) drop(p);
  if (s.buf_port) drop(s.buf_port);
  d->servers[id].reset();
  return {};
}

Result<unsigned> SimHypervisor::vcpuCount(DomId domid) {
  StateLock lk(*state_);
  Domain* d = state_->dom(domid);
  if (!d) return std::unexpected(noDomain("xendevicemodel_nr_vcpus", domid));
  return unsigned(d->vcpus.size());
}

int SimHypervisor::shutdown(DomId domid, unsigned reason) noexcept {
  StateLock lk(*state_);
  Domain* d = state_->dom(domid);
  if (!d) return -ESRCH;
  d->shutdown_reason = reason;
  d->crashed = true;
  d->crash_reason = "shutdown requested by a device model, reason " + std::to_string(reason);
  state_->wakeVcpusLater(*d);
  return 0;
}

Result<Mapping> SimHypervisor::mapIoreqPages(DomId domid, ServerId id) {
  StateLock lk(*state_);
  SIM_CHECK_RESTRICT("xenforeignmemory_map_resource", domid);
  Server* s = state_->server(domid, id);
  if (!s) return std::unexpected(callError("xenforeignmemory_map_resource(domid " + std::to_string(domid) + ", server " + std::to_string(id) + ")", ENOENT));
  if (!s->allocated) {  // R8
    std::memset(s->pages->base, 0, 2 * kPageSize);
    s->allocated = true;
  }
  auto keep = s->pages;
  return Mapping(keep->base, 2, [keep](void*, std::size_t) {});
}

int SimHypervisor::readGuest(DomId domid, std::uint64_t gpa, void* out, std::size_t len) noexcept {
  StateLock lk(*state_);
  Domain* d = state_->dom(domid);
  if (!d) return -ESRCH;
  if (gpa > d->ram.size() || len > d->ram.size() - gpa) return -EFAULT;
  std::memcpy(out, d->ram.data() + gpa, len);
  return 0;
}

int SimHypervisor::writeGuest(DomId domid, std::uint64_t gpa, const void* in, std::size_t len) noexcept {
  StateLock lk(*state_);
  Domain* d = state_->dom(domid);
  if (!d) return -ESRCH;
  if (gpa > d->ram.size() || len > d->ram.size() - gpa) return -EFAULT;
  std::memcpy(d->ram.data() + gpa, in, len);
  return 0;
}

Result<std::unique_ptr<EventChannel>> SimHypervisor::openEventChannel() {
  auto ch = std::make_unique<SimEventChannel>(state_);
  if (ch->fd() < 0) return std::unexpected(callError("xenevtchn_open (eventfd)", errno));
  return std::unique_ptr<EventChannel>(std::move(ch));
}

Result<void> SimHypervisor::restrictTo(DomId domid) {
  StateLock lk(*state_);
  state_->restricted = domid;
  return {};
}

}  // namespace iof::sim
