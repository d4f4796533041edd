// rope_ on the GPU. CPU reference: kernels/cpu/rope.cc. Rotate-half layout (HF Llama/Qwen2/Mistral):
// in every head of row t, the pair (x_i, x_{i+D/2}) is rotated by angle = float(positions[t]) *
// inv_freq[i], formed in f32 with cos/sin taken in f32, as the reference does. cosf/sinf here are
// CUDA's accurate ones (at most 2 ulp, full range reduction; this file is built without fast-math),
// not __cosf/__sinf, whose error grows with the angle: positions run to the thousands. The angle
// and the rotation use explicitly rounded operations (__fmul_rn, __fadd_rn, __fsub_rn) so nvcc does
// not contract them into FMAs: each step rounds exactly as the reference's separate f32 operations.
#include <algorithm>
#include <limits>
#include <string>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/dtype.cuh"
#include "kernels/cuda/ops.h"
#include "kernels/cuda/vec.cuh"

namespace tiergen::kernels::cuda {
namespace {

constexpr int kThreads = 128;

// Block (t, y) of a grid (T, Y): row t of x (T, H * D). The row's D/2 (cos, sin) pairs are computed
// into shared memory (by each of the row's Y blocks: D/2 sincos are cheap next to the row), then the
// block rotates its share of the row's packs: a pack is V consecutive pairs (x_i.., x_{i+D/2}..) of
// one head. Decode steps have few rows, so a row is split over Y blocks to fill the GPU; prefill
// rows are many and Y is 1. In place: each element is read and written by one thread.
template <int V, typename T>
__global__ void __launch_bounds__(kThreads)
    rope_kernel(T* x, int64_t ld, int n_packs, int n_half, const int32_t* __restrict__ positions,
                const float* __restrict__ inv_freq) {
  extern __shared__ float cs[];  // cos (n_half), then sin (n_half)
  const float pos = static_cast<float>(positions[blockIdx.x]);
  for (int i = threadIdx.x; i < n_half; i += kThreads) {
    const float angle = __fmul_rn(pos, inv_freq[i]);
    cs[i] = cosf(angle);
    cs[n_half + i] = sinf(angle);
  }
  __syncthreads();
  T* row = x + static_cast<int64_t>(blockIdx.x) * ld;
  const int packs_per_head = n_half / V;
  for (int p = blockIdx.y * kThreads + threadIdx.x; p < n_packs; p += gridDim.y * kThreads) {
    const int h = p / packs_per_head, i0 = (p % packs_per_head) * V;
    T* v = row + static_cast<int64_t>(h) * 2 * n_half + i0;
    float a[V], b[V];
    load_pack<V>(v, a);
    load_pack<V>(v + n_half, b);
#pragma unroll
    for (int j = 0; j < V; ++j) {
      const float c = cs[i0 + j], s = cs[n_half + i0 + j];
      const float ra = __fsub_rn(__fmul_rn(a[j], c), __fmul_rn(b[j], s));
      const float rb = __fadd_rn(__fmul_rn(b[j], c), __fmul_rn(a[j], s));
      a[j] = ra;
      b[j] = rb;
    }
    store_pack<V>(v, a);
    store_pack<V>(v + n_half, b);
  }
}

}  // namespace

void rope_(cudaStream_t stream, Tensor& x, int head_dim, const int32_t* positions, const float* inv_freq) {
  static constexpr const char* op = "rope_";
  check_device(op, "x", x);
  if (x.rank() != 2 || head_dim <= 0 || head_dim % 2 != 0 || x.dim(1) % head_dim != 0)
    throw InternalError("rope_: x " + x.describe() + " is not (T, H * head_dim) with an even head_dim " +
                        std::to_string(head_dim));
  const int64_t T = x.dim(0), H = x.dim(1) / head_dim;
  if (T == 0 || H == 0) return;
  if (!positions || !inv_freq) throw InternalError("rope_: positions or inv_freq is null");
  const int n_half = head_dim / 2;
  if (T > std::numeric_limits<int>::max() || H * n_half > std::numeric_limits<int>::max())
    throw UnsupportedError("rope_: " + x.describe() + " is too large for one launch");
  const size_t smem = 2 * static_cast<size_t>(n_half) * sizeof(float);
  if (smem > 48 * 1024) throw UnsupportedError("rope_: head_dim " + std::to_string(head_dim) + " is too large");
  dispatch_float(x.dtype(), op, [&](auto tx) {
    using Tx = typename decltype(tx)::type;
    constexpr int V = pack_width<Tx>();
    // Packs of V pairs where each half of a head is whole packs and the rows are pack-aligned.
    const bool packed = n_half % V == 0 && x.dim(1) % V == 0 && pack_aligned<V>(x.data<Tx>());
    const int vw = packed ? V : 1;
    const int64_t n_packs = H * n_half / vw;
    // Blocks per row: enough rows x blocks to give every SM a few, no more blocks than packs need.
    const int64_t want = (4 * static_cast<int64_t>(sm_count()) + T - 1) / T;
    const auto y = static_cast<unsigned>(std::clamp<int64_t>(want, 1, (n_packs + kThreads - 1) / kThreads));
    const dim3 grid(static_cast<unsigned>(T), y);
    if (packed)
      rope_kernel<V, Tx><<<grid, kThreads, smem, stream>>>(x.data<Tx>(), x.dim(1), static_cast<int>(n_packs), n_half,
                                                           positions, inv_freq);
    else
      rope_kernel<1, Tx><<<grid, kThreads, smem, stream>>>(x.data<Tx>(), x.dim(1), static_cast<int>(n_packs), n_half,
                                                           positions, inv_freq);
    CUDA_CHECK_LAUNCH();
  });
}

}  // namespace tiergen::kernels::cuda
