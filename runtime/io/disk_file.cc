#include "runtime/io/disk_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>

#include "runtime/core/error.h"

namespace tiergen::io {
namespace {

void check_aligned(const char* op, const std::string& path, uint64_t offset, const void* buf) {
  if (offset % kDirectAlign != 0 || reinterpret_cast<uintptr_t>(buf) % kDirectAlign != 0)
    throw InternalError(std::string(op) + " " + path + ": offset " + std::to_string(offset) +
                        " or buffer not aligned to " + std::to_string(kDirectAlign) + " bytes");
}

std::string io_failure(const char* op, size_t bytes, const std::string& path, uint64_t offset, int err) {
  std::string m = std::string(op) + " " + std::to_string(bytes) + " bytes at offset " + std::to_string(offset) +
                  " of " + path + ": " + errno_message(err);
  if (err == ENOSPC || err == EDQUOT || err == EFBIG)
    m += " (the offload folder's disk is full or the file size limit was reached: free space, point "
         "--offload-dir elsewhere, or keep more on the GPU and CPU with --percent)";
  return m;
}

}  // namespace

void AlignedBuffer::Free::operator()(void* p) const { std::free(p); }

AlignedBuffer::AlignedBuffer(size_t bytes) : size_(round_up_direct(bytes == 0 ? 1 : bytes)) {
  void* p = nullptr;
  if (posix_memalign(&p, kDirectAlign, size_) != 0)
    throw OutOfMemoryError("cannot allocate an aligned I/O buffer of " + std::to_string(size_) + " bytes");
  data_.reset(p);
}

DiskFile::DiskFile(std::string path) : path_(std::move(path)) {
  fd_ = ::open(path_.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC | O_DIRECT, 0600);
  direct_ = fd_ >= 0;
  if (fd_ < 0 && errno == EINVAL)  // the filesystem has no O_DIRECT (tmpfs): buffered I/O
    fd_ = ::open(path_.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd_ < 0) throw IoError("cannot create offload file " + path_ + ": " + errno_message(errno));
}

DiskFile::~DiskFile() {
  if (fd_ >= 0) (void)::close(fd_);
}

void DiskFile::write(uint64_t offset, const void* buf, size_t bytes) {
  check_aligned("write", path_, offset, buf);
  const size_t total = round_up_direct(bytes);
  size_t done = 0;
  while (done < total) {
    const ssize_t n =
        ::pwrite(fd_, static_cast<const char*>(buf) + done, total - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw IoError(io_failure("writing", total, path_, offset, errno));
    // A short write leaves the rest to write; one of zero bytes means no room (as ENOSPC).
    if (n == 0) throw IoError(io_failure("writing", total, path_, offset, ENOSPC));
    done += static_cast<size_t>(n);
  }
}

void DiskFile::reserve(uint64_t bytes) {
  int err = 0;
  do {
    err = ::fallocate(fd_, 0, 0, static_cast<off_t>(bytes)) == 0 ? 0 : errno;
  } while (err == EINTR);
  if (err == EOPNOTSUPP || err == ENOSYS) err = ::ftruncate(fd_, static_cast<off_t>(bytes)) == 0 ? 0 : errno;
  if (err != 0) throw IoError(io_failure("reserving", bytes, path_, 0, err));
}

void DiskFile::read(uint64_t offset, void* buf, size_t bytes) {
  check_aligned("read", path_, offset, buf);
  const size_t total = round_up_direct(bytes);
  size_t done = 0;
  while (done < bytes) {
    const ssize_t n = ::pread(fd_, static_cast<char*>(buf) + done, total - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw IoError(io_failure("reading", total, path_, offset, errno));
    if (n == 0)
      throw IoError("reading " + std::to_string(bytes) + " bytes at offset " + std::to_string(offset) + " of " + path_ +
                    ": the file ends after " + std::to_string(done) + " (a short read: the file was truncated)");
    done += static_cast<size_t>(n);
  }
}

}  // namespace tiergen::io
