// rms_norm on the GPU. CPU reference: kernels/cpu/norm.cc (rms_norm), which accumulates in double;
// here the sum of squares is accumulated in f32, whose error (at most about C/2 units of f32
// roundoff, relative, on the result) is far below the f16/bf16 rounding of activations and is what
// the conformance test (tests/gpu/cuda_conformance_test.cc) allows for.
#include <algorithm>
#include <limits>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/dtype.cuh"
#include "kernels/cuda/ops.h"
#include "kernels/cuda/reduce.cuh"

namespace tiergen::kernels::cuda {
namespace {

// One block per row. x (M, C), w (C), out (M, C).
// Each thread strides over the row's columns (coalesced across the warp), the block reduces the
// squares, then the same threads scale the same columns: every element is read and written by one
// thread after the barrier, so out may alias x. The row is re-read rather than held in registers;
// for C up to tens of thousands it is still in L1/L2 on the second pass.
template <typename Tx, typename Tw, typename To>
__global__ void rms_norm_kernel(To* out, const Tx* x, const Tw* __restrict__ w, int C, float eps) {
  const Tx* xr = x + static_cast<size_t>(blockIdx.x) * C;
  To* orow = out + static_cast<size_t>(blockIdx.x) * C;
  float ss = 0.f;
  for (int c = threadIdx.x; c < C; c += blockDim.x) {
    const float v = load_f32(xr[c]);
    ss = fmaf(v, v, ss);
  }
  ss = block_sum(ss);
  const float inv = rsqrtf(ss / static_cast<float>(C) + eps);
  // Same association as the reference: w * (x * inv).
  for (int c = threadIdx.x; c < C; c += blockDim.x) orow[c] = store_as<To>(load_f32(w[c]) * (load_f32(xr[c]) * inv));
}

}  // namespace

void rms_norm(cudaStream_t stream, Tensor& out, const Tensor& x, const Tensor& w, float eps) {
  static constexpr const char* op = "rms_norm";
  check_device(op, "out", out);
  check_device(op, "x", x);
  check_device(op, "w", w);
  check_2d(op, "x", x, -1, -1);
  const int64_t M = x.dim(0), C = x.dim(1);
  check_2d(op, "out", out, M, C);
  check_numel(op, "w", w, C);
  if (M == 0 || C == 0) return;
  if (M > std::numeric_limits<int>::max() || C > std::numeric_limits<int>::max())
    throw UnsupportedError("rms_norm: " + x.describe() + " is too large for one launch");
  // About four columns per thread, whole warps, at most 1024 threads.
  const int threads = static_cast<int>(std::clamp<int64_t>((C + 4 * kWarp - 1) / (4 * kWarp) * kWarp, kWarp, 1024));
  dispatch_float(x.dtype(), op, [&](auto tx) {
    dispatch_float(w.dtype(), op, [&](auto tw) {
      dispatch_float(out.dtype(), op, [&](auto to) {
        using Tx = typename decltype(tx)::type;
        using Tw = typename decltype(tw)::type;
        using To = typename decltype(to)::type;
        rms_norm_kernel<Tx, Tw, To><<<static_cast<unsigned>(M), threads, 0, stream>>>(
            out.data<To>(), x.data<Tx>(), w.data<Tw>(), static_cast<int>(C), eps);
        CUDA_CHECK_LAUNCH();
      });
    });
  });
}

}  // namespace tiergen::kernels::cuda
