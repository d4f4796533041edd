// Entry points of the CUDA backend, called only from kernels/backend.cc.
#pragma once

#include <memory>

#include "kernels/backend.h"

namespace tiergen::kernels::cuda {

bool device_available();
std::unique_ptr<Backend> make_backend(int device);

}  // namespace tiergen::kernels::cuda
