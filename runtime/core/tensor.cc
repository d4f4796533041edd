#include "runtime/core/tensor.h"

#include <cstdlib>
#include <cstring>
#include <new>

#include "runtime/core/error.h"

namespace tiergen {

const char* tier_name(Tier t) {
  switch (t) {
    case Tier::Cpu:
      return "cpu";
    case Tier::PinnedCpu:
      return "pinned-cpu";
    case Tier::Gpu:
      return "gpu";
    case Tier::Mmap:
      return "mmap";
    case Tier::Disk:
      return "disk";
  }
  return "?";
}

std::shared_ptr<Storage> Storage::allocate_cpu(size_t nbytes, bool zero) {
  size_t padded = (nbytes + 63) / 64 * 64;
  void* p = std::aligned_alloc(64, padded == 0 ? 64 : padded);
  if (!p) throw OutOfMemoryError("host allocation of " + std::to_string(nbytes) + " bytes failed");
  if (zero) std::memset(p, 0, padded == 0 ? 64 : padded);
  return std::shared_ptr<Storage>(new Storage(p, nbytes, Tier::Cpu, [p] { std::free(p); }));
}

std::shared_ptr<Storage> Storage::wrap(void* data, size_t nbytes, Tier tier, std::function<void()> release) {
  return std::shared_ptr<Storage>(new Storage(data, nbytes, tier, std::move(release)));
}

Storage::~Storage() {
  if (release_) release_();
}

std::string shape_str(const Shape& s) {
  std::string out = "(";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + ")";
}

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

Tensor::Tensor(std::shared_ptr<Storage> storage, size_t offset_bytes, Shape shape, DType dtype)
    : storage_(std::move(storage)), offset_(offset_bytes), shape_(std::move(shape)), dtype_(dtype) {
  for (int64_t d : shape_)
    if (d < 0) throw InternalError("negative dimension in tensor shape " + shape_str(shape_));
  TIERGEN_CHECK(offset_ + nbytes() <= storage_->nbytes(), "tensor view " + describe() + " exceeds its storage");
}

Tensor Tensor::empty(Shape shape, DType dtype) {
  size_t n = static_cast<size_t>(shape_numel(shape)) * dtype_size(dtype);
  return Tensor(Storage::allocate_cpu(n), 0, std::move(shape), dtype);
}

Tensor Tensor::slice_rows(int64_t begin, int64_t end) const {
  TIERGEN_CHECK(rank() >= 1 && 0 <= begin && begin <= end && end <= shape_[0],
                "slice_rows [" + std::to_string(begin) + ", " + std::to_string(end) + ") of " + describe());
  Shape s = shape_;
  s[0] = end - begin;
  size_t row_bytes = shape_[0] == 0 ? 0 : nbytes() / static_cast<size_t>(shape_[0]);
  return Tensor(storage_, offset_ + static_cast<size_t>(begin) * row_bytes, std::move(s), dtype_);
}

Tensor Tensor::reshape(Shape shape) const {
  TIERGEN_CHECK(shape_numel(shape) == numel(), "reshape " + describe() + " to " + shape_str(shape));
  return Tensor(storage_, offset_, std::move(shape), dtype_);
}

Tensor Tensor::to_f32() const {
  if (!host_addressable(tier())) throw UnsupportedError("to_f32 on a tensor in tier " + std::string(tier_name(tier())));
  Tensor out = Tensor::empty(shape_, DType::F32);
  convert_to_f32(out.data<float>(), raw(), dtype_, static_cast<size_t>(numel()));
  return out;
}

std::string Tensor::describe() const {
  return std::string(dtype_name(dtype_)) + shape_str(shape_) + " on " + tier_name(tier());
}

}  // namespace tiergen
