// Checked CUDA and cuBLAS calls. A failed call throws tiergen::DeviceError carrying the call's text,
// file:line, the host name and the library's own error string (as nccl-tests does), so a failure on
// one rank of a pipeline says where it happened. Library code never exits or aborts on a device
// error: the caller decides.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

namespace tiergen::kernels::cuda {

[[noreturn]] void throw_cuda_error(cudaError_t err, const char* call, const char* file, int line);
[[noreturn]] void throw_cublas_error(cublasStatus_t status, const char* call, const char* file, int line);

// The SM count of the current device (launch sizing).
int sm_count();

}  // namespace tiergen::kernels::cuda

#define CUDA_CHECK(call)                                                                                        \
  do {                                                                                                          \
    const cudaError_t tg_err_ = (call);                                                                         \
    if (tg_err_ != cudaSuccess) ::tiergen::kernels::cuda::throw_cuda_error(tg_err_, #call, __FILE__, __LINE__); \
  } while (0)

#define CUBLAS_CHECK(call)                                                             \
  do {                                                                                 \
    const cublasStatus_t tg_st_ = (call);                                              \
    if (tg_st_ != CUBLAS_STATUS_SUCCESS)                                               \
      ::tiergen::kernels::cuda::throw_cublas_error(tg_st_, #call, __FILE__, __LINE__); \
  } while (0)

// After a kernel launch: a bad launch configuration is reported by cudaGetLastError, not by the
// launch itself. (Faults inside the kernel surface at the next synchronizing call.)
#define CUDA_CHECK_LAUNCH() CUDA_CHECK(cudaGetLastError())
