// The shadow channel's memory: pages 0-1 are what QEMU maps as its ioreq server (buffered, sync),
// the pages after them hold the Journal. A file (tmpfs under /run, or a memfd) so it outlives the
// daemon: a restarted daemon maps the same pages and finishes what the journal says was in flight.
#pragma once

#include <string>

#include "ioreq_filter/core/error.h"
#include "ioreq_filter/xen/hypervisor.h"
#include "ioreq_filter/xen/relay.h"

namespace iof::xen {

class ShadowFile {
 public:
  // path empty: an anonymous memfd. Otherwise created if missing (0600), kept if present.
  static Result<ShadowFile> open(const std::string& path, bool* created = nullptr);
  static Result<ShadowFile> fromFd(int fd);  // takes ownership (an fd received over SCM_RIGHTS)
  ShadowFile(ShadowFile&&) noexcept;
  ShadowFile& operator=(ShadowFile&&) noexcept;
  ~ShadowFile();

  int fd() const noexcept { return fd_; }
  IoreqPages pages() const noexcept;
  Journal& journal() const noexcept;

 private:
  ShadowFile() = default;
  int fd_ = -1;
  void* base_ = nullptr;
};

}  // namespace iof::xen
