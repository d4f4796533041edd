#include "kernels/cuda/cuda_check.h"

#include <unistd.h>

#include <string>

#include "runtime/core/error.h"

namespace tiergen::kernels::cuda {
namespace {

std::string host_name() {
  char buf[256] = {};
  if (gethostname(buf, sizeof(buf) - 1) != 0) return "unknown-host";
  return buf;
}

std::string where(const char* call, const char* file, int line) {
  return std::string(file) + ":" + std::to_string(line) + " on " + host_name() + ": " + call;
}

}  // namespace

void throw_cuda_error(cudaError_t err, const char* call, const char* file, int line) {
  throw DeviceError(where(call, file, line) + " failed: " + cudaGetErrorName(err) + " (" + cudaGetErrorString(err) +
                    ")");
}

void throw_cublas_error(cublasStatus_t status, const char* call, const char* file, int line) {
  throw DeviceError(where(call, file, line) + " failed: " + cublasGetStatusName(status) + " (" +
                    cublasGetStatusString(status) + ")");
}

int sm_count() {
  int device = 0, n = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  CUDA_CHECK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device));
  return n;
}

}  // namespace tiergen::kernels::cuda
