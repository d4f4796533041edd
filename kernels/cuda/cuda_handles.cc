#include "kernels/cuda/cuda_handles.h"

#include <string>

#include "kernels/cuda/cuda_check.h"
#include "runtime/core/error.h"

namespace tiergen::kernels::cuda {
namespace {

// cudaFree needs no particular current device for memory from cudaMalloc, but keeping the owner's
// device current makes the release correct for any future pool or context-bound allocator too.
void free_on(void* p, int device) noexcept {
  int current = -1;
  const bool switched =
      cudaGetDevice(&current) == cudaSuccess && current != device && cudaSetDevice(device) == cudaSuccess;
  (void)cudaFree(p);
  if (switched) (void)cudaSetDevice(current);
  (void)cudaGetLastError();  // a teardown error must not poison the next unrelated call
}

}  // namespace

std::shared_ptr<Storage> allocate_device(size_t nbytes, int device) {
  CUDA_CHECK(cudaSetDevice(device));
  void* p = nullptr;
  // cudaMalloc(0) may return null; one byte keeps every Storage's pointer valid and distinct.
  const cudaError_t err = cudaMalloc(&p, nbytes == 0 ? 1 : nbytes);
  if (err == cudaErrorMemoryAllocation) {
    (void)cudaGetLastError();  // clear it: an allocation failure is not sticky
    size_t free_b = 0, total_b = 0;
    (void)cudaMemGetInfo(&free_b, &total_b);
    throw OutOfMemoryError("cudaMalloc of " + std::to_string(nbytes) +
                           " bytes on cuda:" + std::to_string(device) + " failed: " + std::to_string(free_b) +
                           " of " + std::to_string(total_b) + " bytes free");
  }
  CUDA_CHECK(err);
  return Storage::wrap(p, nbytes, Tier::Gpu, [p, device] { free_on(p, device); });
}

Stream::Stream(int device) {
  CUDA_CHECK(cudaSetDevice(device));
  CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
}

Stream::~Stream() {
  if (stream_) (void)cudaStreamDestroy(stream_);
}

CublasHandle::CublasHandle(cudaStream_t stream) {
  CUBLAS_CHECK(cublasCreate(&handle_));
  try {
    CUBLAS_CHECK(cublasSetStream(handle_, stream));
    // By default cuBLAS may reduce split-K partial sums in the output type (f16/bf16) for
    // mixed-precision GEMMs; the backend promises f32 accumulation, so forbid that.
    CUBLAS_CHECK(cublasSetMathMode(
        handle_,
        static_cast<cublasMath_t>(CUBLAS_DEFAULT_MATH | CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION)));
  } catch (...) {
    (void)cublasDestroy(handle_);
    throw;
  }
}

CublasHandle::~CublasHandle() {
  if (handle_) (void)cublasDestroy(handle_);
}

void* Workspace::get(size_t nbytes, cudaStream_t stream) {
  if (!buf_ || buf_->nbytes() < nbytes) {
    if (buf_) {
      CUDA_CHECK(cudaStreamSynchronize(stream));
      buf_.reset();
    }
    buf_ = allocate_device(nbytes, device_);
  }
  return buf_->data();
}

}  // namespace tiergen::kernels::cuda
