// Shape contracts shared by every backend, so the CPU reference and the CUDA implementation reject
// exactly the same calls with the same messages. A violation is an InternalError naming the op: the
// engine built a wrong call, which is a tiergen bug, not bad user input.
#pragma once

#include <cstdint>
#include <string>

#include "runtime/core/error.h"
#include "runtime/core/tensor.h"

namespace tiergen::kernels {

// t must be (rows, cols); -1 means any.
inline void check_2d(const char* op, const char* what, const Tensor& t, int64_t rows, int64_t cols) {
  const bool ok = t.rank() == 2 && (rows < 0 || t.dim(0) == rows) && (cols < 0 || t.dim(1) == cols);
  if (!ok)
    throw InternalError(std::string(op) + ": " + what + " is " + t.describe() + ", expected (" +
                        (rows < 0 ? "*" : std::to_string(rows)) + ", " + (cols < 0 ? "*" : std::to_string(cols)) + ")");
}

inline void check_numel(const char* op, const char* what, const Tensor& t, int64_t n) {
  if (t.numel() != n)
    throw InternalError(std::string(op) + ": " + what + " is " + t.describe() + ", expected " + std::to_string(n) +
                        " elements");
}

struct GemmDims {
  int64_t M, N, K;
};

// linear's contract: out (M, N) = x (M, K) · w (N, K)^T + bias (N).
inline GemmDims check_linear_shapes(const char* op, const Tensor& out, const Tensor& x, const Tensor& w,
                                    const Tensor* bias) {
  check_2d(op, "w", w, -1, -1);
  const int64_t N = w.dim(0), K = w.dim(1);
  check_2d(op, "x", x, -1, K);
  const int64_t M = x.dim(0);
  check_2d(op, "out", out, M, N);
  if (bias) check_numel(op, "bias", *bias, N);
  return {M, N, K};
}

}  // namespace tiergen::kernels
