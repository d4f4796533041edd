// rope_ on the GPU. CPU reference: kernels/cpu/rope.cc. Rotate-half layout (HF Llama/Qwen2/Mistral):
// in every head of row t, the pair (x_i, x_{i+D/2}) is rotated by angle = float(positions[t]) *
// inv_freq[i], formed in f32 with cos/sin taken in f32, as the reference does. cosf/sinf here are
// CUDA's accurate ones (at most 2 ulp, full range reduction; this file is built without fast-math),
// not __cosf/__sinf, whose error grows with the angle: positions run to the thousands. The angle
// and the rotation use explicitly rounded operations (__fmul_rn, __fadd_rn, __fsub_rn) so nvcc does
// not contract them into FMAs: each step rounds exactly as the reference's separate f32 operations.
#include <limits>
#include <string>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/dtype.cuh"
#include "kernels/cuda/ops.h"

namespace tiergen::kernels::cuda {
namespace {

constexpr int kThreads = 128;

// One block per row t of x (T, H * D). The row's D/2 (cos, sin) pairs are computed once into
// shared memory, then the block rotates all H heads' pairs. In place: each element is read and
// written by one thread.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    rope_kernel(T* x, int64_t ld, int n_pairs, int n_half, const int32_t* __restrict__ positions,
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
  for (int p = threadIdx.x; p < n_pairs; p += kThreads) {
    const int h = p / n_half, i = p % n_half;
    T* v = row + static_cast<int64_t>(h) * 2 * n_half;
    const float a = load_f32(v[i]), b = load_f32(v[i + n_half]);
    const float c = cs[i], s = cs[n_half + i];
    v[i] = store_as<T>(__fsub_rn(__fmul_rn(a, c), __fmul_rn(b, s)));
    v[i + n_half] = store_as<T>(__fadd_rn(__fmul_rn(b, c), __fmul_rn(a, s)));
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
    rope_kernel<Tx><<<static_cast<unsigned>(T), kThreads, smem, stream>>>(
        x.data<Tx>(), x.dim(1), static_cast<int>(H * n_half), n_half, positions, inv_freq);
    CUDA_CHECK_LAUNCH();
  });
}

}  // namespace tiergen::kernels::cuda
