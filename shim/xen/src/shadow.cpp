#include "ioreq_filter/xen/shadow.h"

#include <cerrno>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <utility>

namespace iof::xen {

Result<ShadowFile> ShadowFile::fromFd(int fd) {
  ShadowFile f;
  f.fd_ = fd;
  struct stat st {};
  if (fstat(fd, &st) != 0) return std::unexpected(callError("fstat(shadow fd)", errno));
  if (std::size_t(st.st_size) < kShadowBytes && ftruncate(fd, kShadowBytes) != 0)
    return std::unexpected(callError("ftruncate(shadow fd)", errno));
  void* base = mmap(nullptr, kShadowBytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (base == MAP_FAILED) return std::unexpected(callError("mmap(shadow fd)", errno));
  f.base_ = base;
  return f;
}

Result<ShadowFile> ShadowFile::open(const std::string& path, bool* created) {
  int fd;
  if (path.empty()) {
    fd = memfd_create("ioreq-filter-shadow", MFD_CLOEXEC);
    if (fd < 0) return std::unexpected(callError("memfd_create", errno));
    if (created) *created = true;
  } else {
    fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC | O_CREAT | O_EXCL, 0600);
    if (fd >= 0) {
      if (created) *created = true;
    } else if (errno == EEXIST) {
      fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
      if (fd < 0) return std::unexpected(callError("open(" + path + ")", errno));
      if (created) *created = false;
    } else {
      return std::unexpected(callError("open(" + path + ", O_CREAT)", errno));
    }
  }
  return fromFd(fd);
}

ShadowFile::ShadowFile(ShadowFile&& o) noexcept : fd_(std::exchange(o.fd_, -1)), base_(std::exchange(o.base_, nullptr)) {}
ShadowFile& ShadowFile::operator=(ShadowFile&& o) noexcept {
  std::swap(fd_, o.fd_);
  std::swap(base_, o.base_);
  return *this;
}
ShadowFile::~ShadowFile() {
  if (base_) munmap(base_, kShadowBytes);
  if (fd_ >= 0) close(fd_);
}

IoreqPages ShadowFile::pages() const noexcept {
  auto* b = static_cast<unsigned char*>(base_);
  return IoreqPages{reinterpret_cast<BufferedIoPage*>(b), reinterpret_cast<SharedIoPage*>(b + kPageSize)};
}
Journal& ShadowFile::journal() const noexcept {
  return *reinterpret_cast<Journal*>(static_cast<unsigned char*>(base_) + 2 * kPageSize);
}

}  // namespace iof::xen
