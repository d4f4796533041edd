// Device-side element types: loads widen to f32, stores round to nearest even (the same rounding
// as the host's f32_to_f16 / f32_to_bf16 in runtime/core/dtype.h), and a host-side dispatch from a
// runtime DType to the C++ type a kernel template is instantiated with.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <string>

#include "runtime/core/dtype.h"
#include "runtime/core/error.h"

namespace tiergen::kernels::cuda {

__device__ __forceinline__ float load_f32(float v) { return v; }
__device__ __forceinline__ float load_f32(__half v) { return __half2float(v); }
__device__ __forceinline__ float load_f32(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T>
__device__ __forceinline__ T store_as(float v);
template <>
__device__ __forceinline__ float store_as<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ __half store_as<__half>(float v) {
  return __float2half_rn(v);
}
template <>
__device__ __forceinline__ __nv_bfloat16 store_as<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

template <typename T>
struct TypeTag {
  using type = T;
};

// Calls f(TypeTag<T>{}) with T the element type of `t`; other dtypes are an UnsupportedError.
template <typename F>
void dispatch_float(DType t, const char* op, F&& f) {
  switch (t) {
    case DType::F32:
      f(TypeTag<float>{});
      return;
    case DType::F16:
      f(TypeTag<__half>{});
      return;
    case DType::BF16:
      f(TypeTag<__nv_bfloat16>{});
      return;
    default:
      throw UnsupportedError(std::string(op) + ": dtype " + dtype_name(t) +
                             " is not supported on the CUDA backend");
  }
}

}  // namespace tiergen::kernels::cuda
