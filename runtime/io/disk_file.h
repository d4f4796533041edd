// A file of the disk tier, read and written with O_DIRECT (no page cache: the bytes go between the
// disk and the caller's aligned buffer, and host memory holds no second copy of what was
// offloaded), in whole blocks of kDirectAlign bytes. Every completion's byte count is checked: a
// full disk, a short read or any other failure is an IoError naming the file, never garbage.
// Where the filesystem refuses O_DIRECT (tmpfs), the file is opened without it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace tiergen::io {

inline constexpr size_t kDirectAlign = 4096;  // O_DIRECT's alignment of offsets, sizes and addresses

// Host memory aligned to kDirectAlign, its size rounded up to it (RAII).
class AlignedBuffer {
 public:
  AlignedBuffer() = default;
  explicit AlignedBuffer(size_t bytes);
  void* data() const { return data_.get(); }
  size_t size() const { return size_; }

 private:
  struct Free {
    void operator()(void* p) const;
  };
  std::unique_ptr<void, Free> data_;
  size_t size_ = 0;
};

inline size_t round_up_direct(size_t n) { return (n + kDirectAlign - 1) / kDirectAlign * kDirectAlign; }

class DiskFile {
 public:
  // Creates (or truncates) `path`, mode 0600.
  explicit DiskFile(std::string path);
  ~DiskFile();
  DiskFile(const DiskFile&) = delete;
  DiskFile& operator=(const DiskFile&) = delete;

  const std::string& path() const { return path_; }
  bool direct() const { return direct_; }
  // Writes `bytes` from `buf` (kDirectAlign-aligned, holding round_up_direct(bytes)) at `offset`
  // (a multiple of kDirectAlign); the tail of the last block is written as it is in buf.
  void write(uint64_t offset, const void* buf, size_t bytes);
  // Reads `bytes` at `offset` into `buf` (aligned, room for round_up_direct(bytes)). IoError when
  // the file ends before offset + bytes.
  void read(uint64_t offset, void* buf, size_t bytes);
  // Makes the file `bytes` long, its blocks allocated where the filesystem can (fallocate), so that a
  // disk too small is an IoError now rather than mid-run; elsewhere a sparse file (ftruncate).
  // Unwritten ranges read as zeros.
  void reserve(uint64_t bytes);

 private:
  std::string path_;
  int fd_ = -1;
  bool direct_ = false;
};

}  // namespace tiergen::io
