// Hypervisor over Debian's libxen 4.17: libxendevicemodel, libxenforeignmemory, libxenevtchn,
// libxentoolcore. Every handle is owned by a unique_ptr with its close function.
#include "ioreq_filter/xen/libxen_hypervisor.h"

#include <cerrno>
#include <cstddef>
#include <cstring>
#include <fcntl.h>
#include <sys/mman.h>

#include "ioreq_filter/xen/libxen_calls.h"

extern "C" {
#include <xen/hvm/ioreq.h>
#include <xen/memory.h>
}

namespace iof::xen {

// The restated ABI must match Xen's own header byte for byte.
static_assert(sizeof(IoreqSlot) == sizeof(ioreq_t));
static_assert(offsetof(IoreqSlot, addr) == offsetof(ioreq_t, addr));
static_assert(offsetof(IoreqSlot, data) == offsetof(ioreq_t, data));
static_assert(offsetof(IoreqSlot, count) == offsetof(ioreq_t, count));
static_assert(offsetof(IoreqSlot, size) == offsetof(ioreq_t, size));
static_assert(offsetof(IoreqSlot, vp_eport) == offsetof(ioreq_t, vp_eport));
static_assert(offsetof(IoreqSlot, type) == offsetof(ioreq_t, type));
static_assert(sizeof(BufSlot) == sizeof(buf_ioreq_t));
static_assert(sizeof(BufferedIoPage) == sizeof(buffered_iopage_t));
static_assert(offsetof(BufferedIoPage, write_pointer) == offsetof(buffered_iopage_t, write_pointer));
static_assert(kBufferedSlots == IOREQ_BUFFER_SLOT_NUM);
static_assert(unsigned(SlotState::RespReady) == STATE_IORESP_READY);
static_assert(XENMEM_resource_ioreq_server_frame_bufioreq == 0 && XENMEM_resource_ioreq_server_frame_ioreq(0) == 1);

namespace {

struct DmodClose {
  const LibxenCalls* c_ = nullptr;
  void operator()(xendevicemodel_handle* h) const noexcept { c_->xendevicemodel_close(h); }
};
struct FmemClose {
  const LibxenCalls* c_ = nullptr;
  void operator()(xenforeignmemory_handle* h) const noexcept { c_->xenforeignmemory_close(h); }
};
struct EvtchnClose {
  const LibxenCalls* c_ = nullptr;
  void operator()(xenevtchn_handle* h) const noexcept { c_->xenevtchn_close(h); }
};

std::string dom(DomId d) { return "domid " + std::to_string(d); }
std::string domId(DomId d, ServerId id) { return dom(d) + ", server " + std::to_string(id); }

class LibxenEventChannel final : public EventChannel {
 public:
  LibxenEventChannel(const LibxenCalls* c, xenevtchn_handle* h) : c_(c), h_(h, EvtchnClose{c}) {
    // libxenevtchn's fd blocks in read(): xenevtchn_pending() would then wait for the guest's next
    // event. Non-blocking, pending() returns -1/EAGAIN when nothing is pending, as the seam promises.
    const int fd = c_->xenevtchn_fd(h);
    const int flags = fcntl(fd, F_GETFL);
    if (flags >= 0) (void)fcntl(fd, F_SETFL, flags | O_NONBLOCK);
  }
  int fd() const noexcept override { return c_->xenevtchn_fd(h_.get()); }
  Result<Port> bindInterdomain(DomId remote, Port remotePort) override {
    const auto p = c_->xenevtchn_bind_interdomain(h_.get(), remote, remotePort);
    if (p < 0) return std::unexpected(callError("xenevtchn_bind_interdomain(" + dom(remote) + ", port " + std::to_string(remotePort) + ")", errno));
    return Port(p);
  }
  Result<Port> bindUnbound(DomId remote) override {
    const auto p = c_->xenevtchn_bind_unbound_port(h_.get(), remote);
    if (p < 0) return std::unexpected(callError("xenevtchn_bind_unbound_port(" + dom(remote) + ")", errno));
    return Port(p);
  }
  Result<void> unbind(Port local) override {
    if (c_->xenevtchn_unbind(h_.get(), local) != 0)
      return std::unexpected(callError("xenevtchn_unbind(port " + std::to_string(local) + ")", errno));
    return {};
  }
  Result<void> restrictTo(DomId domid) override {
    if (c_->xenevtchn_restrict(h_.get(), domid) != 0) return std::unexpected(callError("xenevtchn_restrict(" + dom(domid) + ")", errno));
    return {};
  }
  int notify(Port local) noexcept override { return c_->xenevtchn_notify(h_.get(), local) == 0 ? 0 : -errno; }
  std::int64_t pending() noexcept override { return c_->xenevtchn_pending(h_.get()); }
  int unmask(Port local) noexcept override { return c_->xenevtchn_unmask(h_.get(), local) == 0 ? 0 : -errno; }

