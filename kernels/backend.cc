#include "kernels/backend.h"

#include "runtime/core/error.h"

#ifdef TIERGEN_HAVE_CUDA
#include "kernels/cuda/cuda_backend.h"
#endif

namespace tiergen::kernels {

bool cuda_available() {
#ifdef TIERGEN_HAVE_CUDA
  return cuda::device_available();
#else
  return false;
#endif
}

std::unique_ptr<Backend> make_cuda_backend(int device) {
#ifdef TIERGEN_HAVE_CUDA
  return cuda::make_backend(device);
#else
  (void)device;
  throw UnsupportedError(
      "this tiergen was built without CUDA (no nvcc was found at build time); "
      "rebuild with nvcc on PATH or use --device cpu");
#endif
}

}  // namespace tiergen::kernels
