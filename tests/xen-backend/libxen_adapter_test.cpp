// The adapter over Debian's libxen, driven through a table of fake entry points (the same seam the
// interposer uses for dlsym'd calls): errors name the call and errno, and the event channel never
// blocks in pending().
#include <gtest/gtest.h>

#include <cerrno>
#include <fcntl.h>
#include <unistd.h>

#include "ioreq_filter/xen/libxen_calls.h"
#include "ioreq_filter/xen/libxen_hypervisor.h"

namespace iof {
namespace {

int g_pipe[2] = {-1, -1};
int g_closed = 0;

xen::LibxenCalls fakeCalls() {
  xen::LibxenCalls c;
  c.xendevicemodel_open = [](xentoollog_logger*, unsigned) { return reinterpret_cast<xendevicemodel_handle*>(0x10); };
  c.xendevicemodel_close = [](xendevicemodel_handle*) { ++g_closed; return 0; };
  c.xenforeignmemory_open = [](xentoollog_logger*, unsigned) { return reinterpret_cast<xenforeignmemory_handle*>(0x20); };
  c.xenforeignmemory_close = [](xenforeignmemory_handle*) { ++g_closed; return 0; };
  c.xenevtchn_open = [](xentoollog_logger*, unsigned) { return reinterpret_cast<xenevtchn_handle*>(0x30); };
  c.xenevtchn_close = [](xenevtchn_handle*) { ++g_closed; return 0; };
  c.xenevtchn_fd = [](xenevtchn_handle*) { return g_pipe[0]; };
  // Like libxenevtchn: read() a port from the fd.
  c.xenevtchn_pending = [](xenevtchn_handle*) -> xenevtchn_port_or_error_t {
    evtchn_port_t p;
    return read(g_pipe[0], &p, sizeof p) == sizeof p ? xenevtchn_port_or_error_t(p) : -1;
  };
  c.xendevicemodel_create_ioreq_server = [](xendevicemodel_handle*, domid_t, int, ioservid_t*) {
    errno = EPERM;
    return -1;
  };
  return c;
}

TEST(LibxenAdapter, PendingNeverBlocksAndErrorsNameTheCall) {
  ASSERT_EQ(pipe(g_pipe), 0);
  const auto calls = fakeCalls();
  {
    auto hv = xen::openLibxen(&calls);
    ASSERT_TRUE(hv) << hv.error().message();
    const auto server = (*hv)->createServer(5, xen::BufioreqMode::Atomic);
    ASSERT_FALSE(server);
    EXPECT_EQ(server.error().message(), "xendevicemodel_create_ioreq_server(domid 5): EPERM (Operation not permitted)");
    auto ev = (*hv)->openEventChannel();
    ASSERT_TRUE(ev);
    EXPECT_NE(fcntl(g_pipe[0], F_GETFL) & O_NONBLOCK, 0);
    EXPECT_EQ((*ev)->pending(), -1) << "nothing pending must not block";
    const evtchn_port_t port = 7;
    ASSERT_EQ(write(g_pipe[1], &port, sizeof port), ssize_t(sizeof port));
    EXPECT_EQ((*ev)->pending(), 7);
    EXPECT_EQ((*ev)->pending(), -1);
  }
  EXPECT_EQ(g_closed, 3) << "every handle closed exactly once";
  close(g_pipe[0]);
  close(g_pipe[1]);
}

TEST(LibxenAdapter, OpeningOutsideDom0FailsWithTheCallAndErrno) {
  auto hv = xen::openLibxen();
  if (hv) GTEST_SKIP() << "running in a Xen dom0";
  EXPECT_EQ(hv.error().where.rfind("xen", 0), 0u) << hv.error().message();
  EXPECT_NE(hv.error().what.find("("), std::string::npos) << hv.error().message();
}

}  // namespace
}  // namespace iof
