// The CPU backend: host tensors, ops from kernels/cpu/*.cc.
#include <algorithm>
#include <cstring>

#include "kernels/cpu/ops.h"
#include "runtime/core/block_pool.h"
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
  // From a pool reused across steps: large activations would otherwise be fresh mmap'ed pages,
  // page-faulted in again every step. Activations are written before they are read.
  Tensor scratch(Shape shape, DType dtype) override {
    const size_t nbytes = static_cast<size_t>(shape_numel(shape)) * dtype_size(dtype);
    return Tensor(pool_->get(nbytes), 0, std::move(shape), dtype);
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
  StepTensors upload_step(const StepPlan& plan) override {
    // Host views of the plan's vectors: the CPU reads the metadata where the generator built it.
    auto view = [](const std::vector<int32_t>& v) {
      auto storage = Storage::wrap(const_cast<int32_t*>(v.data()), v.size() * sizeof(int32_t), Tier::Cpu, [] {});
      return Tensor(std::move(storage), 0, {static_cast<int64_t>(v.size())}, DType::I32);
    };
    return {&plan,
            view(plan.token_ids),
            view(plan.positions),
            view(plan.row_slot),
            view(plan.q_begin),
            view(plan.q_len),
            view(plan.kv_len),
            view(plan.slot),
            view(plan.logit_rows)};
  }
  void embedding(Tensor& out, const Tensor& table, const Tensor& ids, int32_t offset) override {
    std::vector<int32_t> shifted(ids.data<int32_t>(), ids.data<int32_t>() + ids.numel());
    for (int32_t& id : shifted) id += offset;
    cpu::embedding(out, table, shifted);
  }
  void add_(Tensor& x, const Tensor& y) override { cpu::add_(x, y); }
  void activation_(Tensor& x, Act act) override { cpu::activation_(x, act); }
  void silu_mul_(Tensor& gate, const Tensor& up) override { cpu::silu_mul_(gate, up); }
  void rope_(Tensor& x, int head_dim, const Tensor& positions, const Tensor& inv_freq) override {
    const int32_t* p = positions.data<int32_t>();
    const std::vector<int64_t> pos(p, p + positions.numel());
    cpu::rope_(x, head_dim, pos, std::span<const float>(inv_freq.data<float>(), static_cast<size_t>(inv_freq.numel())));
  }
  void write_kv(LayerKv& cache, const Tensor& k, const Tensor& v, const StepTensors& step) override {
    const StepPlan& plan = *step.plan;
    for (int64_t t = 0; t < plan.num_tokens(); ++t) {
      const int64_t row = plan.row_slot[t] * cache.capacity + plan.positions[t];
      cpu::write_rows(cache.k, row, k.slice_rows(t, t + 1));
      cpu::write_rows(cache.v, row, v.slice_rows(t, t + 1));
    }
  }
  void attention(Tensor& out, const Tensor& q, const LayerKv& cache, const StepTensors& step,
                 const AttentionShape& shape) override {
    const StepPlan& plan = *step.plan;
    std::vector<AttentionSeq> seqs;
    for (int64_t s = 0; s < plan.num_seqs(); ++s) {
      const int64_t first = plan.slot[s] * cache.capacity;
      seqs.push_back({plan.q_begin[s], plan.q_len[s], plan.kv_len[s], cache.k.slice_rows(first, first + cache.capacity),
                      cache.v.slice_rows(first, first + cache.capacity)});
    }
    const AttentionParams p{shape.n_heads, shape.n_kv_heads, shape.head_dim, shape.scale,
                            shape.alibi_slopes.defined() ? shape.alibi_slopes.data<float>() : nullptr};
    cpu::attention(out, q, seqs, p);
  }
  void gather_rows(Tensor& out, const Tensor& x, const Tensor& rows) override {
    cpu::check_host("gather_rows", out);
    check_2d("gather_rows", "out", out, rows.numel(), x.dim(1));
    for (int64_t r = 0; r < rows.numel(); ++r) {
      const int64_t src = rows.data<int32_t>()[r];
      TIERGEN_CHECK(src >= 0 && src < x.dim(0), "gather_rows: row out of range");
      cpu::write_rows(out, r, x.slice_rows(src, src + 1));
    }
  }

  void argmax_rows(Tensor& ids, const Tensor& logits) override {
    cpu::check_host("argmax_rows", ids);
    cpu::check_host("argmax_rows", logits);
    check_2d("argmax_rows", "logits", logits, ids.numel(), -1);
    if (logits.dtype() != DType::F32 || ids.dtype() != DType::I32)
      throw InternalError("argmax_rows: " + logits.describe() + " into " + ids.describe());
    const int64_t V = logits.dim(1);
    for (int64_t r = 0; r < logits.dim(0); ++r) {
      const float* row = logits.data<float>() + r * V;
      ids.data<int32_t>()[r] = static_cast<int32_t>(std::max_element(row, row + V) - row);
    }
  }
  // Every thread XORs its share of the 8-byte words; the result goes to a member the compiler must
  // assume is read, so the loads stay.
  void read_probe(const Tensor& x) override {
    cpu::check_host("read_probe", x);
    const auto* bytes = static_cast<const unsigned char*>(x.raw());
    const auto words = static_cast<int64_t>(x.nbytes() / sizeof(uint64_t));
    uint64_t acc = 0;
#pragma omp parallel for reduction(^ : acc) schedule(static)
    for (int64_t i = 0; i < words; ++i) {
      uint64_t w = 0;
      std::memcpy(&w, bytes + i * static_cast<int64_t>(sizeof(uint64_t)), sizeof(w));
      acc ^= w;
    }
    for (size_t i = static_cast<size_t>(words) * sizeof(uint64_t); i < x.nbytes(); ++i) acc ^= bytes[i];
    probe_sink_ = acc;
  }

 private:
  volatile uint64_t probe_sink_ = 0;
  std::unique_ptr<BlockPool> pool_ = make_host_pool();
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend() { return std::make_unique<CpuBackend>(); }

}  // namespace tiergen::kernels
