// add_norm on the GPU: the residual add fused with the next layer's norm. CPU reference: the two
// ops it replaces, kernels/cpu/elementwise.cc (add_) then kernels/cpu/norm.cc (rms_norm or
// layer_norm). The updated residual h is rounded to its dtype before the norm reads it, so the
// result is the one the unfused pair gives (add_ stores h, the norm loads it); only the
// accumulation order of the row sums differs from norm.cu.
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

// One block per row. h (M, C) += y (M, C), then out (M, C) = norm(h) with w (C) and, for
// LayerNorm (kLayer), b (C). V columns per pack (1 when the rows are not pack-aligned).
// Pass 1 writes h and accumulates the first statistic (the sum of squares for RMSNorm, the sum for
// LayerNorm); LayerNorm's second pass re-reads h for the squares about the mean; the last pass
// re-reads h and writes out. A thread re-reads only the columns it wrote itself, so no barrier is
// needed for h. y is read only in pass 1, before the reductions' barriers, so out may alias y; out
// must not alias h (the launcher checks), which is still read in the last pass.
template <bool kLayer, int V, typename Th, typename Tw, typename To>
__global__ void add_norm_kernel(Th* h, const Th* y, To* out, const Tw* __restrict__ w, const Tw* __restrict__ b, int C,
                                float eps) {
  const size_t row = static_cast<size_t>(blockIdx.x) * C;
  Th* hr = h + row;
  const Th* yr = y + row;
  To* orow = out + row;
  const int packs = C / V;
  float acc = 0.f;
  for (int p = threadIdx.x; p < packs; p += blockDim.x) {
    float f[V], g[V];
    load_pack<V>(hr + p * V, f);
    load_pack<V>(yr + p * V, g);
#pragma unroll
    for (int i = 0; i < V; ++i) {
      f[i] = round_to<Th>(f[i] + g[i]);  // the value h holds from now on
      acc = kLayer ? acc + f[i] : fmaf(f[i], f[i], acc);
    }
    store_pack<V>(hr + p * V, f);  // exact: f is already representable in Th
  }
  acc = block_sum(acc);
  float mean = 0.f, inv;
  if constexpr (kLayer) {
    mean = acc / static_cast<float>(C);
    inv = rsqrtf(block_sum(row_squares<V>(hr, packs, mean)) / static_cast<float>(C) + eps);
  } else {
    inv = rsqrtf(acc / static_cast<float>(C) + eps);
  }
  store_normalized<kLayer, V>(orow, hr, w, b, packs, mean, inv);
}

}  // namespace

void add_norm(cudaStream_t stream, Tensor& h, const Tensor& y, Tensor& out, const Tensor& w, const Tensor* b,
              float eps) {
  static constexpr const char* op = "add_norm";
  check_device(op, "h", h);
  check_device(op, "y", y);
  check_device(op, "out", out);
  check_device(op, "w", w);
  check_2d(op, "h", h, -1, -1);
  const int64_t M = h.dim(0), C = h.dim(1);
  check_2d(op, "y", y, M, C);
  check_2d(op, "out", out, M, C);
  check_norm_weights(op, w, b, C);
  if (y.dtype() != h.dtype())
    throw UnsupportedError("add_norm: h " + h.describe() + " and y " + y.describe() +
                           " of different dtypes are not supported on the CUDA backend");
  if (overlaps(out, h)) throw InternalError("add_norm: out " + out.describe() + " overlaps h " + h.describe());
  // out may be y itself; any other overlap (or y's bytes read as another dtype) races across rows.
  if (overlaps(out, y) && (out.raw() != y.raw() || out.dtype() != y.dtype()))
    throw InternalError("add_norm: out " + out.describe() + " partly overlaps y " + y.describe());
  if (M == 0 || C == 0) return;
  check_row_launch(op, h, M, C);
  dispatch_float(h.dtype(), op, [&](auto th) {
    dispatch_float(w.dtype(), op, [&](auto tw) {
      dispatch_float(out.dtype(), op, [&](auto to) {
        using Th = typename decltype(th)::type;
        using Tw = typename decltype(tw)::type;
        using To = typename decltype(to)::type;
        constexpr int V = pack_width<Th, Tw, To>();
        const Tw* bp = b ? b->data<Tw>() : nullptr;
        const bool packed = C % V == 0 && pack_aligned<V>(h.data<Th>()) && pack_aligned<V>(y.data<Th>()) &&
                            pack_aligned<V>(out.data<To>()) && pack_aligned<V>(w.data<Tw>()) &&
                            (!bp || pack_aligned<V>(bp));
        // About one pack per thread when packed (short rows finish in one sweep), else four columns.
        const int threads = packed ? row_block_threads(C / V, 1) : row_block_threads(C, 4);
        const unsigned grid = static_cast<unsigned>(M);
        const auto launch = [&](auto kernel) {
          kernel<<<grid, threads, 0, stream>>>(h.data<Th>(), y.data<Th>(), out.data<To>(), w.data<Tw>(), bp,
                                               static_cast<int>(C), eps);
          CUDA_CHECK_LAUNCH();
        };
        if (b && packed)
          launch(add_norm_kernel<true, V, Th, Tw, To>);
        else if (b)
          launch(add_norm_kernel<true, 1, Th, Tw, To>);
        else if (packed)
          launch(add_norm_kernel<false, V, Th, Tw, To>);
        else
          launch(add_norm_kernel<false, 1, Th, Tw, To>);
      });
    });
  });
}

}  // namespace tiergen::kernels::cuda
