// Shared pieces of the GPU conformance tests (tests/gpu/*_test.cc), in the manner of ggml's
// test-backend-ops: seeded random inputs rounded to the GPU dtype with the same values widened to f32
// for the CPU reference, error bounds derived per dtype, guarded device outputs whose sentinel bytes
// catch out-of-bounds writes, and a comparison in which NaN/Inf fail outright.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "kernels/backend.h"
#include "runtime/core/error.h"

namespace tiergen::kernels::gpu_test {

inline constexpr double kU32 = 0x1p-24;  // unit roundoff of f32: half the gap between 1 and the next float

// Unit roundoff (round to nearest) of the dtype an op writes.
inline double unit_roundoff(DType t) {
  switch (t) {
    case DType::F16:
      return 0x1p-11;
    case DType::BF16:
      return 0x1p-8;
    default:
      return kU32;
  }
}

// Below the normal range rounding is absolute: at most half the smallest subnormal.
inline double underflow_slack(DType t) {
  switch (t) {
    case DType::F16:
      return 0x1p-25;
    case DType::BF16:
      return 0x1p-134;
    default:
      return 0x1p-150;
  }
}

// One backend pair per process: creating a cuBLAS handle per case would dominate the run time.
inline Backend& cpu() {
  static const std::unique_ptr<Backend> b = make_cpu_backend();
  return *b;
}
inline Backend& gpu() {
  static const std::unique_ptr<Backend> b = make_cuda_backend(0);
  return *b;
}

class CudaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!cuda_available()) GTEST_SKIP() << "no CUDA device is visible (or this build has no CUDA backend)";
  }
};

// A host input in the GPU's dtype and the same values widened to F32 (what the CPU kernels read).
struct HostInput {
  Tensor native;  // dtype `dt`
  Tensor f32;     // identical values
};

inline HostInput random_input(Shape shape, DType dt, float lo, float hi, std::mt19937& rng) {
  Tensor f = Tensor::empty(shape, DType::F32);
  std::uniform_real_distribution<float> dist(lo, hi);
  const size_t n = static_cast<size_t>(f.numel());
  for (size_t i = 0; i < n; ++i) f.data<float>()[i] = dist(rng);
  if (dt == DType::F32) return {f, f};
  Tensor native = Tensor::empty(shape, dt);
  convert_from_f32(native.raw(), dt, f.data<float>(), n);
  convert_to_f32(f.data<float>(), native.raw(), dt, n);  // f now holds exactly the rounded values
  return {native, f};
}

// |t| elementwise for a host F32/F16/BF16 tensor (clearing the sign bit is exact in every format).
inline Tensor abs_of(const Tensor& t) {
  Tensor a = Tensor::empty(t.shape(), t.dtype());
  std::memcpy(a.raw(), t.raw(), t.nbytes());
  if (t.dtype() == DType::F32) {
    for (int64_t i = 0; i < a.numel(); ++i) a.data<float>()[i] = std::fabs(a.data<float>()[i]);
  } else {
    for (int64_t i = 0; i < a.numel(); ++i) a.data<uint16_t>()[i] &= 0x7fffu;
  }
  return a;
}

inline Tensor upload(const Tensor& host) {
  Tensor d = gpu().alloc(host.shape(), host.dtype());
  gpu().copy(d, host);
  return d;
}

// A device output of `shape` placed between two guard zones of sentinel bytes inside one larger
// allocation. The output itself is poisoned with 0xff bytes (NaN in f32, f16 and bf16), so an
// element the op leaves unwritten fails the NaN check.
class GuardedOutput {
 public:
  static constexpr size_t kGuard = 256;  // bytes on each side; keeps the view 256-byte aligned

  GuardedOutput(Shape shape, DType dt) : bytes_(static_cast<size_t>(shape_numel(shape)) * dtype_size(dt)) {
    whole_ = gpu().alloc({static_cast<int64_t>(2 * kGuard + bytes_)}, DType::U8);
    view_ = Tensor(whole_.storage(), kGuard, std::move(shape), dt);
    Tensor host = Tensor::empty(whole_.shape(), DType::U8);
    for (size_t i = 0; i < host.nbytes(); ++i) host.data<uint8_t>()[i] = expected(i);
    gpu().copy(whole_, host);
  }

  Tensor& view() { return view_; }

  // Reads the whole allocation back; returns the output widened to f32 and checks the guards.
  ::testing::AssertionResult read(std::vector<float>& out) const {
    Tensor host = Tensor::empty(whole_.shape(), DType::U8);
    gpu().copy(host, whole_);
    const uint8_t* b = host.data<uint8_t>();
    for (size_t i = 0; i < host.nbytes(); ++i) {
      const bool in_view = i >= kGuard && i < kGuard + bytes_;
      if (!in_view && b[i] != expected(i))
        return ::testing::AssertionFailure() << "out-of-bounds write: guard byte " << i << " (view is [" << kGuard
                                             << ", " << kGuard + bytes_ << ")) changed";
    }
    out.resize(static_cast<size_t>(view_.numel()));
    convert_to_f32(out.data(), b + kGuard, view_.dtype(), out.size());
    return ::testing::AssertionSuccess();
  }

 private:
  // Guard bytes vary with the position, so a stray memset or a shifted copy cannot match them.
  uint8_t expected(size_t i) const {
    if (i >= kGuard && i < kGuard + bytes_) return 0xff;
    return static_cast<uint8_t>(i * 131u + 7u);
  }

  size_t bytes_;
  Tensor whole_;
  Tensor view_;
};

// Every gpu[i] finite and |gpu[i] - ref[i]| <= tol[i]. Reports the first few failures; `worst`
// gets max |err| / tol, a measure of how much of the derived bound the GPU actually uses.
inline ::testing::AssertionResult all_close(const std::vector<float>& got, const float* ref,
                                            const std::vector<double>& tol, size_t cols, double& worst) {
  int bad = 0;
  std::ostringstream msg;
  for (size_t i = 0; i < got.size(); ++i) {
    const double err = std::fabs(static_cast<double>(got[i]) - ref[i]);
    const bool finite = std::isfinite(got[i]);
    if (finite && tol[i] > 0) worst = std::max(worst, err / tol[i]);
    if (!finite || err > tol[i]) {
      if (bad < 5)
        msg << "\n  [" << i / cols << ", " << i % cols << "] gpu " << got[i] << " cpu " << ref[i] << " |err| " << err
            << " tol " << tol[i];
      ++bad;
    }
  }
  if (bad == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << bad << " of " << got.size() << " elements out of tolerance" << msg.str();
}

}  // namespace tiergen::kernels::gpu_test
