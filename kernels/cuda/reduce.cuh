// Block-wide reductions shared by the row kernels (norm.cu, add_norm.cu).
#pragma once

#include <cuda_runtime.h>

namespace tiergen::kernels::cuda {

inline constexpr int kWarp = 32;

// Sum of `v` over the block, returned to every thread. blockDim.x is a multiple of 32 (at most
// 1024) and every thread of the block calls it. The result is read out of shared memory before a
// last barrier, so the function may be called again at once (LayerNorm's mean, then its variance)
// without a later call's writes racing with a slow warp's read of the earlier sum.
__device__ __forceinline__ float block_sum(float v) {
  __shared__ float partial[kWarp];  // one slot per warp (at most 1024 / 32)
  for (int o = kWarp / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  if (warp == 0) {
    const int n_warps = blockDim.x / kWarp;
    v = lane < n_warps ? partial[lane] : 0.f;
    for (int o = kWarp / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    if (lane == 0) partial[0] = v;
  }
  __syncthreads();
  const float total = partial[0];
  __syncthreads();
  return total;
}

// Threads for one block per row of `items` work items (columns, or packs of columns): about
// `per_thread` items per thread, whole warps, at most 1024 threads.
inline int row_block_threads(long long items, int per_thread) {
  long long t = (items + per_thread * kWarp - 1) / (per_thread * kWarp) * kWarp;
  if (t < kWarp) t = kWarp;
  if (t > 1024) t = 1024;
  return static_cast<int>(t);
}

}  // namespace tiergen::kernels::cuda
