#include "ioreq_filter/sim/qemu_model.h"

#include <algorithm>
#include <cerrno>
#include <poll.h>
#include <unistd.h>

namespace iof::sim {

using namespace xen;

Result<std::unique_ptr<QemuModel>> QemuModel::direct(Hypervisor& hv, DomId domid, ServerId id, unsigned vcpus,
                                                     Device device) {
  std::unique_ptr<QemuModel> q(new QemuModel());
  q->hv_ = &hv;
  q->domid_ = domid;
  q->device_ = std::move(device);
  SessionOptions o;
  o.domid = domid;
  o.adopt = id;
  o.vcpus = vcpus;
  auto s = IoreqServerSession::open(hv, o);
  if (!s) return std::unexpected(s.error());
  q->session_ = std::move(*s);
  q->pages_ = q->session_->pages();
  for (unsigned i = 0; i < vcpus; ++i) q->vcpu_ports_.push_back(q->session_->vcpuPort(i));
  q->buf_port_ = q->session_->bufferedPort();
  return q;
}

Result<std::unique_ptr<QemuModel>> QemuModel::shadow(Hypervisor& hv, DomId domid, int shadowFd, unsigned vcpus,
                                                     Device device) {
  std::unique_ptr<QemuModel> q(new QemuModel());
  q->hv_ = &hv;
  q->domid_ = domid;
  q->device_ = std::move(device);
  const int fd = dup(shadowFd);
  if (fd < 0) return std::unexpected(callError("dup(shadow fd)", errno));
  auto f = ShadowFile::fromFd(fd);
  if (!f) return std::unexpected(f.error());
  q->shadow_ = std::make_unique<ShadowFile>(std::move(*f));
  q->pages_ = q->shadow_->pages();
  auto ev = hv.openEventChannel();
  if (!ev) return std::unexpected(ev.error());
  q->events_ = std::move(*ev);
  Journal& j = q->shadow_->journal();
  for (unsigned i = 0; i < vcpus; ++i) {
    auto p = q->events_->bindInterdomain(0, q->pages_.sync->vcpu[i].vp_eport);
    if (!p) return std::unexpected(p.error());
    q->vcpu_ports_.push_back(*p);
    j.qemu_vcpu_port[i] = *p;
  }
  auto b = q->events_->bindInterdomain(0, j.shadow_buf_port);
  if (!b) return std::unexpected(b.error());
  q->buf_port_ = *b;
  j.qemu_buf_port = *b;
  return q;
}

QemuModel::~QemuModel() { stop(); }

void QemuModel::start() {
  running_ = true;
  thread_ = std::thread([this] {
    EventChannel& ev = session_ ? session_->events() : *events_;
    pollfd pfd{ev.fd(), POLLIN, 0};
    while (running_) {
      if (poll(&pfd, 1, 20) > 0) handleEvents();
      drainBuffered();  // QEMU's buffered_io_timer
    }
  });
}

void QemuModel::stop() {
  running_ = false;
  if (thread_.joinable()) thread_.join();
}

void QemuModel::handle(IoRequest& r, bool buffered) {
  // handle_ioreq masks written data to the access size.
  if (!r.data_is_ptr && r.dir == Dir::Write && r.size < 8) r.data &= (std::uint64_t{1} << (8 * r.size)) - 1;
  std::uint64_t value = r.data;
  if (r.type == IoType::Invalidate || r.type == IoType::TimeOffset) {
    // mapcache invalidation / time offset: nothing for a device
  } else if (!r.data_is_ptr) {
    IoRequest one = r;
    if (r.dir == Dir::Read) {
      value = device_(one) & allOnes(r.size);
      r.data = value;
    } else {
      (void)device_(one);
    }
  } else {
    // cpu_ioreq_pio / cpu_ioreq_move with data_is_ptr: one device access per rep on guest memory.
    for (std::uint32_t i = 0; i < r.count; ++i) {
      const std::uint64_t step = std::uint64_t(r.size) * i;
      const std::uint64_t gpa = r.df ? r.data - step : r.data + step;
      IoRequest one = r;
      one.count = 1;
      one.data_is_ptr = false;
      if (r.type == IoType::Copy) one.addr = r.df ? r.addr - step : r.addr + step;
      if (r.dir == Dir::Read) {
        const std::uint64_t v = device_(one) & allOnes(r.size);
        (void)hv_->writeGuest(domid_, gpa, &v, r.size);
      } else {
        std::uint64_t v = 0;
        (void)hv_->readGuest(domid_, gpa, &v, r.size);
        one.data = v;
        (void)device_(one);
      }
    }
  }
  std::lock_guard lk(mu_);
  seen_.push_back({r, value, buffered});
}

void QemuModel::drainBuffered() {
  BufferedIoPage* pg = pages_.buffered;
  for (;;) {
    const std::uint32_t rp = readPointer(*pg).load(std::memory_order_acquire);
    const std::uint32_t wp = writePointer(*pg).load(std::memory_order_acquire);
    if (rp == wp) return;
    const BufSlot b = pg->slot[rp % kBufferedSlots];
    const bool qw = b.size == 3;
    if (qw && rp + 1 == wp) return;
    IoRequest r;
    r.type = IoType(b.type);
    r.addr = b.addr;
    r.size = std::uint8_t(1u << b.size);
    r.data = b.data;
    if (qw) r.data |= std::uint64_t(pg->slot[(rp + 1) % kBufferedSlots].data) << 32;
    r.dir = Dir::Write;
    handle(r, true);
    readPointer(*pg).fetch_add(qw ? 2 : 1, std::memory_order_acq_rel);
  }
}

void QemuModel::handleEvents() {
  EventChannel& ev = session_ ? session_->events() : *events_;
  for (std::int64_t p; (p = ev.pending()) >= 0;) {
    if (Port(p) == buf_port_) {
      drainBuffered();
      (void)ev.unmask(Port(p));
      continue;
    }
    const auto it = std::find(vcpu_ports_.begin(), vcpu_ports_.end(), Port(p));
    if (it == vcpu_ports_.end()) continue;
    const unsigned v = unsigned(it - vcpu_ports_.begin());
    (void)ev.unmask(Port(p));
    IoreqSlot& slot = pages_.sync->vcpu[v];
    drainBuffered();
    if (loadState(slot) != SlotState::Ready) continue;
    storeState(slot, SlotState::InProcess);
    IoRequest r = toRequest(slot, std::uint16_t(v));
    handle(r, false);
    slot.data = r.data;
    storeState(slot, SlotState::RespReady);
    (void)ev.notify(Port(p));
  }
}

std::vector<SeenRequest> QemuModel::seen() const {
  std::lock_guard lk(mu_);
  return seen_;
}
std::size_t QemuModel::seenCount() const {
  std::lock_guard lk(mu_);
  return seen_.size();
}

}  // namespace iof::sim
