#include <string>

#include "kernels/cpu/ops.h"
#include "runtime/core/error.h"

namespace tiergen::kernels::cpu {

void check_host(const char* op, const Tensor& t) {
  if (!t.defined() || !host_addressable(t.tier()))
    throw InternalError(std::string(op) + ": tensor " + (t.defined() ? t.describe() : "undefined") +
                        " is not in host memory");
}

}  // namespace tiergen::kernels::cpu
