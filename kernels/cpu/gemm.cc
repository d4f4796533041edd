// linear: out (M, N) = x (M, K) · w (N, K)^T + bias, f32 accumulation.
// f32 weights go straight to OpenBLAS sgemm. f16/bf16 weights (every real checkpoint) are widened
// on the fly so the model stays in its stored dtype in memory (a 7B model is 13.5 GB, not 27):
//  - small M (decode): weight rows are converted once into a per-thread buffer and multiplied with
//    all M inputs; this reads the weights exactly once, the bound for a memory-bound GEMV;
//  - large M (prefill): panels of rows are converted to f32 and handed to sgemm, so the
//    conversion cost is amortised over M.
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <memory>
#include <vector>

#include "kernels/cpu/ops.h"
#include "runtime/core/error.h"

namespace tiergen::kernels::cpu {
namespace {

constexpr int64_t kDirectMaxRows = 32;  // up to this many rows of x: the row-block kernel
// Converted weights per sgemm call: 128 MB holds a whole 7B-class projection, so prefill makes one
// large sgemm per projection (4 MB panels made a 7B prefill 1.4x slower: 46 s against 32 s) and the
// conversion, O(N*K) against the GEMM's O(M*N*K), disappears behind it.
constexpr int64_t kPanelFloats = int64_t{32} << 20;

void add_bias(Tensor& out, const Tensor& bias) {
  const int64_t M = out.dim(0), N = out.dim(1);
  std::vector<float> b(static_cast<size_t>(N));
  convert_to_f32(b.data(), bias.raw(), bias.dtype(), b.size());
  float* o = out.data<float>();
#pragma omp parallel for schedule(static)
  for (int64_t m = 0; m < M; ++m)
#pragma omp simd
    for (int64_t n = 0; n < N; ++n) o[m * N + n] += b[n];
}

// Weight rows are converted 4 at a time into a per-thread buffer, then multiplied with 4 input rows
// at a time: 16 accumulators, 8 loads per 16 FMAs (a row-by-row dot product needs 2 per FMA); rows
// left over (every row at batch 1) go one at a time against the 4 weight rows.
// Weights are still read from memory exactly once, the bound for the memory-bound decode step.
void linear_direct(float* out, const float* x, const void* w, DType wt, int64_t M, int64_t N, int64_t K) {
  constexpr int64_t R = 4;
  const size_t row_bytes = static_cast<size_t>(K) * dtype_size(wt);
  const int64_t blocks = (N + R - 1) / R;
#pragma omp parallel
  {
    std::vector<float> rows(static_cast<size_t>(R * K));
#pragma omp for schedule(static)
    for (int64_t blk = 0; blk < blocks; ++blk) {
      const int64_t n0 = blk * R, nr = std::min(R, N - n0);
      for (int64_t r = 0; r < nr; ++r)
        convert_to_f32(rows.data() + r * K, static_cast<const char*>(w) + (n0 + r) * row_bytes, wt,
                       static_cast<size_t>(K));
      for (int64_t r = nr; r < R; ++r) std::fill(rows.begin() + r * K, rows.begin() + (r + 1) * K, 0.f);
      const float *w0 = rows.data(), *w1 = w0 + K, *w2 = w1 + K, *w3 = w2 + K;
      int64_t m0 = 0;
      for (; m0 + R <= M; m0 += R) {  // 4 input rows x 4 weight rows
        const float *x0 = x + m0 * K, *x1 = x0 + K, *x2 = x1 + K, *x3 = x2 + K;
        float a00 = 0, a01 = 0, a02 = 0, a03 = 0, a10 = 0, a11 = 0, a12 = 0, a13 = 0;
        float a20 = 0, a21 = 0, a22 = 0, a23 = 0, a30 = 0, a31 = 0, a32 = 0, a33 = 0;
#pragma omp simd reduction(+ : a00, a01, a02, a03, a10, a11, a12, a13, a20, a21, a22, a23, a30, a31, a32, a33)
        for (int64_t k = 0; k < K; ++k) {
          const float v0 = w0[k], v1 = w1[k], v2 = w2[k], v3 = w3[k];
          a00 += x0[k] * v0, a01 += x0[k] * v1, a02 += x0[k] * v2, a03 += x0[k] * v3;
          a10 += x1[k] * v0, a11 += x1[k] * v1, a12 += x1[k] * v2, a13 += x1[k] * v3;
          a20 += x2[k] * v0, a21 += x2[k] * v1, a22 += x2[k] * v2, a23 += x2[k] * v3;
          a30 += x3[k] * v0, a31 += x3[k] * v1, a32 += x3[k] * v2, a33 += x3[k] * v3;
        }
        const float acc[R][R] = {
            {a00, a01, a02, a03}, {a10, a11, a12, a13}, {a20, a21, a22, a23}, {a30, a31, a32, a33}};
        for (int64_t i = 0; i < R; ++i)
          for (int64_t r = 0; r < nr; ++r) out[(m0 + i) * N + n0 + r] = acc[i][r];
      }
      for (; m0 < M; ++m0) {  // the remaining rows (all of them at batch 1): 1 input row x 4 weight rows
        const float* xm = x + m0 * K;
        float a0 = 0, a1 = 0, a2 = 0, a3 = 0;
#pragma omp simd reduction(+ : a0, a1, a2, a3)
        for (int64_t k = 0; k < K; ++k) {
          a0 += xm[k] * w0[k];
          a1 += xm[k] * w1[k];
          a2 += xm[k] * w2[k];
          a3 += xm[k] * w3[k];
        }
        const float acc[R] = {a0, a1, a2, a3};
        for (int64_t r = 0; r < nr; ++r) out[m0 * N + n0 + r] = acc[r];
      }
    }
  }
}

void linear_panels(float* out, const float* x, const void* w, DType wt, int64_t M, int64_t N, int64_t K) {
  const int64_t rows = std::clamp<int64_t>(kPanelFloats / std::max<int64_t>(K, 1), 16, N);
  // Reused across calls and never zero-filled: every element is written before sgemm reads it.
  thread_local std::unique_ptr<float[]> workspace;
  thread_local size_t workspace_size = 0;
  if (workspace_size < static_cast<size_t>(rows * K)) {
    workspace_size = static_cast<size_t>(rows * K);
    workspace.reset(new float[workspace_size]);
  }
  float* panel = workspace.get();
  const size_t row_bytes = static_cast<size_t>(K) * dtype_size(wt);
  for (int64_t n0 = 0; n0 < N; n0 += rows) {
    const int64_t nb = std::min(rows, N - n0);
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < nb; ++r)
      convert_to_f32(panel + r * K, static_cast<const char*>(w) + (n0 + r) * row_bytes, wt, static_cast<size_t>(K));
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(M), static_cast<int>(nb), static_cast<int>(K),
                1.0f, x, static_cast<int>(K), panel, static_cast<int>(K), 0.0f, out + n0, static_cast<int>(N));
  }
}

}  // namespace

