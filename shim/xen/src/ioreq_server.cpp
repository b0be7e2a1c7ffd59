#include "ioreq_filter/xen/ioreq_server.h"

#include <cstdio>

namespace iof::xen {

void IoreqServerSession::log(const std::string& line) const {
  if (options_.log) options_.log(line);
}

int IoreqServerSession::vcpuOfPort(Port local) const noexcept {
  for (unsigned i = 0; i < vcpu_ports_.size(); ++i)
    if (vcpu_ports_[i] == local) return int(i);
  return -1;
}

Result<std::unique_ptr<IoreqServerSession>> IoreqServerSession::open(Hypervisor& hv, SessionOptions options) {
  std::unique_ptr<IoreqServerSession> s(new IoreqServerSession(hv, std::move(options)));
  const auto& o = s->options_;
  const std::string where = "domid " + std::to_string(o.domid);
  s->log("stage handle: " + hv.name());

  if (o.adopt) {
    s->id_ = *o.adopt;
    s->log("stage server: adopted id " + std::to_string(s->id_));
  } else {
    auto id = hv.createServer(o.domid, o.bufioreq);
    if (!id) return std::unexpected(id.error());
    s->id_ = *id;
    s->created_ = true;
    s->log("stage server: created id " + std::to_string(s->id_));
  }
  auto info = hv.serverInfo(o.domid, s->id_);
  if (!info) return std::unexpected(info.error());
  s->guest_buf_port_ = info->bufioreq_port;

  auto vcpus = o.vcpus ? Result<unsigned>(o.vcpus) : hv.vcpuCount(o.domid);
  if (!vcpus) return std::unexpected(vcpus.error());
  if (*vcpus == 0 || *vcpus > kMaxVcpus)
    return fail(where, std::to_string(*vcpus) + " vCPUs: the shared ioreq page holds 1.." + std::to_string(kMaxVcpus));
  s->vcpus_ = *vcpus;

  auto pages = hv.mapIoreqPages(o.domid, s->id_);
  if (!pages) return std::unexpected(pages.error());
  s->pages_ = std::move(*pages);
  s->log("stage pages: mapped buffered + sync frames");

  for (const auto& r : o.ranges) {
    if (auto ok = hv.mapIoRange(o.domid, s->id_, r.kind, r.start, r.end); !ok) return std::unexpected(ok.error());
  }
  for (const auto& b : o.pci_devices) {
    if (auto ok = hv.mapPciDev(o.domid, s->id_, b); !ok) return std::unexpected(ok.error());
  }
  if (!o.ranges.empty() || !o.pci_devices.empty())
    s->log("stage ranges: " + std::to_string(o.ranges.size()) + " io ranges, " + std::to_string(o.pci_devices.size()) +
           " PCI devices");

  if (!o.adopt && o.enable) {
    if (auto ok = hv.setServerState(o.domid, s->id_, true); !ok) return std::unexpected(ok.error());
    s->enabled_ = true;
    s->log("stage enabled");
  }
  if (o.bind_ports) {
    if (auto ok = s->bindPorts(); !ok) return std::unexpected(ok.error());
  }
  return s;
}

Result<void> IoreqServerSession::bindPorts() {
  auto ev = hv_.openEventChannel();
  if (!ev) return std::unexpected(ev.error());
  events_ = std::move(*ev);
  const auto p = pages();
  // vp_eport is only filled in once the server is enabled (ioreq.c:348-358, called from enable).
  for (unsigned i = 0; i < vcpus_; ++i) {
    const Port remote = p.sync->vcpu[i].vp_eport;
    auto local = events_->bindInterdomain(options_.domid, remote);
    if (!local) {
      vcpu_ports_.clear();
      events_.reset();
      return fail(local.error().where, local.error().what + " (vCPU " + std::to_string(i) +
                                           "; vp_eport is valid only after the server is enabled)");
    }
    vcpu_ports_.push_back(*local);
  }
  if (guest_buf_port_ == 0) {  // HVM_IOREQSRV_BUFIOREQ_OFF: no buffered channel
    log("stage ports bound: " + std::to_string(vcpus_) + " vCPU ports");
    return {};
  }
  auto buf = events_->bindInterdomain(options_.domid, guest_buf_port_);
  if (!buf) {
    vcpu_ports_.clear();
    events_.reset();
    return std::unexpected(buf.error());
  }
  buf_port_ = *buf;
  log("stage ports bound: " + std::to_string(vcpus_) + " vCPU ports + buffered port");
  return {};
}

IoreqServerSession::~IoreqServerSession() {
  if (events_) {
    // Closing the handle unbinds every port at once; the guest-side ends return to unbound.
    events_.reset();
    log("teardown: ports unbound");
  }
  if (enabled_) {
    if (auto ok = hv_.setServerState(options_.domid, id_, false); !ok) log("teardown: " + ok.error().message());
    else log("teardown: disabled");
  }
  if (pages_) {
    pages_ = Mapping();
    log("teardown: pages unmapped");
  }
  if (created_) {
    if (auto ok = hv_.destroyServer(options_.domid, id_); !ok) log("teardown: " + ok.error().message());
    else log("teardown: server destroyed");
  }
}

}  // namespace iof::xen
