// Conformance of the CUDA backend against the CPU reference, in the manner of ggml's
// test-backend-ops: every op over a grid of shapes (odd sizes included) and dtypes, seeded random
// inputs rounded to the GPU dtype, the CPU backend run on the same values, a tolerance derived
// from the error model of each op (never set by eye), NaN/Inf failing outright, and the output
// written into a guarded device buffer whose sentinel bytes catch out-of-bounds writes.
// Without a visible GPU (CI has nvcc but no driver) every test skips with the reason.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <iostream>
#include <memory>
#include <ostream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "kernels/backend.h"
#include "runtime/core/error.h"
#include "runtime/generate/rates.h"
#include "tests/gpu/gpu_check.h"
#include "tests/testutil/testutil.h"

namespace tiergen::kernels {
namespace {

using namespace gpu_test;  // NOLINT(google-build-using-namespace): a test file

// ---------------------------------------------------------------------------------------------
// linear: out (M, N) = x (M, K) · w (N, K)^T + bias (N); linear_act with ReLU: relu of that;
// linear_add_: out += that

struct LinearCase {
  DType in;   // x, w and bias
  DType out;  // `in` or F32
  bool bias;
  bool relu = false;        // through linear_act(..., Act::Relu): the GEMM's epilogue where cuBLASLt has one
  bool accumulate = false;  // through linear_add_: out += the product (and bias)
  int stacked = 1;          // > 1: through linear_stacked, w and bias cut into that many projections
};

// What gtest prints for GetParam(), e.g. {in=F16, out=F32, bias=true}.
void PrintTo(const LinearCase& c, std::ostream* os) {
  *os << "{in=" << dtype_name(c.in) << ", out=" << dtype_name(c.out) << ", bias=" << (c.bias ? "true" : "false")
      << ", relu=" << (c.relu ? "true" : "false") << ", accumulate=" << (c.accumulate ? "true" : "false")
      << ", stacked=" << c.stacked << "}";
}

std::string linear_name(const ::testing::TestParamInfo<LinearCase>& info) {
  const LinearCase& c = info.param;
  return std::string(dtype_name(c.in)) + "_out" + dtype_name(c.out) + (c.bias ? "_bias" : "_nobias") +
         (c.relu ? "_relu" : "") + (c.accumulate ? "_accumulate" : "") +
         (c.stacked > 1 ? "_stacked" + std::to_string(c.stacked) : "");
}

class LinearConformance : public CudaTest, public ::testing::WithParamInterface<LinearCase> {};

// Error model. Let S = sum_k |x_k||w_k| + |b| and u = 2^-24.
//  - A product of two f16 (or two bf16) values is exact in f32 (11+11 <= 24 significant bits).
//  - Summing K products and the bias in f32, in any order, errs by at most (K+1)·u·S with
//    round-to-nearest adds (the CPU) and by at most (K+1)·2u·S if the tensor cores truncate their
//    adds (the GPU): 3(K+1)·u·S together, which 4(K+1)·u·S bounds with the second-order terms
//    while (K+1)·u < 1/4.
//  - The GPU then rounds once to out's dtype (kernels/cuda/linear.cu adds the bias to the f32
//    accumulator before that rounding): u_out·|ref| (plus u_out times the error above, inside the
//    same margin), or half a subnormal in f16's gradual underflow.
// So |gpu - cpu| <= u_out·|ref| + 4(K+1)·u·S + underflow_slack(out). ReLU moves no two values
// further apart (|relu(a) - relu(b)| <= |a - b|) and commutes with the rounding, so the same bound
// holds after it, with ref the CPU's relu(linear).
// Accumulating (linear_add_), ref = out0 + round_out(linear), and the GPU adds the product, the
// bias and out0 in an order of its own with a rounding to out's dtype between adds (linear then
// add_ rounds the product plus bias; cuBLASLt's beta = 1 epilogue rounds the product, then adds
// out0 and the bias): up to two more roundings of partial sums bounded by |out0| + S, so
// 2·u_out·(|out0| + S) more, and the slack twice.
// Runs linear on the GPU over the given inputs (x and w (M, K), (N, K) in c.in; b (N)) and checks
// it against the CPU; `ref` and `tol` get the reference and the tolerance of every element.
// `terms`: how many of the K products in a row of x may be nonzero (K unless x has zero columns:
// adding an exact zero does not round, so the error bound counts only the other terms).
// `out0`: out's contents before an accumulating call (c.accumulate), in c.out.
void check_linear_inputs(const LinearCase& c, const HostInput& x, const HostInput& w, const HostInput& b, double& worst,
                         std::vector<float>* ref_out = nullptr, std::vector<double>* tol_out = nullptr,
                         int64_t terms = -1, const HostInput* out0 = nullptr) {
  const int64_t M = x.f32.dim(0), N = w.f32.dim(0);
  const int64_t K = terms >= 0 ? terms : x.f32.dim(1);
  Tensor ref = Tensor::empty({M, N}, DType::F32);
  Tensor mag = Tensor::empty({M, N}, DType::F32);  // S for every output element
  const Tensor b_abs = abs_of(b.native);
  cpu().linear(ref, x.f32, w.native, c.bias ? &b.native : nullptr);
  if (c.relu) cpu().activation_(ref, Act::Relu);
  cpu().linear(mag, abs_of(x.f32), abs_of(w.native), c.bias ? &b_abs : nullptr);

  const Tensor xd = upload(x.native), wd = upload(w.native), bd = upload(b.native);
  const int64_t G = c.stacked, Ng = N / G;  // stacked: out (G, M, Ng), ref (M, G * Ng)
  GuardedOutput out(G > 1 ? Shape{G, M, Ng} : Shape{M, N}, c.out);
  ASSERT_EQ(c.accumulate, out0 != nullptr);
  if (G > 1) {
    gpu().linear_stacked(out.view(), xd, wd, c.bias ? &bd : nullptr);
  } else if (c.accumulate) {
    gpu().copy(out.view(), out0->native);
    gpu().linear_add_(out.view(), xd, wd, c.bias ? &bd : nullptr);
    // ref = out0 + the product rounded to out's dtype, as linear then add_ computes it.
    Tensor rounded = Tensor::empty({M, N}, c.out);
    convert_from_f32(rounded.raw(), c.out, ref.data<float>(), static_cast<size_t>(ref.numel()));
    convert_to_f32(ref.data<float>(), rounded.raw(), c.out, static_cast<size_t>(ref.numel()));
    for (int64_t i = 0; i < ref.numel(); ++i) ref.data<float>()[i] += out0->f32.data<float>()[i];
  } else if (c.relu) {
    gpu().linear_act(out.view(), xd, wd, c.bias ? &bd : nullptr, Act::Relu);
  } else {
    gpu().linear(out.view(), xd, wd, c.bias ? &bd : nullptr);
  }
  std::vector<float> got;
  ASSERT_TRUE(out.read(got));
  if (G > 1) {  // (G, M, Ng) -> (M, G * Ng), the layout of one linear over all of w
    std::vector<float> rows(got.size());
    for (int64_t g = 0; g < G; ++g)
      for (int64_t m = 0; m < M; ++m)
        for (int64_t n = 0; n < Ng; ++n) rows[(m * G + g) * Ng + n] = got[(g * M + m) * Ng + n];
    got = std::move(rows);
  }

  const double u_out = unit_roundoff(c.out);
  const double rounded_terms = c.accumulate ? 2.0 : 0.0;  // the product rounded before the add
  std::vector<double> tol(got.size());
  for (size_t i = 0; i < tol.size(); ++i)
    tol[i] = u_out * std::fabs(ref.data<float>()[i]) +
             rounded_terms * u_out * (mag.data<float>()[i] + (out0 ? std::fabs(out0->f32.data<float>()[i]) : 0.f)) +
             4.0 * static_cast<double>(K + 1) * kU32 * mag.data<float>()[i] +
             (1.0 + rounded_terms / 2) * underflow_slack(c.out);
  EXPECT_TRUE(all_close(got, ref.data<float>(), tol, static_cast<size_t>(N), worst));
  if (ref_out) ref_out->assign(ref.data<float>(), ref.data<float>() + ref.numel());
  if (tol_out) *tol_out = std::move(tol);
}

void check_linear(const LinearCase& c, int64_t M, int64_t K, int64_t N, double& worst) {
  SCOPED_TRACE("M=" + std::to_string(M) + " K=" + std::to_string(K) + " N=" + std::to_string(N));
  std::mt19937 rng(static_cast<uint32_t>(M * 1000003 + K * 1009 + N) ^ (static_cast<uint32_t>(c.in) << 20) ^
                   (static_cast<uint32_t>(c.out) << 24) ^ (c.bias ? 1u << 28 : 0u) ^ (c.relu ? 1u << 29 : 0u) ^
                   (c.accumulate ? 1u << 30 : 0u));
  const HostInput x = random_input({M, K}, c.in, -1.f, 1.f, rng);
  const HostInput w = random_input({N * c.stacked, K}, c.in, -1.f, 1.f, rng);
  const HostInput b = random_input({N * c.stacked}, c.in, -1.f, 1.f, rng);
  const HostInput out0 = random_input({M, N}, c.out, -4.f, 4.f, rng);
  check_linear_inputs(c, x, w, b, worst, nullptr, nullptr, -1, c.accumulate ? &out0 : nullptr);
}

TEST_P(LinearConformance, MatchesCpuReference) {
  const LinearCase c = GetParam();
  double worst = 0;
  int cases = 0;
  for (int64_t M : {1, 3, 17, 64, 129})
    for (int64_t K : {1, 7, 64, 300, 4099})
      for (int64_t N : {1, 5, 64, 1000}) {
        check_linear(c, M, K, N, worst);
        ++cases;
      }
  std::cout << "[ linear " << linear_name({c, 0}) << " ] " << cases << " shapes, max |err|/tol " << worst << "\n";
}

// A bias with a 16-bit out and many rows: a BF16 out goes through an f32 scratch in row chunks of
// 32 MiB (2100 x 4096 f32 rows need two chunks), an F16 out through one cuBLASLt bias epilogue.
TEST_F(CudaTest, LinearBiasOverSeveralScratchChunks) {
  double worst = 0;
  check_linear({DType::BF16, DType::BF16, true}, 2100, 64, 4096, worst);
  check_linear({DType::F16, DType::F16, true}, 2100, 64, 4096, worst);
  std::cout << "[ linear chunked bias ] max |err|/tol " << worst << "\n";
}

// The bias must be added to the f32 accumulator before the one rounding to the 16-bit out. Near
// cancellation that is visible: every row of x is the same row, so acc[m, n] = acc[n], and the bias
// is -round(acc[n]); the exact result acc - round(acc) is a fraction of an ulp of acc, while a GEMM
// that rounded its product to 16 bits before adding the bias would return exactly 0, off by up to
// u_out·|acc|. The tolerance grows with the number of products, so the engine's shapes (K = 4096,
// 16384: other GEMM kernels, split-K among them) use a row of x with 8 nonzeros: the GEMM still
// runs over all K, while the error bound counts 8 terms. The test checks that a double-rounded
// output would fail every case, so each has the power to catch such an epilogue.
TEST_F(CudaTest, LinearBiasRoundsOnceNearCancellation) {
  struct Shape3 {
    int64_t M, K, N, nonzeros;  // nonzeros per row of x (K: dense)
  };
  const Shape3 shapes[] = {{1, 7, 64, 7},        {1, 64, 1000, 64},     {40, 7, 1000, 7},
                           {40, 64, 64, 64},     {32, 4096, 4096, 8},   {32, 4096, 16384, 8},
                           {32, 16384, 4096, 8}, {2048, 4096, 4096, 8}, {512, 4096, 16384, 8}};
  for (const DType dt : {DType::F16, DType::BF16}) {
    double worst = 0;
    int caught = 0, cases = 0;
    for (const Shape3& sh : shapes) {
      const int64_t M = sh.M, K = sh.K, N = sh.N;
      SCOPED_TRACE(std::string(dtype_name(dt)) + " M=" + std::to_string(M) + " K=" + std::to_string(K) +
                   " N=" + std::to_string(N) + " nonzeros=" + std::to_string(sh.nonzeros));
      std::mt19937 rng(static_cast<uint32_t>(M * 7919 + K * 104729 + N) ^ (static_cast<uint32_t>(dt) << 20));
      HostInput row = random_input({1, K}, dt, -1.f, 1.f, rng);
      if (sh.nonzeros < K) {  // keep every (K / nonzeros)-th element
        const int64_t stride = K / sh.nonzeros;
        for (int64_t k = 0; k < K; ++k)
          if (k % stride != 0 || k / stride >= sh.nonzeros) row.f32.data<float>()[k] = 0.f;
        convert_from_f32(row.native.raw(), dt, row.f32.data<float>(), static_cast<size_t>(K));
      }
      const HostInput w = random_input({N, K}, dt, -1.f, 1.f, rng);
      HostInput x{Tensor::empty({M, K}, dt), Tensor::empty({M, K}, DType::F32)};
      for (int64_t m = 0; m < M; ++m) {
        std::memcpy(static_cast<char*>(x.native.raw()) + m * row.native.nbytes(), row.native.raw(),
                    row.native.nbytes());
        std::memcpy(x.f32.data<float>() + m * K, row.f32.data<float>(), row.f32.nbytes());
      }
      Tensor acc = Tensor::empty({1, N}, DType::F32);
      cpu().linear(acc, row.f32, w.native, nullptr);
      HostInput b{Tensor::empty({N}, dt), Tensor::empty({N}, DType::F32)};
      for (int64_t n = 0; n < N; ++n) b.f32.data<float>()[n] = -acc.data<float>()[n];
      convert_from_f32(b.native.raw(), dt, b.f32.data<float>(), static_cast<size_t>(N));
      convert_to_f32(b.f32.data<float>(), b.native.raw(), dt, static_cast<size_t>(N));

      std::vector<float> ref;
      std::vector<double> tol;
      check_linear_inputs({dt, dt, true}, x, w, b, worst, &ref, &tol, sh.nonzeros);
      // round(acc) + bias is exactly 0: what rounding before the bias would give.
      double unused = 0;
      const std::vector<float> rounded_twice(ref.size(), 0.f);
      caught += !all_close(rounded_twice, ref.data(), tol, static_cast<size_t>(N), unused);
      ++cases;
    }
    EXPECT_EQ(caught, cases) << dtype_name(dt) << ": a double rounding would pass some cases; they test nothing";
    std::cout << "[ linear bias near cancellation " << dtype_name(dt) << " ] " << cases << " shapes, max |err|/tol "
              << worst << "\n";
  }
}

INSTANTIATE_TEST_SUITE_P(
    Cuda, LinearConformance,
    ::testing::Values(
        LinearCase{DType::F16, DType::F16, false}, LinearCase{DType::F16, DType::F16, true},
        LinearCase{DType::F16, DType::F32, false}, LinearCase{DType::F16, DType::F32, true},
        LinearCase{DType::BF16, DType::BF16, false}, LinearCase{DType::BF16, DType::BF16, true},
        LinearCase{DType::BF16, DType::F32, false}, LinearCase{DType::BF16, DType::F32, true},
        // f32 runs: products are no longer exact, each errs by u|x||w|, which adds K·u·S
        // and stays inside the 4(K+1)·u·S term above.
        LinearCase{DType::F32, DType::F32, false}, LinearCase{DType::F32, DType::F32, true},
        // ReLU: fused into the bias epilogue (F16, F32 outs) or applied after (BF16
        // out, no bias).
        LinearCase{DType::F16, DType::F16, true, true}, LinearCase{DType::F16, DType::F32, true, true},
        LinearCase{DType::BF16, DType::BF16, true, true}, LinearCase{DType::F32, DType::F32, true, true},
        LinearCase{DType::F16, DType::F16, false, true},
        // linear_add_: cuBLASLt's beta = 1, or linear then add_ (BF16 out with a bias)
        LinearCase{DType::F16, DType::F16, true, false, true}, LinearCase{DType::F16, DType::F16, false, false, true},
        LinearCase{DType::F16, DType::F32, true, false, true}, LinearCase{DType::BF16, DType::BF16, true, false, true},
        LinearCase{DType::BF16, DType::BF16, false, false, true}, LinearCase{DType::F32, DType::F32, true, false, true},
        // linear_stacked: cuBLASLt's strided batch (x shared), or one linear per
        // projection (BF16 out with a bias)
        LinearCase{DType::F16, DType::F16, true, false, false, 3},
        LinearCase{DType::F16, DType::F16, false, false, false, 2},
        LinearCase{DType::F16, DType::F32, true, false, false, 3},
        LinearCase{DType::BF16, DType::BF16, true, false, false, 3},
        LinearCase{DType::BF16, DType::BF16, false, false, false, 2},
        LinearCase{DType::F32, DType::F32, true, false, false, 3}),
    linear_name);

// ---------------------------------------------------------------------------------------------
// rms_norm: out (M, C) = x / sqrt(mean(x^2) + eps) * w (C)

struct RmsCase {
  DType x, w, out;
};

// What gtest prints for GetParam(), e.g. {x=BF16, w=F32, out=BF16}.
void PrintTo(const RmsCase& c, std::ostream* os) {
  *os << "{x=" << dtype_name(c.x) << ", w=" << dtype_name(c.w) << ", out=" << dtype_name(c.out) << "}";
}

std::string rms_name(const ::testing::TestParamInfo<RmsCase>& info) {
  const RmsCase& c = info.param;
  return std::string("x") + dtype_name(c.x) + "_w" + dtype_name(c.w) + "_out" + dtype_name(c.out);
}

class RmsNormConformance : public CudaTest, public ::testing::WithParamInterface<RmsCase> {};

// Error model, relative to |ref| elementwise (every step is a product or a sum of positive terms,
// so nothing cancels). u = 2^-24.
//  GPU (kernels/cuda/norm.cu): sum of C squares in f32, any order, C·u; / C and + eps, 2u;
//    so (C+2)·u on mean+eps, halved by the square root; rsqrtf is within 2 ulp, 4u; x·inv and
//    w·(...), 2u: (C/2 + 7)·u. Then one rounding to out's dtype: u_out.
//  CPU (kernels/cpu/norm.cc): double accumulation (negligible), inv rounded to f32, two f32
//    products: 3u.
// So |gpu - cpu| <= (u_out + (C/2 + 10)·u)·|ref|; we allow (C/2 + 16)·u to cover second-order
// terms, plus half a subnormal for f16 underflow.
TEST_P(RmsNormConformance, MatchesCpuReference) {
  const RmsCase c = GetParam();
  const int64_t Ms[] = {1, 3, 17, 64, 129};
  const int64_t Cs[] = {1, 7, 64, 1000, 4099, 8192};
  const float eps = 1e-5f;
  double worst = 0;
  int cases = 0;
  for (int64_t M : Ms)
    for (int64_t C : Cs) {
      SCOPED_TRACE("M=" + std::to_string(M) + " C=" + std::to_string(C));
      std::mt19937 rng(static_cast<uint32_t>(M * 100003 + C) ^ (static_cast<uint32_t>(c.x) << 20) ^
                       (static_cast<uint32_t>(c.w) << 24) ^ (static_cast<uint32_t>(c.out) << 28));
      const HostInput x = random_input({M, C}, c.x, -2.f, 2.f, rng);
      const HostInput w = random_input({C}, c.w, -1.5f, 1.5f, rng);

      Tensor ref = Tensor::empty({M, C}, DType::F32);
      cpu().rms_norm(ref, x.f32, w.native, eps);

      const Tensor xd = upload(x.native), wd = upload(w.native);
      GuardedOutput out({M, C}, c.out);
      gpu().rms_norm(out.view(), xd, wd, eps);
      std::vector<float> got;
      ASSERT_TRUE(out.read(got));

      const double rel = unit_roundoff(c.out) + (static_cast<double>(C) / 2 + 16) * kU32;
      std::vector<double> tol(got.size());
      for (size_t i = 0; i < tol.size(); ++i) tol[i] = rel * std::fabs(ref.data<float>()[i]) + underflow_slack(c.out);
      EXPECT_TRUE(all_close(got, ref.data<float>(), tol, static_cast<size_t>(C), worst));
      ++cases;
    }
  std::cout << "[ rms_norm " << rms_name({c, 0}) << " ] " << cases << " shapes, max |err|/tol " << worst << "\n";
}

std::vector<RmsCase> rms_cases() {
  // Activations in and out in one dtype (the model's), widening to F32 and narrowing from F32,
  // each against every weight dtype a checkpoint may hold.
  const DType io[][2] = {{DType::F32, DType::F32}, {DType::F16, DType::F16},  {DType::BF16, DType::BF16},
                         {DType::F16, DType::F32}, {DType::BF16, DType::F32}, {DType::F32, DType::F16},
                         {DType::F32, DType::BF16}};
  std::vector<RmsCase> cases;
  for (const auto& p : io)
    for (DType w : {DType::F32, DType::F16, DType::BF16}) cases.push_back({p[0], w, p[1]});
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Cuda, RmsNormConformance, ::testing::ValuesIn(rms_cases()), rms_name);

// In place (out aliases x), as the engine runs it on the residual stream: same bits as out of place.
TEST_F(CudaTest, RmsNormInPlaceMatchesOutOfPlace) {
  std::mt19937 rng(7);
  const HostInput x = random_input({33, 4099}, DType::BF16, -2.f, 2.f, rng);
  const HostInput w = random_input({4099}, DType::BF16, 0.5f, 1.5f, rng);
  Tensor xd = upload(x.native);
  const Tensor wd = upload(w.native);
  Tensor separate = gpu().alloc(xd.shape(), DType::BF16);
  gpu().rms_norm(separate, xd, wd, 1e-6f);
  gpu().rms_norm(xd, xd, wd, 1e-6f);
  Tensor a = Tensor::empty(xd.shape(), DType::BF16), b = Tensor::empty(xd.shape(), DType::BF16);
  gpu().copy(a, separate);
  gpu().copy(b, xd);
  EXPECT_EQ(std::memcmp(a.raw(), b.raw(), a.nbytes()), 0);
}

// ---------------------------------------------------------------------------------------------
// The backend itself: identity, memory, errors.

TEST_F(CudaTest, NamesItsDevice) {
  EXPECT_EQ(gpu().kind(), DeviceKind::Cuda);
  EXPECT_EQ(gpu().name().rfind("cuda:0 ", 0), 0u) << gpu().name();
  std::cout << "[ device ] " << gpu().name() << "\n";
}

// The roofline's rates, measured on the GPU: within what any GPU of the last decade and the next
// can do (a probe that timed nothing, or mixed up units, lands outside), and printed for the log.
// The read probe needs 16-byte alignment and says so; it leaves the peak memory where it was.
TEST_F(CudaTest, RooflineRatesArePlausible) {
  const uint64_t peak_before = gpu().peak_memory().value_or(0);
  const DeviceRates r = measure_rates(gpu(), DType::F16, DType::F16);
  std::cout << "[ rates ] GEMM " << r.gemm_flops / 1e12 << " TFLOP/s f16, memory read " << r.read_bytes / 1e9
            << " GB/s\n";
  EXPECT_GT(r.gemm_flops, 1e12);
  EXPECT_LT(r.gemm_flops, 1e16);
  EXPECT_GT(r.read_bytes, 1e11);
  EXPECT_LT(r.read_bytes, 1e14);
  // The probe's 2 GiB are gone from the peak (the GEMM's scratch stays pooled: at most 128 MiB).
  EXPECT_LE(gpu().peak_memory().value_or(0), peak_before + (uint64_t{3} << 28));
  const Tensor buf = gpu().alloc({64}, DType::U8);
  EXPECT_THROW_WITH(gpu().read_probe(buf.slice_rows(1, 64)), InternalError, "16-byte aligned");
}

TEST_F(CudaTest, AllocIsZeroedAndCopiesRoundTrip) {
  Tensor d = gpu().alloc({7, 13}, DType::F16);
  EXPECT_EQ(d.tier(), Tier::Gpu);
  Tensor h = Tensor::empty({7, 13}, DType::F16);
  std::memset(h.raw(), 0x5a, h.nbytes());
  gpu().copy(h, d);  // D2H
  EXPECT_TRUE(std::all_of(h.data<uint8_t>(), h.data<uint8_t>() + h.nbytes(), [](uint8_t v) { return v == 0; }));

  std::mt19937 rng(11);
  const HostInput src = random_input({7, 13}, DType::F16, -3.f, 3.f, rng);
  gpu().copy(d, src.native);  // H2D
  Tensor d2 = gpu().alloc({91}, DType::F16);
  gpu().copy(d2, d);  // D2D, same element count in another shape
  gpu().copy(h, d2);  // D2H
  EXPECT_EQ(std::memcmp(h.raw(), src.native.raw(), h.nbytes()), 0);
  gpu().synchronize();
}

TEST_F(CudaTest, ShapeTierAndDtypeMismatchesThrow) {
  Tensor x = gpu().alloc({3, 8}, DType::F16), w = gpu().alloc({4, 7}, DType::F16);
  Tensor out = gpu().alloc({3, 4}, DType::F16);
  EXPECT_THROW_WITH(gpu().linear(out, x, w, nullptr), InternalError, "linear: x");  // K 8 vs 7
  Tensor w8 = gpu().alloc({4, 8}, DType::F16), out5 = gpu().alloc({3, 5}, DType::F16);
  EXPECT_THROW_WITH(gpu().linear(out5, x, w8, nullptr), InternalError, "linear: out");
  Tensor bias3 = gpu().alloc({3}, DType::F16);
  EXPECT_THROW_WITH(gpu().linear(out, x, w8, &bias3), InternalError, "linear: bias");
  Tensor w_bf16 = gpu().alloc({4, 8}, DType::BF16);
  EXPECT_THROW_WITH(gpu().linear(out, x, w_bf16, nullptr), UnsupportedError, "linear");
  const Tensor x_host = Tensor::empty({3, 8}, DType::F16);
  EXPECT_THROW_WITH(gpu().linear(out, x_host, w8, nullptr), InternalError, "not in GPU memory");

  Tensor nx = gpu().alloc({3, 8}, DType::F32), nw = gpu().alloc({7}, DType::F32);
  Tensor nout = gpu().alloc({3, 8}, DType::F32);
  EXPECT_THROW_WITH(gpu().rms_norm(nout, nx, nw, 1e-5f), InternalError, "rms_norm: w");
  Tensor nw8 = gpu().alloc({8}, DType::F32), nout2 = gpu().alloc({2, 8}, DType::F32);
  EXPECT_THROW_WITH(gpu().rms_norm(nout2, nx, nw8, 1e-5f), InternalError, "rms_norm: out");

  Tensor small = Tensor::empty({5}, DType::F32);
  EXPECT_THROW_WITH(gpu().copy(small, nx), InternalError, "copy");
}

TEST_F(CudaTest, MissingDeviceIsInvalidArgument) {
  EXPECT_THROW_WITH(make_cuda_backend(4096), InvalidArgumentError, "CUDA device 4096 does not exist");
}

}  // namespace
}  // namespace tiergen::kernels
