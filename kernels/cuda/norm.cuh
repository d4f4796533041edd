// What the norm kernels share: rms_norm / layer_norm (norm.cu) and add_norm (add_norm.cu). The pass
// over a row's squares, the pass that writes the normalised row (in the CPU references'
// associations, kernels/cpu/norm.cc), and the launchers' checks of w, b and the launch size.
#pragma once

#include <limits>
#include <string>

#include "kernels/cuda/ops.h"
#include "kernels/cuda/vec.cuh"

namespace tiergen::kernels::cuda {

// This thread's part of sum((x - mean)^2) over a row of `packs` packs of V; mean 0 gives RMSNorm's
// sum of squares (x - 0 is x exactly).
template <int V, typename T>
__device__ __forceinline__ float row_squares(const T* xr, int packs, float mean) {
  float sq = 0.f;
  for (int p = threadIdx.x; p < packs; p += blockDim.x) {
    float f[V];
    load_pack<V>(xr + p * V, f);
#pragma unroll
    for (int i = 0; i < V; ++i) {
      const float d = f[i] - mean;
      sq = fmaf(d, d, sq);
    }
  }
  return sq;
}

// out row = the normalised x row, each column by the thread that owns it: w * (x * inv) for RMSNorm,
// ((x - mean) * inv) * w + b for LayerNorm (kLayer).
template <bool kLayer, int V, typename Tx, typename Tw, typename To>
__device__ __forceinline__ void store_normalized(To* orow, const Tx* xr, const Tw* __restrict__ w,
                                                 const Tw* __restrict__ b, int packs, float mean, float inv) {
  for (int p = threadIdx.x; p < packs; p += blockDim.x) {
    float f[V], wf[V];
    load_pack<V>(xr + p * V, f);
    load_pack<V>(w + p * V, wf);
    if constexpr (kLayer) {
      float bf[V];
      load_pack<V>(b + p * V, bf);
#pragma unroll
      for (int i = 0; i < V; ++i) f[i] = (f[i] - mean) * inv * wf[i] + bf[i];
    } else {
#pragma unroll
      for (int i = 0; i < V; ++i) f[i] = wf[i] * (f[i] * inv);
    }
    store_pack<V>(orow + p * V, f);
  }
}

// w (C) and, for LayerNorm, b (C) on the device, of w's dtype (one checkpoint stores both, and one
// type keeps the kernels' instantiations at 27 dtype combinations). w's device is checked by the caller.
inline void check_norm_weights(const char* op, const Tensor& w, const Tensor* b, int64_t C) {
  check_numel(op, "w", w, C);
  if (!b) return;
  check_device(op, "b", *b);
  check_numel(op, "b", *b, C);
  if (b->dtype() != w.dtype())
    throw UnsupportedError(std::string(op) + ": w " + w.describe() + " and b " + b->describe() +
                           " of different dtypes are not supported on the CUDA backend");
}

// A launch of one block per row and int column indices: `rows` (M, C) must fit them.
inline void check_row_launch(const char* op, const Tensor& rows, int64_t M, int64_t C) {
  if (M > std::numeric_limits<int>::max() || C > std::numeric_limits<int>::max())
    throw UnsupportedError(std::string(op) + ": " + rows.describe() + " is too large for one launch");
}

}  // namespace tiergen::kernels::cuda
