// Tensor: a shape, a dtype and bytes that live in one explicit memory tier. Storage is shared and
// reference counted (RAII); a Tensor is a cheap view (offset + shape) into it. Tensors are
// contiguous, row-major.
#pragma once

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "runtime/core/dtype.h"

namespace tiergen {

// Where a tensor's bytes live. The tier is part of the type of a buffer so that no code can hand a
// GPU pointer to a CPU kernel by accident.
enum class Tier : uint8_t {
  Cpu,        // pageable host memory
  PinnedCpu,  // page-locked host memory (fast H2D/D2H)
  Gpu,        // device memory
  Mmap,       // a read-only memory-mapped file (checkpoints)
  Disk,       // bytes on disk, not addressable; read through runtime/io
};
const char* tier_name(Tier t);
inline bool host_addressable(Tier t) { return t == Tier::Cpu || t == Tier::PinnedCpu || t == Tier::Mmap; }

// Owns (or keeps alive) a block of bytes in one tier.
class Storage {
 public:
  // Allocates `nbytes` of 64-byte aligned pageable host memory, zero-filled unless `zero` is false
  // (the CPU backend zero-fills large buffers itself, in parallel).
  static std::shared_ptr<Storage> allocate_cpu(size_t nbytes, bool zero = true);
  // Wraps memory owned elsewhere; `release` runs when the last view goes away.
  static std::shared_ptr<Storage> wrap(void* data, size_t nbytes, Tier tier, std::function<void()> release);

  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  ~Storage();

  void* data() const { return data_; }
  size_t nbytes() const { return nbytes_; }
  Tier tier() const { return tier_; }

 private:
  Storage(void* data, size_t nbytes, Tier tier, std::function<void()> release)
      : data_(data), nbytes_(nbytes), tier_(tier), release_(std::move(release)) {}
  void* data_;
  size_t nbytes_;
  Tier tier_;
  std::function<void()> release_;
};

using Shape = std::vector<int64_t>;
std::string shape_str(const Shape& s);
int64_t shape_numel(const Shape& s);

class Tensor {
 public:
  Tensor() = default;
  Tensor(std::shared_ptr<Storage> storage, size_t offset_bytes, Shape shape, DType dtype);

  // A new zero-filled host tensor.
  static Tensor empty(Shape shape, DType dtype = DType::F32);

  bool defined() const { return storage_ != nullptr; }
  const Shape& shape() const { return shape_; }
  int64_t dim(int i) const { return shape_.at(i < 0 ? shape_.size() + i : i); }
  int rank() const { return static_cast<int>(shape_.size()); }
  DType dtype() const { return dtype_; }
  Tier tier() const { return storage_ ? storage_->tier() : Tier::Cpu; }
  int64_t numel() const { return shape_numel(shape_); }
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype_); }
  const std::shared_ptr<Storage>& storage() const { return storage_; }
  size_t offset_bytes() const { return offset_; }  // where it starts in its storage

  void* raw() const { return static_cast<char*>(storage_->data()) + offset_; }
  template <typename T>
  T* data() const {
    return static_cast<T*>(raw());
  }

  // Rows [begin, end) of the first dimension, sharing storage.
  Tensor slice_rows(int64_t begin, int64_t end) const;
  // Same bytes, another shape with the same element count.
  Tensor reshape(Shape shape) const;
  // A host f32 copy (converting f16/bf16); requires a host-addressable tier.
  Tensor to_f32() const;

  std::string describe() const;  // "F32(3, 64) on cpu"

 private:
  std::shared_ptr<Storage> storage_;
  size_t offset_ = 0;
  Shape shape_;
  DType dtype_ = DType::F32;
};

}  // namespace tiergen
