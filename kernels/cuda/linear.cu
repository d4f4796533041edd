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
// Bias: added to the f32 accumulator, then rounded once to out's dtype, as on the CPU.
//  - out F32: the GEMM writes out, a small kernel adds the bias in place.
//  - out F16/BF16: the GEMM writes an f32 scratch (row chunks of at most kChunkBytes, in the
//    backend's grow-only Workspace), the kernel adds the bias and rounds into out.
//  - no bias: the GEMM writes out directly and its epilogue rounds once (checked by the test).
// Not cuBLAS's own epilogue with beta = 1 over a bias pre-broadcast into out: on the H100 its
// tensor-core kernels with a 16-bit C round the product to 16 bits before adding C (several ulps
// off near cancellation; tests/gpu/cuda_conformance_test.cc caught it). Not the cublasLt bias
// epilogue either, until its rounding order for 16-bit outputs is measured the same way; the path
// here is right by construction and costs one f32 write + read of out, small next to the N·K
// weights at decode sizes.
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

constexpr size_t kChunkBytes = size_t{32} << 20;  // f32 scratch per GEMM when out is 16-bit

// out (M, N)[m, n] = round_to_out(acc[m, n] + bias[n]), acc f32 (M, N) or null for zero.
// out may alias acc (out F32): each element is read then written by the same thread.
// Grid-stride over M·N elements.
template <typename Tb, typename To>
__global__ void add_bias_kernel(To* out, const float* acc, const Tb* __restrict__ bias, int64_t M, int64_t N) {
  const int64_t total = M * N;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    out[i] = store_as<To>((acc ? acc[i] : 0.f) + load_f32(bias[i % N]));
}

cudaDataType_t cuda_type(DType t) {
  switch (t) {
    case DType::F32:
      return CUDA_R_32F;
    case DType::F16:
      return CUDA_R_16F;
    case DType::BF16:
      return CUDA_R_16BF;
    default:
      throw InternalError(std::string("linear: no cuBLAS type for ") + dtype_name(t));
  }
}

// out (M, N) of `out_type` = x (M, K) · w (N, K)^T, f32 accumulation, beta = 0 (out not read).
void gemm(cublasHandle_t cublas, void* out, cudaDataType_t out_type, const void* x, const void* w,
          cudaDataType_t in_type, int64_t M, int64_t N, int64_t K) {
  const float alpha = 1.0f, beta = 0.0f;  // f32: the scale type CUBLAS_COMPUTE_32F requires
  const int m = static_cast<int>(N), n = static_cast<int>(M), k = static_cast<int>(K);
  CUBLAS_CHECK(cublasGemmEx(cublas, CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, &alpha, w, in_type, k, x, in_type, k, &beta, out,
                            out_type, m, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

// out (M, N) = acc (M, N) + bias (N), rounded to out's dtype; acc null means zero.
void add_bias(cudaStream_t stream, void* out, DType out_type, const float* acc, const Tensor& bias, int64_t M,
              int64_t N) {
  constexpr int kThreads = 256;
  // Enough blocks to cover the output, capped: the grid-stride loop does the rest.
  const int64_t blocks = std::min<int64_t>((M * N + kThreads - 1) / kThreads, 4096);
  dispatch_float(bias.dtype(), "linear", [&](auto tb) {
    dispatch_float(out_type, "linear", [&](auto to) {
      using Tb = typename decltype(tb)::type;
      using To = typename decltype(to)::type;
      add_bias_kernel<Tb, To>
          <<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(static_cast<To*>(out), acc, bias.data<Tb>(), M, N);
      CUDA_CHECK_LAUNCH();
    });
  });
}

}  // namespace

void linear(cudaStream_t stream, cublasHandle_t cublas, Workspace& ws, Tensor& out, const Tensor& x, const Tensor& w,
            const Tensor* bias) {
  static constexpr const char* op = "linear";
  check_device(op, "out", out);
  check_device(op, "x", x);
  check_device(op, "w", w);
  const auto [M, N, K] = check_linear_shapes(op, out, x, w, bias);
  if (bias) {
    check_device(op, "bias", *bias);
    if (!is_gpu_float(bias->dtype()))
      throw UnsupportedError(std::string("linear: bias dtype ") + dtype_name(bias->dtype()) +
                             " is not supported on the CUDA backend");
  }
  // F32 x and w run as a plain f32 GEMM (CUBLAS_COMPUTE_32F without TF32: the float32 runs that must
  // match the CPU reference token for token).
  if (!is_gpu_float(x.dtype()) || w.dtype() != x.dtype() || (out.dtype() != x.dtype() && out.dtype() != DType::F32))
    throw UnsupportedError(
        "linear: the CUDA backend needs x and w of one dtype (F16, BF16 or F32) and out of their dtype "
        "or F32; got x " +
        x.describe() + ", w " + w.describe() + ", out " + out.describe());
  constexpr int64_t kIntMax = std::numeric_limits<int>::max();
  if (M > kIntMax || N > kIntMax || K > kIntMax)
    throw UnsupportedError("linear: dimensions beyond 2^31 - 1 (M=" + std::to_string(M) + ", N=" + std::to_string(N) +
                           ", K=" + std::to_string(K) + ")");
  if (M == 0 || N == 0) return;

  const cudaDataType_t in_type = cuda_type(x.dtype()), out_type = cuda_type(out.dtype());
  if (K == 0) {  // an empty sum: out is the bias, or zero (all-zero bits are 0.0 in every float type)
    if (bias)
      add_bias(stream, out.raw(), out.dtype(), nullptr, *bias, M, N);
    else
      CUDA_CHECK(cudaMemsetAsync(out.raw(), 0, out.nbytes(), stream));
    return;
  }
  if (!bias) {
    gemm(cublas, out.raw(), out_type, x.raw(), w.raw(), in_type, M, N, K);
  } else if (out.dtype() == DType::F32) {
    gemm(cublas, out.raw(), out_type, x.raw(), w.raw(), in_type, M, N, K);
    add_bias(stream, out.raw(), out.dtype(), out.data<float>(), *bias, M, N);
  } else {
    const int64_t row_bytes = N * static_cast<int64_t>(sizeof(float));
    const int64_t rows = std::clamp<int64_t>(static_cast<int64_t>(kChunkBytes) / row_bytes, 1, M);
    float* acc = static_cast<float*>(ws.get(static_cast<size_t>(rows * row_bytes), stream));
    const size_t x_row = static_cast<size_t>(K) * dtype_size(x.dtype());
    const size_t out_row = static_cast<size_t>(N) * dtype_size(out.dtype());
    for (int64_t r0 = 0; r0 < M; r0 += rows) {
      const int64_t mc = std::min(rows, M - r0);
      gemm(cublas, acc, CUDA_R_32F, static_cast<const char*>(x.raw()) + r0 * x_row, w.raw(), in_type, mc, N, K);
      add_bias(stream, static_cast<char*>(out.raw()) + r0 * out_row, out.dtype(), acc, *bias, mc, N);
    }
  }
}

}  // namespace tiergen::kernels::cuda
