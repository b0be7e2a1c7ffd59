// The libxen entry points the adapter calls, as a table. The default table points at the linked
// libraries; the LD_PRELOAD interposer fills one with dlsym(RTLD_NEXT, ...) because inside it the
// plain names resolve to its own wrappers.
#pragma once

extern "C" {
#include <xendevicemodel.h>
#include <xenevtchn.h>
#include <xenforeignmemory.h>
#include <xentoolcore.h>
}

#define IOF_LIBXEN_CALLS(X)                        \
  X(xendevicemodel_open)                           \
  X(xendevicemodel_close)                          \
  X(xendevicemodel_create_ioreq_server)            \
  X(xendevicemodel_get_ioreq_server_info)          \
  X(xendevicemodel_map_io_range_to_ioreq_server)   \
  X(xendevicemodel_unmap_io_range_from_ioreq_server) \
  X(xendevicemodel_map_pcidev_to_ioreq_server)     \
  X(xendevicemodel_unmap_pcidev_from_ioreq_server) \
  X(xendevicemodel_set_ioreq_server_state)         \
  X(xendevicemodel_destroy_ioreq_server)           \
  X(xendevicemodel_nr_vcpus)                       \
  X(xendevicemodel_shutdown)                       \
  X(xenforeignmemory_open)                         \
  X(xenforeignmemory_close)                        \
  X(xenforeignmemory_map)                          \
  X(xenforeignmemory_unmap)                        \
  X(xenforeignmemory_map_resource)                 \
  X(xenforeignmemory_unmap_resource)               \
  X(xenevtchn_open)                                \
  X(xenevtchn_close)                               \
  X(xenevtchn_fd)                                  \
  X(xenevtchn_notify)                              \
  X(xenevtchn_bind_unbound_port)                   \
  X(xenevtchn_bind_interdomain)                    \
  X(xenevtchn_unbind)                              \
  X(xenevtchn_pending)                             \
  X(xenevtchn_unmask)                              \
  X(xenevtchn_restrict)                            \
  X(xentoolcore_restrict_all)

namespace iof::xen {

struct LibxenCalls {
#define IOF_LIBXEN_MEMBER(name) decltype(&::name) name = nullptr;
  IOF_LIBXEN_CALLS(IOF_LIBXEN_MEMBER)
#undef IOF_LIBXEN_MEMBER
};

// The table of the libraries this binary links.
const LibxenCalls& linkedLibxen() noexcept;

}  // namespace iof::xen
