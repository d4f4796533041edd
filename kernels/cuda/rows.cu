// Whole-row ops on the GPU: embedding and gather_rows (row gathers; CPU references
// kernels/cpu/elementwise.cc embedding and the CPU backend's gather_rows) and argmax_rows (greedy
// decoding; reference runtime/generate/sampler.cc argmax, std::max_element over the f32 logits).
#include <algorithm>
#include <climits>
#include <limits>
#include <string>
#include <type_traits>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/dtype.cuh"
#include "kernels/cuda/ops.h"
#include "kernels/cuda/reduce.cuh"
#include "kernels/cuda/vec.cuh"

namespace tiergen::kernels::cuda {
namespace {

// out (R, C)[r] = src (*, C)[idx[r] + offset], converted to out's dtype (bit for bit when the dtypes
// agree).
// One block per output row, V columns per pack (1 when the rows are not pack-aligned). Indices
// are not checked (ops.h: the generator checked them before the step).
template <int V, typename Ts, typename To>
__global__ void gather_rows_kernel(To* out, const Ts* __restrict__ src, const int32_t* __restrict__ idx, int32_t offset,
                                   int C) {
  const Ts* s = src + static_cast<size_t>(idx[blockIdx.x] + offset) * C;
  To* o = out + static_cast<size_t>(blockIdx.x) * C;
  for (int p = threadIdx.x; p < C / V; p += blockDim.x) {
    if constexpr (std::is_same_v<Ts, To>) {  // a copy: no round trip through f32 (NaN payloads kept)
      *reinterpret_cast<Pack<To, V>*>(o + p * V) = *reinterpret_cast<const Pack<Ts, V>*>(s + p * V);
    } else {
      float f[V];
      load_pack<V>(s + p * V, f);
      store_pack<V>(o + p * V, f);
    }
  }
}

// Queues out (R, C) = src (*, C)[idx (R) + offset] for embedding and gather_rows.
void gather(cudaStream_t stream, const char* op, Tensor& out, const Tensor& src, const int32_t* idx, int32_t offset) {
  const int64_t R = out.dim(0), C = out.dim(1);
  if (R == 0 || C == 0) return;
  if (!idx) throw InternalError(std::string(op) + ": null row indices for " + out.describe());
  if (R > std::numeric_limits<int>::max() || C > std::numeric_limits<int>::max())
    throw UnsupportedError(std::string(op) + ": " + out.describe() + " is too large for one launch");
  dispatch_float(src.dtype(), op, [&](auto ts) {
    dispatch_float(out.dtype(), op, [&](auto to) {
      using Ts = typename decltype(ts)::type;
      using To = typename decltype(to)::type;
      constexpr int V = pack_width<Ts, To>();
      const bool packed = C % V == 0 && pack_aligned<V>(src.data<Ts>()) && pack_aligned<V>(out.data<To>());
      const auto grid = static_cast<unsigned>(R);
      // Whole warps, about one pack (or one column) per thread, at most 256: rows are short copies.
      if (packed)
        gather_rows_kernel<V><<<grid, std::min(row_block_threads(C / V, 1), 256), 0, stream>>>(
            out.data<To>(), src.data<Ts>(), idx, offset, static_cast<int>(C));
      else
        gather_rows_kernel<1><<<grid, std::min(row_block_threads(C, 1), 256), 0, stream>>>(
            out.data<To>(), src.data<Ts>(), idx, offset, static_cast<int>(C));
      CUDA_CHECK_LAUNCH();
    });
  });
}

// The better of two candidates (value, column): the larger value, the lower column on a tie. A
// candidate with column INT_MAX and value -inf is "none yet": any real column beats it.
__device__ __forceinline__ bool better(float v, int i, float best_v, int best_i) {
  return v > best_v || (v == best_v && i < best_i);
}

// ids[r] = argmax of logits (R, Vn)[r], one block per row, V columns per pack.
// NaN, as std::max_element(begin, end) treats it with operator<: it keeps the first element until
// it finds one that compares greater, and NaN compares false both ways. So a NaN in column 0 is
// never replaced (the answer is 0), and a NaN anywhere else is never taken. Here: a NaN in column
// 0 answers 0 at once; elsewhere `better` is false for NaN (both comparisons fail), so it is
// skipped. The order in which the block meets the columns does not matter: `better` is a strict
// total order on (value, column) for the non-NaN values, ties going to the lower column, and +0 and
// -0 compare equal as they do on the CPU.
template <int V, typename T>
__global__ void argmax_rows_kernel(int32_t* ids, const T* __restrict__ logits, int Vn) {
  const T* row = logits + static_cast<size_t>(blockIdx.x) * Vn;
  if (isnan(load_f32(row[0]))) {  // the same value for every thread: the whole block returns
    if (threadIdx.x == 0) ids[blockIdx.x] = 0;
    return;
  }
  float best = -INFINITY;
  int best_i = INT_MAX;
  for (int p = threadIdx.x; p < Vn / V; p += blockDim.x) {
    float f[V];
    load_pack<V>(row + p * V, f);
#pragma unroll
    for (int i = 0; i < V; ++i)
      if (better(f[i], p * V + i, best, best_i)) best = f[i], best_i = p * V + i;
  }
  for (int o = kWarp / 2; o > 0; o >>= 1) {
    const float v = __shfl_xor_sync(0xffffffffu, best, o);
    const int i = __shfl_xor_sync(0xffffffffu, best_i, o);
    if (better(v, i, best, best_i)) best = v, best_i = i;
  }
  __shared__ float part_v[kWarp];
  __shared__ int part_i[kWarp];
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  if (lane == 0) part_v[warp] = best, part_i[warp] = best_i;
  __syncthreads();
  if (warp == 0) {
    const bool have = lane < static_cast<int>(blockDim.x / kWarp);
    best = have ? part_v[lane] : -INFINITY;
    best_i = have ? part_i[lane] : INT_MAX;
    for (int o = kWarp / 2; o > 0; o >>= 1) {
      const float v = __shfl_xor_sync(0xffffffffu, best, o);
      const int i = __shfl_xor_sync(0xffffffffu, best_i, o);
      if (better(v, i, best, best_i)) best = v, best_i = i;
    }
    // Column 0 is not NaN, so some column was a candidate and best_i is a real column.
    if (lane == 0) ids[blockIdx.x] = best_i;
  }
}

}  // namespace

void embedding(cudaStream_t stream, Tensor& out, const Tensor& table, const int32_t* ids, int32_t offset) {
  static constexpr const char* op = "embedding";
  check_device(op, "out", out);
  check_device(op, "table", table);
  check_2d(op, "table", table, -1, -1);
  check_2d(op, "out", out, -1, table.dim(1));
  gather(stream, op, out, table, ids, offset);
}

void gather_rows(cudaStream_t stream, Tensor& out, const Tensor& x, const int32_t* rows) {
  static constexpr const char* op = "gather_rows";
  check_device(op, "out", out);
  check_device(op, "x", x);
  check_2d(op, "x", x, -1, -1);
  check_2d(op, "out", out, -1, x.dim(1));
  gather(stream, op, out, x, rows, 0);
}

void argmax_rows(cudaStream_t stream, int32_t* ids, const Tensor& logits) {
  static constexpr const char* op = "argmax_rows";
  check_device(op, "logits", logits);
  check_2d(op, "logits", logits, -1, -1);
  const int64_t R = logits.dim(0), Vn = logits.dim(1);
  if (R == 0) return;
  if (Vn == 0) throw InternalError("argmax_rows: logits " + logits.describe() + " has no columns");
  if (!ids) throw InternalError("argmax_rows: null ids for " + logits.describe());
  if (R > std::numeric_limits<int>::max() || Vn > std::numeric_limits<int>::max())
    throw UnsupportedError("argmax_rows: " + logits.describe() + " is too large for one launch");
  dispatch_float(logits.dtype(), op, [&](auto tl) {
    using T = typename decltype(tl)::type;
    constexpr int V = pack_width<T>();
    const bool packed = Vn % V == 0 && pack_aligned<V>(logits.data<T>());
    const auto grid = static_cast<unsigned>(R);
    // A vocabulary row (32k-256k) is long: about four packs per thread, up to 1024 threads.
    if (packed)
      argmax_rows_kernel<V>
          <<<grid, row_block_threads(Vn / V, 4), 0, stream>>>(ids, logits.data<T>(), static_cast<int>(Vn));
    else
      argmax_rows_kernel<1><<<grid, row_block_threads(Vn, 4), 0, stream>>>(ids, logits.data<T>(), static_cast<int>(Vn));
    CUDA_CHECK_LAUNCH();
  });
}

}  // namespace tiergen::kernels::cuda