 private:
  const LibxenCalls* c_;
  std::unique_ptr<xenevtchn_handle, EvtchnClose> h_;
};

class LibxenHypervisor final : public Hypervisor {
 public:
  LibxenHypervisor(const LibxenCalls* c, xendevicemodel_handle* d, xenforeignmemory_handle* f)
      : c_(c), dmod_(d, DmodClose{c}), fmem_(f, FmemClose{c}) {}
  std::string name() const override { return "libxen 4.17"; }

  Result<ServerId> createServer(DomId domid, BufioreqMode mode) override {
    ioservid_t id = 0;
    if (c_->xendevicemodel_create_ioreq_server(dmod_.get(), domid, int(mode), &id) != 0)
      return std::unexpected(callError("xendevicemodel_create_ioreq_server(" + dom(domid) + ")", errno));
    return ServerId(id);
  }
  Result<ServerInfo> serverInfo(DomId domid, ServerId id) override {
    evtchn_port_t port = 0;
    // NULL gfn pointers ask for XEN_DMOP_no_gfns: the pages are reached through map_resource only.
    if (c_->xendevicemodel_get_ioreq_server_info(dmod_.get(), domid, id, nullptr, nullptr, &port) != 0)
      return std::unexpected(callError("xendevicemodel_get_ioreq_server_info(" + domId(domid, id) + ")", errno));
    return ServerInfo{Port(port)};
  }
  Result<bool> serverExists(DomId domid, ServerId id) override {
    evtchn_port_t port = 0;
    if (c_->xendevicemodel_get_ioreq_server_info(dmod_.get(), domid, id, nullptr, nullptr, &port) == 0) return true;
    if (errno == ENOENT) return false;
    if (errno == EPERM) return true;  // another domain's server (a stub domain's device model, say)
    return std::unexpected(callError("xendevicemodel_get_ioreq_server_info(" + domId(domid, id) + ")", errno));
  }
  Result<void> mapIoRange(DomId domid, ServerId id, RangeKind kind, std::uint64_t s, std::uint64_t e) override {
    if (c_->xendevicemodel_map_io_range_to_ioreq_server(dmod_.get(), domid, id, int(kind), s, e) != 0)
      return std::unexpected(callError("xendevicemodel_map_io_range_to_ioreq_server(" + domId(domid, id) + ")", errno));
    return {};
  }
  Result<void> unmapIoRange(DomId domid, ServerId id, RangeKind kind, std::uint64_t s, std::uint64_t e) override {
    if (c_->xendevicemodel_unmap_io_range_from_ioreq_server(dmod_.get(), domid, id, int(kind), s, e) != 0)
      return std::unexpected(callError("xendevicemodel_unmap_io_range_from_ioreq_server(" + domId(domid, id) + ")", errno));
    return {};
  }
  Result<void> mapPciDev(DomId domid, ServerId id, Sbdf b) override {
    if (c_->xendevicemodel_map_pcidev_to_ioreq_server(dmod_.get(), domid, id, b.segment, b.bus, b.dev, b.fn) != 0)
      return std::unexpected(callError("xendevicemodel_map_pcidev_to_ioreq_server(" + domId(domid, id) + ", " + toString(b) + ")", errno));
    return {};
  }
  Result<void> unmapPciDev(DomId domid, ServerId id, Sbdf b) override {
    if (c_->xendevicemodel_unmap_pcidev_from_ioreq_server(dmod_.get(), domid, id, b.segment, b.bus, b.dev, b.fn) != 0)
      return std::unexpected(callError("xendevicemodel_unmap_pcidev_from_ioreq_server(" + domId(domid, id) + ")", errno));
    return {};
  }
  Result<void> setServerState(DomId domid, ServerId id, bool enabled) override {
    if (c_->xendevicemodel_set_ioreq_server_state(dmod_.get(), domid, id, enabled ? 1 : 0) != 0)
      return std::unexpected(callError("xendevicemodel_set_ioreq_server_state(" + domId(domid, id) + ")", errno));
    return {};
  }
  Result<void> destroyServer(DomId domid, ServerId id) override {
    if (c_->xendevicemodel_destroy_ioreq_server(dmod_.get(), domid, id) != 0)
      return std::unexpected(callError("xendevicemodel_destroy_ioreq_server(" + domId(domid, id) + ")", errno));
    return {};
  }
  Result<unsigned> vcpuCount(DomId domid) override {
    unsigned n = 0;
    if (c_->xendevicemodel_nr_vcpus(dmod_.get(), domid, &n) != 0)
      return std::unexpected(callError("xendevicemodel_nr_vcpus(" + dom(domid) + ")", errno));
    return n;
  }
  int shutdown(DomId domid, unsigned reason) noexcept override {
    return c_->xendevicemodel_shutdown(dmod_.get(), domid, reason) == 0 ? 0 : -errno;
  }

