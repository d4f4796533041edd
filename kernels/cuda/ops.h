// CUDA ops behind the Backend interface: launchers over device tensors, one file per op
// (linear.cu, rms_norm.cu), each kernel next to a comment naming its CPU reference in kernels/cpu.
// Launchers check shapes (InternalError naming the op) and dtypes (UnsupportedError for a
// combination this backend does not run), then queue work on `stream`; none of them synchronizes.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "kernels/backend.h"
#include "kernels/shape_check.h"
#include "kernels/cuda/cuda_handles.h"

namespace tiergen::kernels::cuda {

// linear: out (M, N) = x (M, K) · w (N, K)^T + bias (N). `cublas` is bound to `stream`; `ws` holds
// the f32 accumulator when a bias meets a 16-bit out.
void linear(cudaStream_t stream, cublasHandle_t cublas, Workspace& ws, Tensor& out, const Tensor& x,
            const Tensor& w, const Tensor* bias);
// rms_norm: out (M, C) = x / sqrt(mean(x^2) + eps) * w (C). out may alias x.
void rms_norm(cudaStream_t stream, Tensor& out, const Tensor& x, const Tensor& w, float eps);

// Shape and tier checks shared by the launchers; they throw InternalError naming `op`.
void check_device(const char* op, const char* what, const Tensor& t);
// The 1-D parameter vector `t` (any shape) holds exactly `n` elements.
bool is_gpu_float(DType t);  // F32, F16 or BF16: the element types the CUDA kernels read and write

}  // namespace tiergen::kernels::cuda
