// Internals of attention (kernels/cuda/attention.cu): the arguments its launcher resolves, the
// decode and prefill paths it dispatches to (attention_decode.cu, attention_prefill.cu,
// attention_prefill_simt.cu) and the device helpers they share (tensor-core ones:
// attention_mma.cuh). Not part of ops.h: the engine calls cuda::attention only. CPU reference of
// every kernel here: kernels/cpu/attention.cc.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "kernels/cuda/dtype.cuh"
#include "kernels/cuda/ops.h"

namespace tiergen::kernels::cuda::attn {

// The call as the kernels take it, after attention() checked it. Row strides are n_heads * head_dim
// (q, out) and n_kv_heads * head_dim (caches); every pointer is 16-byte aligned.
struct Args {
  void* out = nullptr;      // (T, n_heads * head_dim), q's dtype
  const void* q = nullptr;  // (T, n_heads * head_dim)
  const void* k = nullptr;  // (slots * capacity, n_kv_heads * head_dim), the cache dtype
  const void* v = nullptr;  // same
  int64_t capacity = 0;
  SeqMeta seqs;
  int n_heads = 0, n_kv_heads = 0, head_dim = 0;
  float scale = 1.f;
  const float* slopes = nullptr;  // (n_heads) or null
};

// Sequences with q_len == 1 (flash-decoding: keys split across blocks, partial softmaxes combined
// by a second kernel; scratch from `ws`). SIMT, or tensor cores (attention_mma.cuh) for shared kv
// heads with q and cache both F16 or both BF16 and a head dim that mma_head_dim() accepts. Other
// sequences are left to prefill().
void decode(cudaStream_t stream, Workspace& ws, const Args& a, DType act, DType cache);
// Sequences with q_len > 1. Tensor cores (mma.sync, attention_prefill.cu) when q and the cache are
// both F16 or both BF16 and mma_head_dim(head_dim); otherwise the f32 SIMT kernel
// (attention_prefill_simt.cu).
void prefill(cudaStream_t stream, const Args& a, DType act, DType cache);
void prefill_simt(cudaStream_t stream, const Args& a, DType act, DType cache);

// The head dims attention() takes (its check lists them in its error message). Each is a multiple
// of 8, so a head's row is a whole number of 16-byte pieces in F16/BF16 (and in F32), which the
// 16-byte loads of every kernel need.
constexpr bool supported_head_dim(int head_dim) {
  switch (head_dim) {
    case 8:
    case 16:
    case 32:
    case 64:
    case 80:
    case 96:
    case 128:
    case 256:
      return true;
    default:
      return false;
  }
}

// Whether the tensor-core kernels (prefill_mma, decode_mma) can take a head dim: Q K^T steps over
// the head dim in mma.m16n8k16 k-slices of 16 (and P V in n-slices of 8). Head dim 8 has no whole
// k-slice, so it goes to the SIMT kernels whatever the dtypes (attention_prefill.cu's prefill(),
// attention_decode.cu's decode()).
constexpr bool mma_head_dim(int head_dim) { return head_dim % 16 == 0; }

// Calls f(std::integral_constant<int, D>{}) for the supported head dims; false for any other.
// Every kernel instantiated through it must work for each of these D (or skip those it cannot
// take with `if constexpr`, as the tensor-core launchers do with mma_head_dim).
template <typename F>
bool dispatch_head_dim(int head_dim, F&& f) {
  switch (head_dim) {
    case 8:
      f(std::integral_constant<int, 8>{});
      return true;
    case 16:
      f(std::integral_constant<int, 16>{});
      return true;
    case 32:
      f(std::integral_constant<int, 32>{});
      return true;
    case 64:
      f(std::integral_constant<int, 64>{});
      return true;
    case 80:
      f(std::integral_constant<int, 80>{});
      return true;
    case 96:
      f(std::integral_constant<int, 96>{});
      return true;
    case 128:
      f(std::integral_constant<int, 128>{});
      return true;
    case 256:
      f(std::integral_constant<int, 256>{});
      return true;
    default:
      return false;
  }
}

// ---- device helpers ----

// N consecutive elements at p widened to f32, read in 16-byte (or, for 8-byte runs, 8-byte)
// pieces; p is aligned to the size of the run.
template <int N, typename T>
__device__ __forceinline__ void load_vec(const T* __restrict__ p, float (&f)[N]) {
  constexpr int kBytes = N * static_cast<int>(sizeof(T));
  if constexpr (kBytes % 16 == 0) {
    constexpr int kPer = 16 / sizeof(T);
#pragma unroll
    for (int i = 0; i < kBytes / 16; ++i) {
      const uint4 w = reinterpret_cast<const uint4*>(p)[i];
      const T* e = reinterpret_cast<const T*>(&w);
#pragma unroll
      for (int j = 0; j < kPer; ++j) f[i * kPer + j] = load_f32(e[j]);
    }
  } else {
    static_assert(kBytes % 8 == 0, "load_vec reads 8- or 16-byte pieces");
    constexpr int kPer = 8 / sizeof(T);
#pragma unroll
    for (int i = 0; i < kBytes / 8; ++i) {
      const uint2 w = reinterpret_cast<const uint2*>(p)[i];
      const T* e = reinterpret_cast<const T*>(&w);
#pragma unroll
      for (int j = 0; j < kPer; ++j) f[i * kPer + j] = load_f32(e[j]);
    }
  }
}

// The 16 bytes of a uint4 as f32 elements of T (16 / sizeof(T) of them).
template <typename T>
__device__ __forceinline__ void widen16(const uint4& w, float* f) {
  const T* e = reinterpret_cast<const T*>(&w);
#pragma unroll
  for (int j = 0; j < static_cast<int>(16 / sizeof(T)); ++j) f[j] = load_f32(e[j]);
}

// Softmax bookkeeping: the exponent base is m, or 0 while m is still -inf (nothing seen yet), so
// exp(x - base) is 0, never NaN, for x = -inf.
__device__ __forceinline__ float safe_base(float m) { return m == -INFINITY ? 0.f : m; }

}  // namespace tiergen::kernels::cuda::attn