  Result<Mapping> mapIoreqPages(DomId domid, ServerId id) override {
    void* addr = nullptr;
    auto* fres = c_->xenforeignmemory_map_resource(fmem_.get(), domid, XENMEM_resource_ioreq_server, id, 0, 2, &addr,
                                               PROT_READ | PROT_WRITE, 0);
    if (!fres) return std::unexpected(callError("xenforeignmemory_map_resource(" + domId(domid, id) + ", frames 0-1)", errno));
    auto* fmem = fmem_.get();
    const LibxenCalls* calls = c_;
    return Mapping(addr, 2, [calls, fmem, fres](void*, std::size_t) { calls->xenforeignmemory_unmap_resource(fmem, fres); });
  }
  int readGuest(DomId domid, std::uint64_t gpa, void* out, std::size_t len) noexcept override {
    return copyGuest(domid, gpa, out, len, false);
  }
  int writeGuest(DomId domid, std::uint64_t gpa, const void* in, std::size_t len) noexcept override {
    return copyGuest(domid, gpa, const_cast<void*>(in), len, true);
  }

  Result<std::unique_ptr<EventChannel>> openEventChannel() override {
    auto* h = c_->xenevtchn_open(nullptr, 0);
    if (!h) return std::unexpected(callError("xenevtchn_open", errno));
    return std::unique_ptr<EventChannel>(std::make_unique<LibxenEventChannel>(c_, h));
  }

  Result<void> restrictTo(DomId domid) override {
    if (c_->xentoolcore_restrict_all(domid) != 0) return std::unexpected(callError("xentoolcore_restrict_all(" + dom(domid) + ")", errno));
    return {};
  }

 private:
  // Page by page so a buffer crossing a frame boundary maps both frames; no heap allocation.
  int copyGuest(DomId domid, std::uint64_t gpa, void* buf, std::size_t len, bool write) noexcept {
    auto* bytes = static_cast<unsigned char*>(buf);
    while (len > 0) {
      const xen_pfn_t gfn = gpa / kPageSize;
      const std::size_t off = gpa % kPageSize;
      const std::size_t chunk = std::min(len, kPageSize - off);
      int err = 0;
      void* page = c_->xenforeignmemory_map(fmem_.get(), domid, write ? PROT_READ | PROT_WRITE : PROT_READ, 1, &gfn, &err);
      if (!page) return -errno;
      if (err) {
        c_->xenforeignmemory_unmap(fmem_.get(), page, 1);
        return err < 0 ? err : -err;
      }
      if (write)
        std::memcpy(static_cast<unsigned char*>(page) + off, bytes, chunk);
      else
        std::memcpy(bytes, static_cast<unsigned char*>(page) + off, chunk);
      c_->xenforeignmemory_unmap(fmem_.get(), page, 1);
      gpa += chunk, bytes += chunk, len -= chunk;
    }
    return 0;
  }

  const LibxenCalls* c_;
  std::unique_ptr<xendevicemodel_handle, DmodClose> dmod_;
  std::unique_ptr<xenforeignmemory_handle, FmemClose> fmem_;
};

}  // namespace

const LibxenCalls& linkedLibxen() noexcept {
  static const LibxenCalls calls = [] {
    LibxenCalls c;
#define IOF_LIBXEN_LINKED(name) c.name = &::name;
    IOF_LIBXEN_CALLS(IOF_LIBXEN_LINKED)
#undef IOF_LIBXEN_LINKED
    return c;
  }();
  return calls;
}

Result<std::unique_ptr<Hypervisor>> openLibxen(const LibxenCalls* calls) {
  const LibxenCalls* c_ = calls ? calls : &linkedLibxen();
  std::unique_ptr<xendevicemodel_handle, DmodClose> dmod(c_->xendevicemodel_open(nullptr, 0), DmodClose{c_});
  if (!dmod) return std::unexpected(callError("xendevicemodel_open", errno));
  std::unique_ptr<xenforeignmemory_handle, FmemClose> fmem(c_->xenforeignmemory_open(nullptr, 0), FmemClose{c_});
  if (!fmem) return std::unexpected(callError("xenforeignmemory_open", errno));
  return std::unique_ptr<Hypervisor>(std::make_unique<LibxenHypervisor>(c_, dmod.release(), fmem.release()));
}

}  // namespace iof::xen
