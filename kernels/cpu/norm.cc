// rms_norm and layer_norm over the last dimension. Statistics are accumulated in double: it costs
// nothing next to the memory traffic and keeps the result within f32 rounding of the exact value.
#include <cmath>
#include <vector>

#include "kernels/cpu/ops.h"
#include "runtime/core/error.h"

namespace tiergen::kernels::cpu {
namespace {

std::vector<float> param_f32(const Tensor& t, int64_t c, const char* op, const char* what) {
  check_host(op, t);
  if (t.numel() != c)
    throw InternalError(std::string(op) + ": " + what + " " + t.describe() + " for C=" + std::to_string(c));
  std::vector<float> v(static_cast<size_t>(c));
  convert_to_f32(v.data(), t.raw(), t.dtype(), v.size());
  return v;
}

void check_rows(const char* op, Tensor& out, const Tensor& x) {
  check_host(op, out);
  check_host(op, x);
  check_2d(op, "x", x, -1, -1);
  check_2d(op, "out", out, x.dim(0), x.dim(1));
  if (x.dtype() != DType::F32 || out.dtype() != DType::F32)
    throw InternalError(std::string(op) + ": CPU tensors must be F32");
}

}  // namespace

void rms_norm(Tensor& out, const Tensor& x, const Tensor& w, float eps) {
  check_rows("rms_norm", out, x);
  const int64_t M = x.dim(0), C = x.dim(1);
  const std::vector<float> wf = param_f32(w, C, "rms_norm", "w");
  const float* xp = x.data<float>();
  float* op = out.data<float>();
#pragma omp parallel for schedule(static)
  for (int64_t m = 0; m < M; ++m) {
    const float* xr = xp + m * C;
    double ss = 0;
#pragma omp simd reduction(+ : ss)
    for (int64_t c = 0; c < C; ++c) ss += static_cast<double>(xr[c]) * xr[c];
    const float inv = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(C) + eps));
    float* o = op + m * C;
    for (int64_t c = 0; c < C; ++c) o[c] = wf[c] * (xr[c] * inv);
  }
}

void layer_norm(Tensor& out, const Tensor& x, const Tensor& w, const Tensor& b, float eps) {
  check_rows("layer_norm", out, x);
  const int64_t M = x.dim(0), C = x.dim(1);
  const std::vector<float> wf = param_f32(w, C, "layer_norm", "w");
  const std::vector<float> bf = param_f32(b, C, "layer_norm", "b");
  const float* xp = x.data<float>();
  float* op = out.data<float>();
#pragma omp parallel for schedule(static)
  for (int64_t m = 0; m < M; ++m) {
    const float* xr = xp + m * C;
    double sum = 0;
#pragma omp simd reduction(+ : sum)
    for (int64_t c = 0; c < C; ++c) sum += xr[c];
    const double mean = sum / static_cast<double>(C);
    double var = 0;
#pragma omp simd reduction(+ : var)
    for (int64_t c = 0; c < C; ++c) var += (xr[c] - mean) * (xr[c] - mean);
    const double inv = 1.0 / std::sqrt(var / static_cast<double>(C) + eps);
    float* o = op + m * C;
    for (int64_t c = 0; c < C; ++c) o[c] = static_cast<float>((xr[c] - mean) * inv) * wf[c] + bf[c];
  }
}

}  // namespace tiergen::kernels::cpu
