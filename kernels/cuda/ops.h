// CUDA ops behind the Backend interface: launchers over device tensors, one file per op
// (linear.cu, norm.cu), each kernel next to a comment naming its CPU reference in kernels/cpu.
// Launchers check shapes (InternalError naming the op) and dtypes (UnsupportedError for a
// combination this backend does not run), then queue work on `stream`; none of them synchronizes.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "kernels/backend.h"
#include "kernels/cuda/cuda_handles.h"
#include "kernels/shape_check.h"

namespace tiergen::kernels::cuda {

// linear: out (M, N) = x (M, K) · w (N, K)^T + bias (N), then ReLU when `relu`. `cublas` is bound
// to `stream`; `ws` holds the f32 accumulator when a bias meets a 16-bit out.
void linear(cudaStream_t stream, cublasHandle_t cublas, Workspace& ws, Tensor& out, const Tensor& x, const Tensor& w,
            const Tensor* bias, bool relu = false);
// out (M, N) += x (M, K) · w (N, K)^T + bias (N) in one GEMM that reads out as its C (cuBLASLt,
// beta = 1; it may round the product to out's dtype before the add, as linear then add_ does);
// false, with nothing queued, where cuBLASLt has no algorithm for the operands.
bool linear_accumulate(cudaStream_t stream, cublasHandle_t cublas, Workspace& ws, Tensor& out, const Tensor& x,
                       const Tensor& w, const Tensor* bias);
// out (G, M, N)[g] = x (M, K) · w (G * N, K)[g * N, (g + 1) * N)^T + bias (G * N)[g * N, ...) in one
// strided-batched cuBLASLt GEMM; false, with nothing queued, where cuBLASLt does not take the
// operands (the backend then runs one linear per projection).
bool linear_stacked(cudaStream_t stream, cublasHandle_t cublas, Workspace& ws, Tensor& out, const Tensor& x,
                    const Tensor& w, const Tensor* bias);
// rms_norm: out (M, C) = x / sqrt(mean(x^2) + eps) * w (C). out may alias x.
void rms_norm(cudaStream_t stream, Tensor& out, const Tensor& x, const Tensor& w, float eps);

// ---- the GPU engine's ops (one .cu per group, each with its CPU reference named at the top) ----
// Per-step metadata arrives as device int32 arrays built and uploaded once per step by the engine
// (never validated inside a kernel: the generator checked ids and positions before the step).
// Activations are F32, F16 or BF16 (one dtype per run), accumulation is always f32.
//
// A layer's KV cache is two tensors (slots * capacity, n_kv_heads * head_dim), K and V, in the
// cache dtype (F32, F16 or BF16); slot s holds rows [s * capacity, (s + 1) * capacity).

// One step's sequences, device arrays of num_seqs entries.
struct SeqMeta {
  const int32_t* q_begin = nullptr;  // first row of the sequence's queries in q / out
  const int32_t* q_len = nullptr;    // its new tokens this step
  const int32_t* kv_len = nullptr;   // tokens in its cache after this step's were written
  const int32_t* slot = nullptr;     // its KV cache slot
  int num_seqs = 0;
  int max_q_len = 0;  // host-known maxima, for grid sizes
  int max_kv_len = 0;
};

// out (T, C) = table (V, C)[ids[t] + offset]; table F32/F16/BF16, out any float dtype. The offset
// serves OPT's learned positions (table row = position + 2) without a per-step shifted copy.
void embedding(cudaStream_t stream, Tensor& out, const Tensor& table, const int32_t* ids, int32_t offset = 0);
// out (M, C) = (x - mean) / sqrt(var + eps) * w (C) + b (C). out may alias x.
void layer_norm(cudaStream_t stream, Tensor& out, const Tensor& x, const Tensor& w, const Tensor& b, float eps);
// Residual add fused with the next norm: h (M, C) += y (M, C), then out (M, C) = norm(h).
// b null: RMSNorm; else LayerNorm with bias b. One pass over h instead of two.
void add_norm(cudaStream_t stream, Tensor& h, const Tensor& y, Tensor& out, const Tensor& w, const Tensor* b,
              float eps);
// x (M, C) += y (M, C)
void add_(cudaStream_t stream, Tensor& x, const Tensor& y);
// x = act(x) in place
void activation_(cudaStream_t stream, Tensor& x, Act act);
// gate (M, F) = silu(gate) * up (M, F)
void silu_mul_(cudaStream_t stream, Tensor& gate, const Tensor& up);
// out (R, C) = x (T, C)[rows[r]]: the rows that need logits, before the LM head.
void gather_rows(cudaStream_t stream, Tensor& out, const Tensor& x, const int32_t* rows);
// ids[r] = argmax_v logits (R, V)[r, v], lowest index on ties (as the CPU sampler); device int32 out.
void argmax_rows(cudaStream_t stream, int32_t* ids, const Tensor& logits);
// read_probe: reads every byte of x (16-byte aligned); `sink` (device, one word) is never written
// in practice. The memory read rate of the roofline bound is timed over it.
void read_probe(cudaStream_t stream, const Tensor& x, unsigned* sink);
// out = x converted to out's dtype (same element count), rounding to nearest even.
void cast(cudaStream_t stream, Tensor& out, const Tensor& x);
// Rotary embedding in place on x (T, H * head_dim), rotate-half layout, angle = float(positions[t])
// * inv_freq[i] in f32 with cos/sin in f32 (kernels/cpu/rope.cc); inv_freq is a device (head_dim/2).
void rope_(cudaStream_t stream, Tensor& x, int head_dim, const int32_t* positions, const float* inv_freq);
// Appends this step's keys and values: cache row slot_of_row[t] * capacity + pos_of_row[t] = row t of
// k / v (T, n_kv_heads * head_dim), converted to the cache dtype.
void write_kv(cudaStream_t stream, Tensor& k_cache, Tensor& v_cache, int64_t capacity, const Tensor& k, const Tensor& v,
              const int32_t* slot_of_row, const int32_t* pos_of_row);
// Causal attention over the cache for every sequence of the step in one launch (kernels/cpu/attention.cc):
// out (T, n_heads * head_dim) = softmax(scale * q k^T + slope_h * key_pos) v, query i of sequence s at
// position kv_len[s] - q_len[s] + i seeing keys 0..that position; GQA maps query head h to kv head
// h / (n_heads / n_kv_heads). alibi_slopes: device (n_heads) or null. Prefill is tiled
// (FlashAttention-style, no T x T scores in memory); decode (q_len 1) splits long contexts across
// blocks and combines the partial softmaxes, with its scratch in `ws`.
struct AttentionShape {
  int n_heads = 0;
  int n_kv_heads = 0;
  int head_dim = 0;
  float scale = 1.f;
  const float* alibi_slopes = nullptr;
};
void attention(cudaStream_t stream, Workspace& ws, Tensor& out, const Tensor& q, const Tensor& k_cache,
               const Tensor& v_cache, int64_t capacity, const SeqMeta& seqs, const AttentionShape& shape);

// Shape and tier checks shared by the launchers; they throw InternalError naming `op`.
void check_device(const char* op, const char* what, const Tensor& t);
// The 1-D parameter vector `t` (any shape) holds exactly `n` elements.
bool is_gpu_float(DType t);  // F32, F16 or BF16: the element types the CUDA kernels read and write

}  // namespace tiergen::kernels::cuda
