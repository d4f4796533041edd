// linear on the GPU through cuBLAS. CPU reference: kernels/cpu/gemm.cc (linear).
//
// Layout: tensors are row-major, cuBLAS is column-major. The bytes of a row-major (R, C) matrix
// are the column-major (C, R) matrix, its transpose, with leading dimension C. So
//   w's bytes  = column-major (K, N) = w^T, lda K      -> op T gives w   (N, K)
//   x's bytes  = column-major (K, M) = x^T, ldb K      -> op N gives x^T (K, M)
//   out's bytes = column-major (N, M) = out^T, ldc N
// and the row-major out (M, N) = x · w^T is the column-major out^T (N, M) = w · x^T:
// cublasGemmEx(T, N, m = N, n = M, k = K). No data is transposed.
//
// Bias: before the GEMM, a small kernel writes bias (N) into every row of out, and the GEMM runs
// with beta = 1. cuBLAS's epilogue then forms alpha·acc + beta·C in f32 (the scale type of
// CUBLAS_COMPUTE_32F) and rounds once to out's dtype, so the bias is added in f32 before the one
// rounding, as on the CPU, with no extra f32 scratch buffer and no cublasLt descriptor/heuristic
// machinery. The only caveat: the bias is first stored in out's dtype, which is exact when its
// dtype is out's (checkpoint biases are stored like the activations) or out is F32; an F32 bias
// with a 16-bit out is rounded once more. The cost is one extra read of out inside the GEMM
// (M·N elements, small next to the N·K weights at decode sizes).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <limits>
#include <string>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/dtype.cuh"
#include "kernels/cuda/ops.h"

namespace tiergen::kernels::cuda {
namespace {

// out (M, N)[m, n] = bias (N)[n], converted to out's dtype. Grid-stride over M·N elements.
template <typename Tb, typename To>
__global__ void broadcast_rows_kernel(To* __restrict__ out, const Tb* __restrict__ bias, int64_t M, int64_t N) {
  const int64_t total = M * N;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    out[i] = store_as<To>(load_f32(bias[i % N]));
}

cudaDataType_t cuda_type(DType t) {
  switch (t) {
    case DType::F32: return CUDA_R_32F;
    case DType::F16: return CUDA_R_16F;
    case DType::BF16: return CUDA_R_16BF;
    default: throw InternalError(std::string("linear: no cuBLAS type for ") + dtype_name(t));
  }
}

void broadcast_bias(cudaStream_t stream, Tensor& out, const Tensor& bias) {
  const int64_t M = out.dim(0), N = out.dim(1);
  constexpr int kThreads = 256;
  // Enough blocks to cover the output, capped: the grid-stride loop does the rest.
  const int64_t blocks = std::min<int64_t>((M * N + kThreads - 1) / kThreads, 4096);
  dispatch_float(bias.dtype(), "linear", [&](auto tb) {
    dispatch_float(out.dtype(), "linear", [&](auto to) {
      using Tb = typename decltype(tb)::type;
      using To = typename decltype(to)::type;
      broadcast_rows_kernel<Tb, To><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
          out.data<To>(), bias.data<Tb>(), M, N);
      CUDA_CHECK_LAUNCH();
    });
  });
}

}  // namespace

void linear(cudaStream_t stream, cublasHandle_t cublas, Tensor& out, const Tensor& x, const Tensor& w,
            const Tensor* bias) {
  static constexpr const char* op = "linear";
  check_device(op, "out", out);
  check_device(op, "x", x);
  check_device(op, "w", w);
  check_2d(op, "w", w, -1, -1);
  const int64_t N = w.dim(0), K = w.dim(1);
  check_2d(op, "x", x, -1, K);
  const int64_t M = x.dim(0);
  check_2d(op, "out", out, M, N);
  if (bias) {
    check_device(op, "bias", *bias);
    check_numel(op, "bias", *bias, N);
    if (!is_gpu_float(bias->dtype()))
      throw UnsupportedError(std::string("linear: bias dtype ") + dtype_name(bias->dtype()) +
                             " is not supported on the CUDA backend");
  }
  const bool half_in = x.dtype() == DType::F16 || x.dtype() == DType::BF16;
  if (!half_in || w.dtype() != x.dtype() || (out.dtype() != x.dtype() && out.dtype() != DType::F32))
    throw UnsupportedError("linear: the CUDA backend needs x and w both F16 or both BF16 and out of their dtype "
                           "or F32; got x " + x.describe() + ", w " + w.describe() + ", out " + out.describe());
  constexpr int64_t kIntMax = std::numeric_limits<int>::max();
  if (M > kIntMax || N > kIntMax || K > kIntMax)
    throw UnsupportedError("linear: dimensions beyond 2^31 - 1 (M=" + std::to_string(M) + ", N=" +
                           std::to_string(N) + ", K=" + std::to_string(K) + ")");
  if (M == 0 || N == 0) return;

  if (bias) {
    broadcast_bias(stream, out, *bias);
  } else if (K == 0) {
    CUDA_CHECK(cudaMemsetAsync(out.raw(), 0, out.nbytes(), stream));  // empty sum; all-zero bits are 0.0
  }
  if (K == 0) return;  // nothing to accumulate: out is bias or zero

  // alpha/beta are f32: the scale type that CUBLAS_COMPUTE_32F requires. beta = 0 means C is not
  // read at all, so an uninitialised out is fine without a bias.
  const float alpha = 1.0f, beta = bias ? 1.0f : 0.0f;
  const int m = static_cast<int>(N), n = static_cast<int>(M), k = static_cast<int>(K);
  CUBLAS_CHECK(cublasGemmEx(cublas, CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, &alpha, w.raw(), cuda_type(w.dtype()), k,
                            x.raw(), cuda_type(x.dtype()), k, &beta, out.raw(), cuda_type(out.dtype()), m,
                            CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

}  // namespace tiergen::kernels::cuda
