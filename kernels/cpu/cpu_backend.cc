// The CPU backend: host tensors, ops from kernels/cpu/*.cc.
#include <algorithm>
#include <cstring>

#include "kernels/cpu/ops.h"
#include "runtime/core/error.h"

namespace tiergen::kernels {
namespace {

class CpuBackend final : public Backend {
 public:
  DeviceKind kind() const override { return DeviceKind::Cpu; }
  std::string name() const override { return "cpu"; }

  // Zero-filled by all threads: prefill activations run to hundreds of MB, and a single-threaded
  // memset (plus its page faults) of every one of them cost several percent of a 7B prefill.
  Tensor alloc(Shape shape, DType dtype) override {
    const size_t nbytes = static_cast<size_t>(shape_numel(shape)) * dtype_size(dtype);
    auto storage = Storage::allocate_cpu(nbytes, /*zero=*/false);
    char* p = static_cast<char*>(storage->data());
    constexpr size_t kChunk = size_t{1} << 20;
    const int64_t chunks = static_cast<int64_t>((nbytes + kChunk - 1) / kChunk);
#pragma omp parallel for schedule(static) if (chunks > 1)
    for (int64_t c = 0; c < chunks; ++c) {
      const size_t begin = static_cast<size_t>(c) * kChunk;
      std::memset(p + begin, 0, std::min(kChunk, nbytes - begin));
    }
    return Tensor(std::move(storage), 0, std::move(shape), dtype);
  }
  void copy(Tensor& dst, const Tensor& src) override {
    cpu::check_host("copy", dst);
    cpu::check_host("copy", src);
    if (dst.dtype() != src.dtype() || dst.numel() != src.numel())
      throw InternalError("copy: " + src.describe() + " into " + dst.describe());
    std::memcpy(dst.raw(), src.raw(), src.nbytes());
  }
  void synchronize() override {}

  void linear(Tensor& out, const Tensor& x, const Tensor& w, const Tensor* bias) override {
    cpu::linear(out, x, w, bias);
  }
  void rms_norm(Tensor& out, const Tensor& x, const Tensor& w, float eps) override { cpu::rms_norm(out, x, w, eps); }
  void layer_norm(Tensor& out, const Tensor& x, const Tensor& w, const Tensor& b, float eps) override {
    cpu::layer_norm(out, x, w, b, eps);
  }
  void embedding(Tensor& out, const Tensor& table, std::span<const int32_t> ids) override {
    cpu::embedding(out, table, ids);
  }
  void add_(Tensor& x, const Tensor& y) override { cpu::add_(x, y); }
  void activation_(Tensor& x, Act act) override { cpu::activation_(x, act); }
  void silu_mul_(Tensor& gate, const Tensor& up) override { cpu::silu_mul_(gate, up); }
  void rope_(Tensor& x, int head_dim, std::span<const int64_t> positions, std::span<const float> inv_freq) override {
    cpu::rope_(x, head_dim, positions, inv_freq);
  }
  void write_rows(Tensor& cache, int64_t row0, const Tensor& src) override { cpu::write_rows(cache, row0, src); }
  void attention(Tensor& out, const Tensor& q, std::span<const AttentionSeq> seqs, const AttentionParams& p) override {
    cpu::attention(out, q, seqs, p);
  }
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend() { return std::make_unique<CpuBackend>(); }

}  // namespace tiergen::kernels
