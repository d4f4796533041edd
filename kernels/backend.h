// The backend seam: every op the engine runs has one signature here, implemented by the CPU
// backend (kernels/cpu, the reference and also fast) and the CUDA backend (kernels/cuda). All
// tensors passed to a backend's op live in that backend's memory tier (host-addressable tiers for
// the CPU backend, Tier::Gpu for CUDA); shapes are checked by each op and a mismatch is an
// InternalError naming the op. The engine never calls a kernel except through this interface.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "runtime/core/tensor.h"

namespace tiergen::kernels {

enum class DeviceKind { Cpu, Cuda };

// Pointwise activations. GeluTanh is the tanh approximation (BLOOM, gelu_new); Gelu the exact erf.
enum class Act { Relu, Gelu, GeluTanh, Silu };

// One sequence's slice of a ragged attention batch: its queries are rows
// [q_begin, q_begin + q_len) of q/out, its keys and values are the first kv_len rows of k and v
// (the cache, already holding the new tokens). Query i sits at position kv_len - q_len + i and
// attends causally to keys 0..that position.
struct AttentionSeq {
  int64_t q_begin = 0;
  int64_t q_len = 0;
  int64_t kv_len = 0;
  Tensor k;  // (capacity, n_kv_heads * head_dim)
  Tensor v;  // (capacity, n_kv_heads * head_dim)
};

struct AttentionParams {
  int n_heads = 0;
  int n_kv_heads = 0;  // n_heads % n_kv_heads == 0 (GQA / MQA when smaller)
  int head_dim = 0;
  float scale = 1.0f;                   // applied to q·k
  const float* alibi_slopes = nullptr;  // (n_heads) or null: adds slope_h * key_position to scores
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual DeviceKind kind() const = 0;
  virtual std::string name() const = 0;

  // ---- memory ----
  // A zero-filled tensor in this backend's tier.
  virtual Tensor alloc(Shape shape, DType dtype) = 0;
  // dst = src, same dtype and element count; either side may be host or this backend's tier.
  virtual void copy(Tensor& dst, const Tensor& src) = 0;
  // Waits for all work queued on this backend (a no-op on CPU).
  virtual void synchronize() = 0;

  // ---- ops ----
  // out (M, N) = x (M, K) · w (N, K)^T + bias (N), accumulated in f32.
  // CPU: x, out f32; w f32, f16 or bf16. CUDA: x and w f16 or bf16 (same), out that dtype or f32.
  virtual void linear(Tensor& out, const Tensor& x, const Tensor& w, const Tensor* bias) = 0;
  // out (M, C) = x / sqrt(mean(x^2) + eps) * w (C)
  virtual void rms_norm(Tensor& out, const Tensor& x, const Tensor& w, float eps) = 0;
  // out (M, C) = (x - mean) / sqrt(var + eps) * w (C) + b (C)
  virtual void layer_norm(Tensor& out, const Tensor& x, const Tensor& w, const Tensor& b, float eps) = 0;
  // out (T, C) = table (V, C)[ids (T)], converted to out's dtype; an id outside [0, V) is an
  // InvalidArgumentError.
  virtual void embedding(Tensor& out, const Tensor& table, std::span<const int32_t> ids) = 0;
  // x (M, C) += y (M, C)
  virtual void add_(Tensor& x, const Tensor& y) = 0;
  // In place, x (M, C) = act(x).
  virtual void activation_(Tensor& x, Act act) = 0;
  // gate (M, F) = silu(gate) * up (M, F)   (SwiGLU)
  virtual void silu_mul_(Tensor& gate, const Tensor& up) = 0;
  // Rotary embedding in place on x (T, H * head_dim), rotate-half layout (GPT-NeoX / HF Llama):
  // for i < head_dim/2, (x_i, x_{i+half}) rotated by positions[t] * inv_freq[i].
  virtual void rope_(Tensor& x, int head_dim, std::span<const int64_t> positions, std::span<const float> inv_freq) = 0;
  // Scatter rows: cache (capacity, W)[row0 + t] = src (T, W)[t].
  virtual void write_rows(Tensor& cache, int64_t row0, const Tensor& src) = 0;
  // out (Tq, n_heads * head_dim) = causal softmax(scale * q k^T + alibi) v, per sequence.
  virtual void attention(Tensor& out, const Tensor& q, std::span<const AttentionSeq> seqs,
                         const AttentionParams& p) = 0;
};

std::unique_ptr<Backend> make_cpu_backend();
// True when this build has CUDA and a device is visible.
bool cuda_available();
// Throws UnsupportedError when built without CUDA or no device is visible.
std::unique_ptr<Backend> make_cuda_backend(int device = 0);

}  // namespace tiergen::kernels
