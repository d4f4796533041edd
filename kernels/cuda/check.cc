#include <string>

#include "kernels/cuda/ops.h"
#include "runtime/core/error.h"

namespace tiergen::kernels::cuda {

void check_device(const char* op, const char* what, const Tensor& t) {
  if (!t.defined() || t.tier() != Tier::Gpu)
    throw InternalError(std::string(op) + ": " + what + " " + (t.defined() ? t.describe() : "undefined") +
                        " is not in GPU memory");
}

bool is_gpu_float(DType t) { return t == DType::F32 || t == DType::F16 || t == DType::BF16; }

}  // namespace tiergen::kernels::cuda
