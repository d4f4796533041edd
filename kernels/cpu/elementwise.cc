// Pointwise ops and row copies: add_, activation_, silu_mul_, embedding, write_rows.
#include <cmath>
#include <cstring>
#include <string>

#include "kernels/cpu/ops.h"
#include "runtime/core/error.h"

namespace tiergen::kernels::cpu {
namespace {

void check_f32_same(const char* op, const Tensor& a, const Tensor& b) {
  check_host(op, a);
  check_host(op, b);
  if (a.dtype() != DType::F32 || b.dtype() != DType::F32 || a.shape() != b.shape())
    throw InternalError(std::string(op) + ": expected two F32 tensors of one shape, got " + a.describe() + " and " +
                        b.describe());
}

}  // namespace

void add_(Tensor& x, const Tensor& y) {
  check_f32_same("add_", x, y);
  float* a = x.data<float>();
  const float* b = y.data<float>();
  const int64_t n = x.numel();
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) a[i] += b[i];
}

void activation_(Tensor& x, Act act) {
  check_host("activation_", x);
  if (x.dtype() != DType::F32) throw InternalError("activation_: CPU tensor must be F32, got " + x.describe());
  float* a = x.data<float>();
  const int64_t n = x.numel();
  switch (act) {
    case Act::Relu:
#pragma omp parallel for simd schedule(static)
      for (int64_t i = 0; i < n; ++i) a[i] = a[i] > 0.f ? a[i] : 0.f;
      break;
    case Act::Gelu:
#pragma omp parallel for schedule(static)
      for (int64_t i = 0; i < n; ++i) a[i] = 0.5f * a[i] * (1.0f + std::erf(a[i] * 0.70710678118654752f));
      break;
    case Act::GeluTanh:  // BLOOM's constants, as transformers writes them
#pragma omp parallel for schedule(static)
      for (int64_t i = 0; i < n; ++i)
        a[i] = a[i] * 0.5f * (1.0f + std::tanh(0.79788456f * a[i] * (1.0f + 0.044715f * a[i] * a[i])));
      break;
    case Act::Silu:
#pragma omp parallel for schedule(static)
      for (int64_t i = 0; i < n; ++i) a[i] = a[i] / (1.0f + std::exp(-a[i]));
      break;
  }
}

void silu_mul_(Tensor& gate, const Tensor& up) {
  check_f32_same("silu_mul_", gate, up);
  float* g = gate.data<float>();
  const float* u = up.data<float>();
  const int64_t n = gate.numel();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) g[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
}

void embedding(Tensor& out, const Tensor& table, std::span<const int32_t> ids) {
  check_host("embedding", out);
  check_host("embedding", table);
  check_2d("embedding", "table", table, -1, -1);
  const int64_t V = table.dim(0), C = table.dim(1);
  check_2d("embedding", "out", out, static_cast<int64_t>(ids.size()), C);
  if (out.dtype() != DType::F32) throw InternalError("embedding: CPU out must be F32");
  for (int32_t id : ids)
    if (id < 0 || id >= V)
      throw InvalidArgumentError("token id " + std::to_string(id) + " is outside the vocabulary [0, " +
                                 std::to_string(V) + ")");
  const size_t row_bytes = static_cast<size_t>(C) * dtype_size(table.dtype());
  float* o = out.data<float>();
#pragma omp parallel for schedule(static)
  for (size_t t = 0; t < ids.size(); ++t)
    convert_to_f32(o + t * C, static_cast<const char*>(table.raw()) + ids[t] * row_bytes, table.dtype(),
                   static_cast<size_t>(C));
}

void write_rows(Tensor& cache, int64_t row0, const Tensor& src) {
  check_host("write_rows", cache);
  check_host("write_rows", src);
  check_2d("write_rows", "src", src, -1, cache.dim(1));
  const bool widen = src.dtype() == DType::F32 && cache.dtype() != DType::F32;  // f32 rows into a 16-bit cache
  if ((cache.dtype() != src.dtype() && !widen) || row0 < 0 || row0 + src.dim(0) > cache.dim(0))
    throw InternalError("write_rows: " + src.describe() + " at row " + std::to_string(row0) + " into " +
                        cache.describe());
  void* dst = cache.slice_rows(row0, row0 + src.dim(0)).raw();
  if (widen)
    convert_from_f32(dst, cache.dtype(), src.data<float>(), static_cast<size_t>(src.numel()));
  else
    std::memcpy(dst, src.raw(), src.nbytes());
}

}  // namespace tiergen::kernels::cpu
