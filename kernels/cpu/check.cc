#include <string>

#include "kernels/cpu/ops.h"
#include "runtime/core/error.h"

namespace tiergen::kernels::cpu {

void check_host(const char* op, const Tensor& t) {
  if (!t.defined() || !host_addressable(t.tier()))
    throw InternalError(std::string(op) + ": tensor " + (t.defined() ? t.describe() : "undefined") +
                        " is not in host memory");
}

void check_2d(const char* op, const char* what, const Tensor& t, int64_t rows, int64_t cols) {
  // -1 means "any"
  bool ok = t.rank() == 2 && (rows < 0 || t.dim(0) == rows) && (cols < 0 || t.dim(1) == cols);
  if (!ok)
    throw InternalError(std::string(op) + ": " + what + " is " + t.describe() + ", expected (" +
                        (rows < 0 ? "*" : std::to_string(rows)) + ", " + (cols < 0 ? "*" : std::to_string(cols)) + ")");
}

}  // namespace tiergen::kernels::cpu
