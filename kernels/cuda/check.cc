#include <string>

#include "kernels/cuda/ops.h"
#include "runtime/core/error.h"

namespace tiergen::kernels::cuda {

void check_device(const char* op, const char* what, const Tensor& t) {
  if (!t.defined() || t.tier() != Tier::Gpu)
    throw InternalError(std::string(op) + ": " + what + " " + (t.defined() ? t.describe() : "undefined") +
                        " is not in GPU memory");
}

void check_2d(const char* op, const char* what, const Tensor& t, int64_t rows, int64_t cols) {
  const bool ok = t.rank() == 2 && (rows < 0 || t.dim(0) == rows) && (cols < 0 || t.dim(1) == cols);
  if (!ok)
    throw InternalError(std::string(op) + ": " + what + " is " + t.describe() + ", expected (" +
                        (rows < 0 ? "*" : std::to_string(rows)) + ", " +
                        (cols < 0 ? "*" : std::to_string(cols)) + ")");
}

void check_numel(const char* op, const char* what, const Tensor& t, int64_t n) {
  if (t.numel() != n)
    throw InternalError(std::string(op) + ": " + what + " is " + t.describe() + ", expected " +
                        std::to_string(n) + " elements");
}

bool is_gpu_float(DType t) { return t == DType::F32 || t == DType::F16 || t == DType::BF16; }

}  // namespace tiergen::kernels::cuda
