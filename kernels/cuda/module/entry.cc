// The CUDA backend's entry points as C symbols, found with dlsym by kernels/backend.cc: in the
// process itself when it links the CUDA kernels (the GPU tests), otherwise in the module
// libtiergen_cuda.so that the tiergen executable loads on the first --device cuda.
#include "kernels/cuda/cuda_backend.h"

extern "C" {

__attribute__((visibility("default"))) bool tiergen_cuda_device_available() {
  return tiergen::kernels::cuda::device_available();
}

// Ownership passes to the caller. Errors are C++ exceptions (tiergen::Error): the caller is C++
// with the same runtime.
__attribute__((visibility("default"))) tiergen::kernels::Backend* tiergen_cuda_make_backend(int device) {
  return tiergen::kernels::cuda::make_backend(device).release();
}

}  // extern "C"
