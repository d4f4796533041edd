// Shared pieces of the tests of the CUDA engine's launchers (kernels/cuda/ops.h), called directly
// rather than through the Backend: the shape grid, a stream for the launchers ordered against the
// backend's, misaligned uploads, host rounding to a dtype. Only for builds with TIERGEN_HAVE_CUDA.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <vector>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_handles.h"
#include "kernels/cuda/ops.h"
#include "tests/gpu/gpu_check.h"

namespace tiergen::kernels::gpu_test {

// The shape grid: odd sizes, one row and one column, a row longer than a block's sweep.
inline constexpr int64_t kMs[] = {1, 3, 17, 130};
inline constexpr int64_t kCs[] = {1, 7, 64, 1000, 4097};
inline constexpr float kEps = 1e-5f;
inline constexpr DType kFloats[] = {DType::F32, DType::F16, DType::BF16};

// The launchers run on a stream of the test's own, which the backend's stream does not order
// against: drain the backend (uploads, poisoned outputs) first, and this stream before reading back.
template <typename F>
inline void run_op(F&& launch) {
  gpu().synchronize();
  static const cuda::Stream stream(0);
  launch(stream.get());
  CUDA_CHECK(cudaStreamSynchronize(stream.get()));
}

// A device copy of `host` starting `shift` elements into its allocation: shift 1 misaligns it for
// packed loads, so the launchers must take their one-element path.
inline Tensor upload_at(const Tensor& host, int64_t shift) {
  if (shift == 0) return upload(host);
  const Tensor whole = gpu().alloc({host.numel() + shift}, host.dtype());
  Tensor view(whole.storage(), static_cast<size_t>(shift) * dtype_size(host.dtype()), host.shape(), host.dtype());
  gpu().copy(view, host);
  return view;
}

// f32 values as a tensor of dtype `dt` holds them (round to nearest even, as runtime/core/dtype.h).
inline Tensor rounded(const Tensor& f32, DType dt) {
  Tensor out = Tensor::empty(f32.shape(), DType::F32);
  Tensor tmp = Tensor::empty(f32.shape(), dt);
  convert_from_f32(tmp.raw(), dt, f32.data<float>(), static_cast<size_t>(f32.numel()));
  convert_to_f32(out.data<float>(), tmp.raw(), dt, static_cast<size_t>(f32.numel()));
  return out;
}

inline Tensor copy_of(const Tensor& t) {
  Tensor c = Tensor::empty(t.shape(), t.dtype());
  std::memcpy(c.raw(), t.raw(), t.nbytes());
  return c;
}

inline uint32_t seed(int64_t M, int64_t C, uint32_t tag) { return static_cast<uint32_t>(M * 100003 + C) ^ (tag << 16); }
inline uint32_t tag_of(std::initializer_list<int> v) {
  uint32_t h = 0;
  for (int x : v) h = h * 31u + static_cast<uint32_t>(x) + 1u;
  return h;
}

// Reads a guarded output and compares it with `ref` under `tol`, elementwise.
inline void expect_close(const GuardedOutput& out, const float* ref, const std::vector<double>& tol, int64_t C,
                         double& worst) {
  std::vector<float> got;
  ASSERT_TRUE(out.read(got));
  EXPECT_TRUE(all_close(got, ref, tol, static_cast<size_t>(std::max<int64_t>(C, 1)), worst));
}

}  // namespace tiergen::kernels::gpu_test
