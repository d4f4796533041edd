// rms_norm and layer_norm on the GPU: one row kernel for both. CPU reference: kernels/cpu/norm.cc,
// which takes its sums in double.
//  - layer_norm: the mean and the variance as f32 sums over the row, two passes (the mean first,
//    then the squares of x - mean), so a row with a large offset (|mean| >> its spread) does not
//    lose its variance to cancellation as the one-pass E[x^2] - mean^2 would. The f32 sums err by
//    at most about C units of f32 roundoff on the mean and C/2 on 1/std, which
//    tests/gpu/cuda_elementwise_test.cc derives its tolerance from.
//  - rms_norm: the sum of squares in f32, whose error (at most about C/2 units of f32 roundoff,
//    relative, on the result) is far below the f16/bf16 rounding of activations and is what
//    tests/gpu/cuda_conformance_test.cc allows for.
#include <limits>
#include <string>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/dtype.cuh"
#include "kernels/cuda/norm.cuh"
#include "kernels/cuda/ops.h"
#include "kernels/cuda/reduce.cuh"
#include "kernels/cuda/vec.cuh"

namespace tiergen::kernels::cuda {
namespace {

// One block per row. x (M, C), w (C), b (C, LayerNorm only), out (M, C); V columns per pack (V = 1
// when the rows are not pack-aligned). LayerNorm: sum, squares about the mean, output; RMSNorm:
// squares, output. Every column is read and written by the same thread, and the last pass follows
// the reductions' barriers, so out may alias x. The row is re-read rather than held in registers:
// it is in L1/L2.
template <bool kRms, int V, typename Tx, typename Tw, typename To>
__global__ void norm_kernel(To* out, const Tx* x, const Tw* __restrict__ w, const Tw* __restrict__ b, int C,
                            float eps) {
  const Tx* xr = x + static_cast<size_t>(blockIdx.x) * C;
  To* orow = out + static_cast<size_t>(blockIdx.x) * C;
  const int packs = C / V;
  float mean = 0.f;
  if constexpr (!kRms) {
    float sum = 0.f;
    for (int p = threadIdx.x; p < packs; p += blockDim.x) {
      float f[V];
      load_pack<V>(xr + p * V, f);
#pragma unroll
      for (int i = 0; i < V; ++i) sum += f[i];
    }
    mean = block_sum(sum) / static_cast<float>(C);
  }
  const float inv = rsqrtf(block_sum(row_squares<V>(xr, packs, mean)) / static_cast<float>(C) + eps);
  store_normalized<!kRms, V>(orow, xr, w, b, packs, mean, inv);
}

// Checks the operands shared by both norms and launches the kernel; `b` is null for RMSNorm.
template <bool kRms>
void launch_norm(cudaStream_t stream, const char* op, Tensor& out, const Tensor& x, const Tensor& w, const Tensor* b,
                 float eps) {
  check_device(op, "out", out);
  check_device(op, "x", x);
  check_device(op, "w", w);
  check_2d(op, "x", x, -1, -1);
  const int64_t M = x.dim(0), C = x.dim(1);
  check_2d(op, "out", out, M, C);
  check_norm_weights(op, w, b, C);
  // out may be x itself; any other overlap (or x's bytes read as another dtype) races across rows.
  if (overlaps(out, x) && (out.raw() != x.raw() || out.dtype() != x.dtype()))
    throw InternalError(std::string(op) + ": out " + out.describe() + " partly overlaps x " + x.describe());
  if (M == 0 || C == 0) return;
  check_row_launch(op, x, M, C);
  dispatch_float(x.dtype(), op, [&](auto tx) {
    dispatch_float(w.dtype(), op, [&](auto tw) {
      dispatch_float(out.dtype(), op, [&](auto to) {
        using Tx = typename decltype(tx)::type;
        using Tw = typename decltype(tw)::type;
        using To = typename decltype(to)::type;
        constexpr int V = pack_width<Tx, Tw, To>();
        const Tw* bias = b ? b->data<Tw>() : nullptr;
        const bool packed = C % V == 0 && pack_aligned<V>(x.data<Tx>()) && pack_aligned<V>(out.data<To>()) &&
                            pack_aligned<V>(w.data<Tw>()) && (!b || pack_aligned<V>(bias));
        const unsigned grid = static_cast<unsigned>(M);
        if (packed) {  // about one pack per thread: short rows (decode) finish in one sweep
          norm_kernel<kRms, V, Tx, Tw, To><<<grid, row_block_threads(C / V, 1), 0, stream>>>(
              out.data<To>(), x.data<Tx>(), w.data<Tw>(), bias, static_cast<int>(C), eps);
        } else {
          norm_kernel<kRms, 1, Tx, Tw, To><<<grid, row_block_threads(C, 4), 0, stream>>>(
              out.data<To>(), x.data<Tx>(), w.data<Tw>(), bias, static_cast<int>(C), eps);
        }
        CUDA_CHECK_LAUNCH();
      });
    });
  });
}

}  // namespace

void rms_norm(cudaStream_t stream, Tensor& out, const Tensor& x, const Tensor& w, float eps) {
  launch_norm<true>(stream, "rms_norm", out, x, w, nullptr, eps);
}

void layer_norm(cudaStream_t stream, Tensor& out, const Tensor& x, const Tensor& w, const Tensor& b, float eps) {
  launch_norm<false>(stream, "layer_norm", out, x, w, &b, eps);
}

}  // namespace tiergen::kernels::cuda