void linear(Tensor& out, const Tensor& x, const Tensor& w, const Tensor* bias) {
  static constexpr const char* op = "linear";
  check_host(op, out);
  check_host(op, x);
  check_host(op, w);
  if (x.dtype() != DType::F32 || out.dtype() != DType::F32)
    throw InternalError("linear: CPU x and out must be F32, got " + x.describe() + " and " + out.describe());
  const auto [M, N, K] = check_linear_shapes(op, out, x, w, bias);
  if (bias) check_host(op, *bias);
  if (M == 0 || N == 0) return;
  if (K == 0) {
    std::fill(out.data<float>(), out.data<float>() + M * N, 0.f);
  } else if (w.dtype() == DType::F32) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(M), static_cast<int>(N), static_cast<int>(K),
                1.0f, x.data<float>(), static_cast<int>(K), w.data<float>(), static_cast<int>(K), 0.0f,
                out.data<float>(), static_cast<int>(N));
  } else if (w.dtype() == DType::F16 || w.dtype() == DType::BF16) {
    if (M <= kDirectMaxRows)
      linear_direct(out.data<float>(), x.data<float>(), w.raw(), w.dtype(), M, N, K);
    else
      linear_panels(out.data<float>(), x.data<float>(), w.raw(), w.dtype(), M, N, K);
  } else {
    throw UnsupportedError(std::string("linear: weights of dtype ") + dtype_name(w.dtype()) +
                           " are not supported on the CPU backend");
  }
  if (bias) add_bias(out, *bias);
}

}  // namespace tiergen::kernels::cpu
