// Conformance of the CUDA engine's norms, kernels/cuda/norm.cu (layer_norm) and add_norm.cu (the fused
// residual add + RMSNorm or LayerNorm), against the CPU reference, in the manner of
// cuda_conformance_test.cc: a grid of shapes with odd sizes, seeded inputs rounded to the GPU dtype,
// outputs in guarded buffers, a tolerance derived from each op's error model (stated above it) and
// NaN/Inf failing outright. The launchers of kernels/cuda/ops.h are called directly (add_norm has
// no Backend op). Without a visible GPU, or in a build without CUDA, every test skips.
#include <gtest/gtest.h>

#ifdef TIERGEN_HAVE_CUDA

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <iostream>
#include <limits>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "kernels/backend.h"
#include "kernels/cuda/ops.h"
#include "runtime/core/error.h"
#include "tests/gpu/cuda_ops_check.h"
#include "tests/gpu/gpu_check.h"
#include "tests/testutil/testutil.h"

namespace tiergen::kernels {
namespace {

using namespace gpu_test;  // NOLINT(google-build-using-namespace): a test file

// RMSNorm's bound, as cuda_conformance_test.cc derives it: (u_out + (C/2 + 16)·u)·|ref|.
std::vector<double> rms_tol(const Tensor& ref, int64_t C, DType out) {
  const double rel = unit_roundoff(out) + (static_cast<double>(C) / 2 + 16) * kU32;
  std::vector<double> tol(static_cast<size_t>(ref.numel()));
  for (size_t i = 0; i < tol.size(); ++i) tol[i] = rel * std::fabs(ref.data<float>()[i]) + underflow_slack(out);
  return tol;
}

// LayerNorm's bound. u = 2^-24; per row, with exact (double) mean, inv = 1/sqrt(var + eps),
// A = mean(|x|) and n_c = (x_c - mean)·inv:
//  GPU (kernels/cuda/norm.cu): the f32 sum of C values errs by at most C·u·sum|x| in any
//    order, so |mean_g - mean| <= C·u·A. The squares of (x - mean_g), summed in f32, /C, + eps:
//    (C + 4)·u relative (the shift by mean_g only adds (mean_g - mean)^2, second order); the square
//    root halves it and rsqrtf adds 2 ulp = 4u: inv within (C/2 + 6)·u. The subtraction and the
//    product by inv add 2u: |n_g - n| <= (C/2 + 8)·u·|n| + C·u·A·inv.
//  CPU (kernels/cpu/norm.cc): n in double, rounded to f32: u·|n|.
//  Both then form n·w + b in f32: at most u·|n w| + u·|y| each (fused or not).
// So |gpu - cpu| <= u_out·|ref| + |w|·((C/2 + 11)·u·|n| + C·u·A·inv) + 2u·|ref|, first order; we
// allow (C/2 + 16), (C + 2) and 3u for the second-order terms, plus half a subnormal.
std::vector<double> ln_tol(const Tensor& x, const Tensor& w, const Tensor& ref, int64_t M, int64_t C, DType out) {
  std::vector<double> tol(static_cast<size_t>(M * C));
  const double u = kU32, u_out = unit_roundoff(out);
  for (int64_t m = 0; m < M; ++m) {
    const float* xr = x.data<float>() + m * C;
    double sum = 0, abs_sum = 0, var = 0;
    for (int64_t c = 0; c < C; ++c) sum += xr[c], abs_sum += std::fabs(xr[c]);
    const double mean = sum / static_cast<double>(C);
    for (int64_t c = 0; c < C; ++c) var += (xr[c] - mean) * (xr[c] - mean);
    const double inv = 1.0 / std::sqrt(var / static_cast<double>(C) + kEps), A = abs_sum / static_cast<double>(C);
    for (int64_t c = 0; c < C; ++c) {
      const size_t i = static_cast<size_t>(m * C + c);
      const double n = std::fabs((xr[c] - mean) * inv), y = std::fabs(ref.data<float>()[i]);
      const double dn = (static_cast<double>(C) / 2 + 16) * u * n + static_cast<double>(C + 2) * u * A * inv;
      tol[i] = u_out * y + std::fabs(w.data<float>()[c]) * dn + 3 * u * y + underflow_slack(out);
    }
  }
  return tol;
}

// ---------------------------------------------------------------------------------------------
// layer_norm: out (M, C) = (x - mean) / sqrt(var + eps) * w (C) + b (C)

struct NormCase {
  DType x, w, out;
};
void PrintTo(const NormCase& c, std::ostream* os) {
  *os << "{x=" << dtype_name(c.x) << ", w=" << dtype_name(c.w) << ", out=" << dtype_name(c.out) << "}";
}
std::string norm_name(const ::testing::TestParamInfo<NormCase>& info) {
  const NormCase& c = info.param;
  return std::string("x") + dtype_name(c.x) + "_w" + dtype_name(c.w) + "_out" + dtype_name(c.out);
}
// Activations in and out in one dtype, widening and narrowing, each against every weight dtype.
std::vector<NormCase> norm_cases() {
  const DType io[][2] = {{DType::F32, DType::F32}, {DType::F16, DType::F16},  {DType::BF16, DType::BF16},
                         {DType::F16, DType::F32}, {DType::BF16, DType::F32}, {DType::F32, DType::BF16}};
  std::vector<NormCase> cases;
  for (const auto& p : io)
    for (DType w : kFloats) cases.push_back({p[0], w, p[1]});
  return cases;
}

class LayerNormConformance : public CudaTest, public ::testing::WithParamInterface<NormCase> {};

// x in [-1, 3]: a mean away from zero, so the C·u·A·inv term of the bound is exercised.
void check_layer_norm(const NormCase& c, int64_t M, int64_t C, int64_t shift, double& worst) {
  SCOPED_TRACE("M=" + std::to_string(M) + " C=" + std::to_string(C) + " shift=" + std::to_string(shift));
  std::mt19937 rng(seed(M, C, tag_of({1, int(c.x), int(c.w), int(c.out)})));
  const HostInput x = random_input({M, C}, c.x, -1.f, 3.f, rng);
  const HostInput w = random_input({C}, c.w, -1.5f, 1.5f, rng);
  const HostInput b = random_input({C}, c.w, -1.f, 1.f, rng);
  Tensor ref = Tensor::empty({M, C}, DType::F32);
  cpu().layer_norm(ref, x.f32, w.native, b.native, kEps);
  const Tensor xd = upload_at(x.native, shift), wd = upload(w.native), bd = upload(b.native);
  GuardedOutput out({M, C}, c.out);
  run_op([&](cudaStream_t s) { cuda::layer_norm(s, out.view(), xd, wd, bd, kEps); });
  expect_close(out, ref.data<float>(), ln_tol(x.f32, w.f32, ref, M, C, c.out), C, worst);
}

TEST_P(LayerNormConformance, MatchesCpuReference) {
  double worst = 0;
  for (int64_t M : kMs)
    for (int64_t C : kCs) check_layer_norm(GetParam(), M, C, 0, worst);
  std::cout << "[ layer_norm " << norm_name({GetParam(), 0}) << " ] max |err|/tol " << worst << "\n";
}
INSTANTIATE_TEST_SUITE_P(Cuda, LayerNormConformance, ::testing::ValuesIn(norm_cases()), norm_name);

// ---------------------------------------------------------------------------------------------
// add_norm: h += y, out = norm(h) (RMSNorm without b, LayerNorm with b)

struct AddNormCase {
  NormCase d;  // x = the dtype of h and y
  bool layer;
};
void PrintTo(const AddNormCase& c, std::ostream* os) {
  PrintTo(c.d, os);
  *os << (c.layer ? " layer_norm" : " rms_norm");
}
std::string add_norm_name(const ::testing::TestParamInfo<AddNormCase>& info) {
  return std::string(info.param.layer ? "ln_" : "rms_") + norm_name({info.param.d, 0});
}
std::vector<AddNormCase> add_norm_cases() {
  std::vector<AddNormCase> cases;
  for (bool layer : {false, true})
    for (const NormCase& d : norm_cases()) cases.push_back({d, layer});
  return cases;
}

class AddNormConformance : public CudaTest, public ::testing::WithParamInterface<AddNormCase> {};

// h: the CPU's add_ gives the f32 sum of the same values, which the GPU rounds once to h's dtype,
// as the host conversion does: bit for bit (tolerance 0). out: the CPU norm of that rounded h, under
// the rms_norm / layer_norm bounds above (any summation order is within them).
void check_add_norm(const AddNormCase& c, int64_t M, int64_t C, int64_t shift, double& worst_h, double& worst) {
  SCOPED_TRACE("M=" + std::to_string(M) + " C=" + std::to_string(C) + " shift=" + std::to_string(shift));
  std::mt19937 rng(seed(M, C, tag_of({2, int(c.d.x), int(c.d.w), int(c.d.out), c.layer})));
  const HostInput h = random_input({M, C}, c.d.x, -2.f, 2.f, rng);
  const HostInput y = random_input({M, C}, c.d.x, -2.f, 2.f, rng);
  const HostInput w = random_input({C}, c.d.w, -1.5f, 1.5f, rng);
  const HostInput b = random_input({C}, c.d.w, -1.f, 1.f, rng);
  Tensor sum = copy_of(h.f32);
  cpu().add_(sum, y.f32);
  const Tensor h_ref = rounded(sum, c.d.x);
  Tensor ref = Tensor::empty({M, C}, DType::F32);
  if (c.layer)
    cpu().layer_norm(ref, h_ref, w.native, b.native, kEps);
  else
    cpu().rms_norm(ref, h_ref, w.native, kEps);

  GuardedOutput hd({M, C}, c.d.x), out({M, C}, c.d.out);
  gpu().copy(hd.view(), h.native);
  const Tensor yd = upload_at(y.native, shift), wd = upload(w.native), bd = upload(b.native);
  run_op([&](cudaStream_t s) { cuda::add_norm(s, hd.view(), yd, out.view(), wd, c.layer ? &bd : nullptr, kEps); });
  expect_close(hd, h_ref.data<float>(), std::vector<double>(static_cast<size_t>(M * C), 0.0), C, worst_h);
  expect_close(out, ref.data<float>(), c.layer ? ln_tol(h_ref, w.f32, ref, M, C, c.d.out) : rms_tol(ref, C, c.d.out), C,
               worst);
}

TEST_P(AddNormConformance, MatchesCpuReference) {
  double worst_h = 0, worst = 0;
  for (int64_t M : kMs)
    for (int64_t C : kCs) check_add_norm(GetParam(), M, C, 0, worst_h, worst);
  std::cout << "[ add_norm " << add_norm_name({GetParam(), 0}) << " ] h exact, out max |err|/tol " << worst << "\n";
}
INSTANTIATE_TEST_SUITE_P(Cuda, AddNormConformance, ::testing::ValuesIn(add_norm_cases()), add_norm_name);

// Operands one element past an aligned address: the launchers must fall back to one-element
// accesses (a packed load there would fault), within the same bounds.
TEST_F(CudaTest, NormsOfMisalignedOperandsTakeTheElementPath) {
  double worst = 0, worst_h = 0;
  for (int64_t C : {64, 1000, 4097}) {
    check_layer_norm({DType::BF16, DType::BF16, DType::BF16}, 17, C, 1, worst);
    check_add_norm({{DType::F16, DType::F32, DType::F16}, false}, 17, C, 1, worst_h, worst);
    check_add_norm({{DType::F32, DType::F32, DType::F32}, true}, 17, C, 1, worst_h, worst);
  }
}

Tensor download(const Tensor& d) {
  Tensor h = Tensor::empty(d.shape(), d.dtype());
  gpu().copy(h, d);
  return h;
}

bool same_bits(const Tensor& a, const Tensor& b) {
  const Tensor ha = download(a), hb = download(b);
  return ha.nbytes() == hb.nbytes() && std::memcmp(ha.raw(), hb.raw(), ha.nbytes()) == 0;
}

// The aliases ops.h allows give the same bits as separate buffers: layer_norm in place (out = x),
// add_norm writing the norm over its input y (out = y), as the engine runs them.
TEST_F(CudaTest, NormAliasesMatchSeparateBuffers) {
  std::mt19937 rng(7);
  for (int64_t C : {1000, 4097}) {
    const HostInput x = random_input({33, C}, DType::BF16, -2.f, 2.f, rng);
    const HostInput y = random_input({33, C}, DType::BF16, -2.f, 2.f, rng);
    const HostInput w = random_input({C}, DType::BF16, 0.5f, 1.5f, rng);
    const Tensor wd = upload(w.native), bd = upload(w.native);
    Tensor xd = upload(x.native), separate = gpu().alloc(xd.shape(), DType::BF16);
    Tensor h1 = upload(x.native), h2 = upload(x.native), y2 = upload(y.native);
    const Tensor y1 = upload(y.native);
    run_op([&](cudaStream_t s) {
      cuda::layer_norm(s, separate, xd, wd, bd, kEps);
      cuda::layer_norm(s, xd, xd, wd, bd, kEps);
    });
    EXPECT_TRUE(same_bits(separate, xd)) << "layer_norm in place, C=" << C;
    for (const Tensor* b : {static_cast<const Tensor*>(nullptr), &bd}) {
      run_op([&](cudaStream_t s) {
        cuda::add_norm(s, h1, y1, separate, wd, b, kEps);
        cuda::add_norm(s, h2, y2, y2, wd, b, kEps);
      });
      EXPECT_TRUE(same_bits(separate, y2)) << "add_norm out = y, C=" << C << (b ? " layer" : " rms");
      EXPECT_TRUE(same_bits(h1, h2)) << "add_norm h, C=" << C;
      gpu().copy(h1, x.native);  // the next pass starts from the same h and y again
      gpu().copy(h2, x.native);
      gpu().copy(y2, y.native);
    }
  }
}

TEST_F(CudaTest, NormMisuseThrowsNamingTheOp) {
  Tensor x = gpu().alloc({3, 8}, DType::F16), out = gpu().alloc({3, 8}, DType::F16);
  Tensor w = gpu().alloc({8}, DType::F16), w7 = gpu().alloc({7}, DType::F16), b32 = gpu().alloc({8}, DType::F32);
  Tensor y4 = gpu().alloc({4, 8}, DType::F16), y32 = gpu().alloc({3, 8}, DType::F32);
  Tensor ids = gpu().alloc({3, 8}, DType::I32);
  const Tensor host = Tensor::empty({3, 8}, DType::F16);
  run_op([&](cudaStream_t s) {
    EXPECT_THROW_WITH(cuda::layer_norm(s, out, x, w7, w, kEps), InternalError, "layer_norm: w");
    EXPECT_THROW_WITH(cuda::layer_norm(s, out, x, w, w7, kEps), InternalError, "layer_norm: b");
    EXPECT_THROW_WITH(cuda::layer_norm(s, out, x, w, b32, kEps), UnsupportedError, "layer_norm: w");
    EXPECT_THROW_WITH(cuda::layer_norm(s, out, host, w, w, kEps), InternalError, "not in GPU memory");
    EXPECT_THROW_WITH(cuda::layer_norm(s, out, ids, w, w, kEps), UnsupportedError, "layer_norm: dtype I32");
    EXPECT_THROW_WITH(cuda::add_norm(s, x, y4, out, w, nullptr, kEps), InternalError, "add_norm: y");
    EXPECT_THROW_WITH(cuda::add_norm(s, x, y32, out, w, nullptr, kEps), UnsupportedError, "add_norm: h");
    EXPECT_THROW_WITH(cuda::add_norm(s, x, out, x, w, nullptr, kEps), InternalError, "add_norm: out");
    EXPECT_THROW_WITH(cuda::add_norm(s, x, out, out, w, &w7, kEps), InternalError, "add_norm: b");
  });
}

}  // namespace
}  // namespace tiergen::kernels

#else  // a build without the CUDA backend

TEST(CudaNorm, SkippedWithoutCuda) { GTEST_SKIP() << "this build has no CUDA backend"; }

#endif
