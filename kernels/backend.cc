#include "kernels/backend.h"

#include <algorithm>
#include <vector>

#include "runtime/core/error.h"

#ifdef TIERGEN_HAVE_CUDA
#include "kernels/cuda/cuda_backend.h"
#endif

namespace tiergen::kernels {

int64_t StepPlan::add_sequence(std::span<const int32_t> tokens, int64_t past_len, int64_t slot_index) {
  const int64_t row = num_tokens();
  const auto n = static_cast<int32_t>(tokens.size());
  for (int32_t i = 0; i < n; ++i) {
    token_ids.push_back(tokens[static_cast<size_t>(i)]);
    positions.push_back(static_cast<int32_t>(past_len) + i);
    row_slot.push_back(static_cast<int32_t>(slot_index));
  }
  q_begin.push_back(static_cast<int32_t>(row));
  q_len.push_back(n);
  kv_len.push_back(static_cast<int32_t>(past_len) + n);
  slot.push_back(static_cast<int32_t>(slot_index));
  return row;
}

int StepPlan::max_q_len() const {
  int m = 0;
  for (int32_t n : q_len) m = std::max(m, n);
  return m;
}

int StepPlan::max_kv_len() const {
  int m = 0;
  for (int32_t n : kv_len) m = std::max(m, n);
  return m;
}

Tensor Backend::upload(const Tensor& host, DType dtype) {
  if (!host_addressable(host.tier())) throw InternalError("upload: " + host.describe() + " is not on the host");
  Tensor src = host;
  if (host.dtype() != dtype) {  // convert on the host, once, through f32
    const size_t n = static_cast<size_t>(host.numel());
    std::vector<float> f(n);
    convert_to_f32(f.data(), host.raw(), host.dtype(), n);
    src = Tensor::empty(host.shape(), dtype);
    convert_from_f32(src.raw(), dtype, f.data(), n);
  }
  Tensor out = alloc(host.shape(), dtype);
  copy(out, src);
  return out;
}

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
