// The CPU backend: host tensors, ops from kernels/cpu/*.cc.
#include <cstring>

#include "kernels/cpu/ops.h"
#include "runtime/core/error.h"

namespace tiergen::kernels {
namespace {

class CpuBackend final : public Backend {
 public:
  DeviceKind kind() const override { return DeviceKind::Cpu; }
  std::string name() const override { return "cpu"; }

  Tensor alloc(Shape shape, DType dtype) override { return Tensor::empty(std::move(shape), dtype); }
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
