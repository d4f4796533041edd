// Conformance of the CUDA engine's pointwise and row ops (kernels/cuda/elementwise.cu: add_,
// activation_, silu_mul_, cast; kernels/cuda/rows.cu: embedding, gather_rows, argmax_rows) against
// the CPU reference or a direct host computation, in the manner of cuda_conformance_test.cc: a grid
// of shapes with odd sizes, seeded inputs rounded to the GPU dtype, outputs in guarded buffers, a
// tolerance derived per op (stated above each check) and NaN/Inf failing outright. The launchers of
// kernels/cuda/ops.h are called directly: most have no Backend op yet (argmax_rows and cast never
// will). Without a visible GPU, or in a build without CUDA, every test skips. The norms are in
// cuda_norm_test.cc.
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

// ---------------------------------------------------------------------------------------------
// Pointwise: add_, activation_ (Relu, Gelu, GeluTanh, Silu), silu_mul_

enum class Pw { Add, Relu, Gelu, GeluTanh, Silu, SiluMul };
const char* pw_name(Pw p) {
  static const char* const names[] = {"Add", "Relu", "Gelu", "GeluTanh", "Silu", "SiluMul"};
  return names[static_cast<int>(p)];
}
bool binary(Pw p) { return p == Pw::Add || p == Pw::SiluMul; }

struct PwCase {
  Pw op;
  DType x, y;  // y: the second operand of add_ / silu_mul_ (up)
};
void PrintTo(const PwCase& c, std::ostream* os) {
  *os << "{" << pw_name(c.op) << ", x=" << dtype_name(c.x);
  if (binary(c.op)) *os << ", y=" << dtype_name(c.y);
  *os << "}";
}
std::string pw_case_name(const ::testing::TestParamInfo<PwCase>& info) {
  const PwCase& c = info.param;
  return std::string(pw_name(c.op)) + "_" + dtype_name(c.x) + (binary(c.op) ? std::string("_y") + dtype_name(c.y) : "");
}
std::vector<PwCase> pw_cases() {
  std::vector<PwCase> cases;
  for (Pw op : {Pw::Add, Pw::Relu, Pw::Gelu, Pw::GeluTanh, Pw::Silu, Pw::SiluMul})
    for (DType d : kFloats) cases.push_back({op, d, d});
  cases.push_back({Pw::Add, DType::BF16, DType::F32});  // operands of two dtypes
  cases.push_back({Pw::SiluMul, DType::F32, DType::F16});
  return cases;
}

class PointwiseConformance : public CudaTest, public ::testing::WithParamInterface<PwCase> {};

// Bounds, u = 2^-24. Both sides compute in f32 from the same values; the GPU rounds once to x's
// dtype (u_out·|ref|, half a subnormal below f16's normal range). A library function within k ulp
// is within 2k·u relative; CUDA documents at most 2 ulp for erff, tanhf and expf, and we allow 2 ulp
// for glibc's too (its table of known maximum errors lists no more for these on x86-64).
//  add_: one f32 sum of the same operands on both sides: u_out·|ref|.
//  Relu: a selection, exact: 0.
//  Silu x / (1 + e), e = exp(-x): e within 4u relative per side, which 1 + e passes on scaled by
//    e/(1 + e) <= 1, plus its rounding: 5u; the quotient's rounding: 6u per side, 12u·|ref|.
//  silu_mul_: one more product per side: 14u·|ref|.
//  Gelu 0.5x·(1 + erf(x/√2)): the erf argument is the same f32 product on both sides; the two erfs
//    differ by 8u·|erf| <= 8u, 1 + erf adds u·|1 + erf| <= 2u per side: 12u absolute, times 0.5|x|
//    (exact), plus the product's rounding on each side: 6u·|x| + 2u·|ref|. It is absolute in x because
//    1 + erf cancels for negative x.
//  GeluTanh 0.5x·(1 + tanh(z)), z = 0.79788456x(1 + 0.044715x²): z takes five roundings per side
//    (a fused multiply-add on the GPU changes none of the bound): 10u·|z| between the sides, which
//    tanh scales by sech²(z): |z| sech²(z) <= 0.45, so 4.5u; the tanhs add 8u; 1 + tanh 4u; times
//    0.5|x| and the last rounding: 8.25u·|x| + 2u·|ref|.
// Margins for second-order terms: Silu 16u, silu_mul_ 18u, Gelu 8u|x| + 3u|ref|, GeluTanh 10u|x| + 3u|ref|.
double pw_tol(Pw op, double x, double ref, DType out) {
  const double u = kU32, r = std::fabs(ref), ax = std::fabs(x);
  const double base = unit_roundoff(out) * r + underflow_slack(out);
  switch (op) {
    case Pw::Add:
      return base;
    case Pw::Relu:
      return 0.0;
    case Pw::Silu:
      return base + 16 * u * r;
    case Pw::SiluMul:
      return base + 18 * u * r;
    case Pw::Gelu:
      return base + 8 * u * ax + 3 * u * r;
    case Pw::GeluTanh:
      return base + 10 * u * ax + 3 * u * r;
  }
  return 0.0;
}

void check_pointwise(const PwCase& c, int64_t M, int64_t C, int64_t shift, double& worst) {
  SCOPED_TRACE("M=" + std::to_string(M) + " C=" + std::to_string(C) + " shift=" + std::to_string(shift));
  std::mt19937 rng(seed(M, C, tag_of({3, int(c.op), int(c.x), int(c.y)})));
  // [-8, 8] reaches GELU's cancelling negative tail and saturates tanh and exp.
  const HostInput x = random_input({M, C}, c.x, -8.f, 8.f, rng);
  const HostInput y = random_input({M, C}, c.y, -4.f, 4.f, rng);
  Tensor ref = copy_of(x.f32);
  const Act acts[] = {Act::Relu, Act::Relu, Act::Gelu, Act::GeluTanh, Act::Silu, Act::Silu};
  if (c.op == Pw::Add)
    cpu().add_(ref, y.f32);
  else if (c.op == Pw::SiluMul)
    cpu().silu_mul_(ref, y.f32);
  else
    cpu().activation_(ref, acts[static_cast<int>(c.op)]);

  GuardedOutput xd({M, C}, c.x);  // in place: the op's operand and its output
  gpu().copy(xd.view(), x.native);
  const Tensor yd = upload_at(y.native, shift);
  run_op([&](cudaStream_t s) {
    if (c.op == Pw::Add)
      cuda::add_(s, xd.view(), yd);
    else if (c.op == Pw::SiluMul)
      cuda::silu_mul_(s, xd.view(), yd);
    else
      cuda::activation_(s, xd.view(), acts[static_cast<int>(c.op)]);
  });
  std::vector<double> tol(static_cast<size_t>(M * C));
  for (size_t i = 0; i < tol.size(); ++i) tol[i] = pw_tol(c.op, x.f32.data<float>()[i], ref.data<float>()[i], c.x);
  expect_close(xd, ref.data<float>(), tol, C, worst);
}

TEST_P(PointwiseConformance, MatchesCpuReference) {
  double worst = 0;
  for (int64_t M : kMs)
    for (int64_t C : kCs) check_pointwise(GetParam(), M, C, 0, worst);
  std::cout << "[ pointwise " << pw_case_name({GetParam(), 0}) << " ] max |err|/tol " << worst << "\n";
}
INSTANTIATE_TEST_SUITE_P(Cuda, PointwiseConformance, ::testing::ValuesIn(pw_cases()), pw_case_name);

// Operands one element past an aligned address: every launcher must fall back to one-element
// accesses (a packed load there would fault), with the same bounds.
TEST_F(CudaTest, MisalignedOperandsTakeTheElementPath) {
  double worst = 0;
  for (int64_t C : {64, 1000, 4097}) {
    check_pointwise({Pw::Add, DType::BF16, DType::BF16}, 17, C, 1, worst);
    check_pointwise({Pw::SiluMul, DType::F16, DType::F16}, 17, C, 1, worst);
  }
}

// ---------------------------------------------------------------------------------------------
// cast, embedding, gather_rows: conversions by round to nearest even, compared bit for bit with
// the host conversions of runtime/core/dtype.h (tolerance 0).

struct PairCase {
  DType from, to;
};
void PrintTo(const PairCase& c, std::ostream* os) {
  *os << "{" << dtype_name(c.from) << " -> " << dtype_name(c.to) << "}";
}
std::string pair_name(const ::testing::TestParamInfo<PairCase>& info) {
  return std::string(dtype_name(info.param.from)) + "_to_" + dtype_name(info.param.to);
}
std::vector<PairCase> pair_cases() {
  std::vector<PairCase> cases;
  for (DType a : kFloats)
    for (DType b : kFloats) cases.push_back({a, b});
  return cases;
}

class CastConformance : public CudaTest, public ::testing::WithParamInterface<PairCase> {};
class EmbeddingConformance : public CudaTest, public ::testing::WithParamInterface<PairCase> {};

// Magnitudes 2^[-30, 15] with random signs: f16's subnormals, its flush to zero and rounding
// ties all occur, and nothing overflows f16.
HostInput log_uniform(Shape shape, DType dt, std::mt19937& rng) {
  Tensor f = Tensor::empty(shape, DType::F32);
  std::uniform_real_distribution<float> e(-30.f, 15.f);
  for (int64_t i = 0; i < f.numel(); ++i) f.data<float>()[i] = std::exp2(e(rng)) * (rng() & 1u ? -1.f : 1.f);
  Tensor native = Tensor::empty(shape, dt);
  convert_from_f32(native.raw(), dt, f.data<float>(), static_cast<size_t>(f.numel()));
  return {native, rounded(f, dt)};
}

TEST_P(CastConformance, RoundsToNearestEvenAsTheHost) {
  const PairCase c = GetParam();
  double worst = 0;
  for (int64_t M : kMs)
    for (int64_t C : kCs) {
      SCOPED_TRACE("M=" + std::to_string(M) + " C=" + std::to_string(C));
      std::mt19937 rng(seed(M, C, tag_of({4, int(c.from), int(c.to)})));
      const HostInput x = log_uniform({M, C}, c.from, rng);
      const Tensor ref = rounded(x.f32, c.to);
      const Tensor xd = upload(x.native);
      GuardedOutput out({M * C}, c.to);  // another shape, the same element count
      run_op([&](cudaStream_t s) { cuda::cast(s, out.view(), xd); });
      expect_close(out, ref.data<float>(), std::vector<double>(static_cast<size_t>(M * C), 0.0), C, worst);
    }
}
INSTANTIATE_TEST_SUITE_P(Cuda, CastConformance, ::testing::ValuesIn(pair_cases()), pair_name);

// out (T, C) = table (V, C)[ids + offset]; ids from a device int32 array, the first and last rows
// of the table included; offset 2 as OPT's learned positions use it.
TEST_P(EmbeddingConformance, MatchesCpuReference) {
  const PairCase c = GetParam();
  double worst = 0;
  for (int64_t T : kMs)
    for (int64_t C : kCs)
      for (int32_t offset : {0, 2}) {
        SCOPED_TRACE("T=" + std::to_string(T) + " C=" + std::to_string(C) + " offset=" + std::to_string(offset));
        std::mt19937 rng(seed(T, C, tag_of({5, int(c.from), int(c.to), offset})));
        const int64_t V = 37;
        const HostInput table = log_uniform({V, C}, c.from, rng);
        Tensor ids = Tensor::empty({T}, DType::I32);
        for (int64_t t = 0; t < T; ++t) ids.data<int32_t>()[t] = static_cast<int32_t>(rng() % (V - offset));
        ids.data<int32_t>()[0] = static_cast<int32_t>(V - 1 - offset);
        ids.data<int32_t>()[T - 1] = 0;
        Tensor ref = Tensor::empty({T, C}, DType::F32);
        cpu().embedding(ref, table.native, ids, offset);
        const Tensor td = upload(table.native), idd = upload(ids);
        GuardedOutput out({T, C}, c.to);
        run_op([&](cudaStream_t s) { cuda::embedding(s, out.view(), td, idd.data<int32_t>(), offset); });
        expect_close(out, rounded(ref, c.to).data<float>(), std::vector<double>(static_cast<size_t>(T * C), 0.0), C,
                     worst);
      }
}
INSTANTIATE_TEST_SUITE_P(Cuda, EmbeddingConformance, ::testing::ValuesIn(pair_cases()), pair_name);
class GatherRowsConformance : public CudaTest, public ::testing::WithParamInterface<PairCase> {};

// out (R, C) = x (T, C)[rows]: R from the grid, T = 131 so the last row is reachable, repeats
// allowed; the same copy as embedding's, from a misaligned x too (shift 1).
TEST_P(GatherRowsConformance, MatchesHostGather) {
  const PairCase c = GetParam();
  double worst = 0;
  for (int64_t R : kMs)
    for (int64_t C : kCs)
      for (int64_t shift : {0, 1}) {
        SCOPED_TRACE("R=" + std::to_string(R) + " C=" + std::to_string(C) + " shift=" + std::to_string(shift));
        std::mt19937 rng(seed(R, C, tag_of({6, int(c.from), int(c.to), int(shift)})));
        const int64_t T = 131;
        const HostInput x = log_uniform({T, C}, c.from, rng);
        Tensor rows = Tensor::empty({R}, DType::I32);
        Tensor ref = Tensor::empty({R, C}, DType::F32);
        for (int64_t r = 0; r < R; ++r) {
          const int32_t src = r == 0 ? static_cast<int32_t>(T - 1) : static_cast<int32_t>(rng() % T);
          rows.data<int32_t>()[r] = src;
          std::memcpy(ref.data<float>() + r * C, x.f32.data<float>() + src * C, static_cast<size_t>(C) * 4);
        }
        const Tensor xd = upload_at(x.native, shift), rd = upload(rows);
        GuardedOutput out({R, C}, c.to);
        run_op([&](cudaStream_t s) { cuda::gather_rows(s, out.view(), xd, rd.data<int32_t>()); });
        expect_close(out, rounded(ref, c.to).data<float>(), std::vector<double>(static_cast<size_t>(R * C), 0.0), C,
                     worst);
      }
}
INSTANTIATE_TEST_SUITE_P(Cuda, GatherRowsConformance, ::testing::ValuesIn(pair_cases()), pair_name);

// ---------------------------------------------------------------------------------------------
// argmax_rows: ids[r] = the column std::max_element finds in the widened row (the CPU sampler's
// greedy argmax, runtime/generate/sampler.cc): the first maximum; a NaN in column 0 answers 0, a
// NaN elsewhere is never chosen. Exact.

struct DtCase {
  DType dt;
};
void PrintTo(const DtCase& c, std::ostream* os) { *os << dtype_name(c.dt); }
std::string dt_name(const ::testing::TestParamInfo<DtCase>& info) { return dtype_name(info.param.dt); }

class ArgmaxRowsConformance : public CudaTest, public ::testing::WithParamInterface<DtCase> {};

// Row r of kind r % 6: continuous values; integers in [-3, 3] (many ties); a NaN in column 0; a
// NaN in every third column among ties; all -inf; +inf in two columns.
Tensor argmax_input(int64_t R, int64_t V, std::mt19937& rng) {
  Tensor f = Tensor::empty({R, V}, DType::F32);
  std::uniform_real_distribution<float> cont(-10.f, 10.f);
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  for (int64_t r = 0; r < R; ++r) {
    float* row = f.data<float>() + r * V;
    const int kind = static_cast<int>(r % 6);
    for (int64_t v = 0; v < V; ++v) {
      const float level = static_cast<float>(static_cast<int>(rng() % 7) - 3);
      row[v] = kind == 1 || kind == 3 ? level : kind == 4 ? -inf : cont(rng);
      if (kind == 3 && v % 3 == 1) row[v] = nan;
    }
    if (kind == 2) row[0] = nan;
    if (kind == 5) row[rng() % V] = inf, row[rng() % V] = inf;
  }
  return f;
}

TEST_P(ArgmaxRowsConformance, MatchesStdMaxElement) {
  const DType dt = GetParam().dt;
  for (int64_t R : kMs)
    for (int64_t V : {1, 7, 64, 1000, 4097, 32000, 50272})
      for (int64_t shift : {0, 1}) {
        SCOPED_TRACE("R=" + std::to_string(R) + " V=" + std::to_string(V) + " shift=" + std::to_string(shift));
        std::mt19937 rng(seed(R, V, tag_of({7, int(dt), int(shift)})));
        const Tensor f = argmax_input(R, V, rng);
        Tensor native = Tensor::empty({R, V}, dt);
        convert_from_f32(native.raw(), dt, f.data<float>(), static_cast<size_t>(f.numel()));
        const Tensor wide = rounded(f, dt), ld = upload_at(native, shift);
        // The ids are int32; the guarded buffer is typed F32 only so that read() hands its bytes
        // back unconverted (the 0xff poison reads as id -1, never a column).
        GuardedOutput ids({R}, DType::F32);
        run_op([&](cudaStream_t s) { cuda::argmax_rows(s, ids.view().data<int32_t>(), ld); });
        std::vector<float> bits;
        ASSERT_TRUE(ids.read(bits));
        std::vector<int32_t> got(static_cast<size_t>(R));
        std::memcpy(got.data(), bits.data(), got.size() * 4);
        for (int64_t r = 0; r < R; ++r) {
          const float* row = wide.data<float>() + r * V;
          EXPECT_EQ(got[static_cast<size_t>(r)], std::max_element(row, row + V) - row) << "row " << r;
        }
      }
}
INSTANTIATE_TEST_SUITE_P(Cuda, ArgmaxRowsConformance,
                         ::testing::Values(DtCase{DType::F32}, DtCase{DType::F16}, DtCase{DType::BF16}), dt_name);

// ---------------------------------------------------------------------------------------------

TEST_F(CudaTest, PointwiseAndRowMisuseThrowsNamingTheOp) {
  Tensor x = gpu().alloc({3, 8}, DType::F16), y = gpu().alloc({4, 8}, DType::F16);
  Tensor out = gpu().alloc({3, 7}, DType::F16), i32 = gpu().alloc({3, 8}, DType::I32);
  Tensor empty_cols = gpu().alloc({3, 0}, DType::F32), wide = gpu().alloc({24}, DType::F32);
  const Tensor host = Tensor::empty({3, 8}, DType::F16);
  int32_t* ids = i32.data<int32_t>();
  // Views of one buffer: x2 two elements past x1 (a partial overlap), narrow the first half of wide.
  const Tensor big = gpu().alloc({26}, DType::F16);
  Tensor x1(big.storage(), 0, {3, 8}, DType::F16), x2(big.storage(), 4, {3, 8}, DType::F16);
  const Tensor narrow(wide.storage(), 0, {24}, DType::F16);
  run_op([&](cudaStream_t s) {
    EXPECT_THROW_WITH(cuda::add_(s, x, y), InternalError, "add_: y");
    EXPECT_THROW_WITH(cuda::add_(s, i32, i32), UnsupportedError, "add_: dtype I32");
    EXPECT_THROW_WITH(cuda::add_(s, x, host), InternalError, "not in GPU memory");
    EXPECT_THROW_WITH(cuda::add_(s, x1, x2), InternalError, "add_: y");  // partly overlaps x
    EXPECT_THROW_WITH(cuda::silu_mul_(s, x, y), InternalError, "silu_mul_: up");
    EXPECT_THROW_WITH(cuda::activation_(s, i32, Act::Silu), UnsupportedError, "activation_: dtype I32");
    EXPECT_THROW_WITH(cuda::cast(s, out, x), InternalError, "cast: out");
    EXPECT_THROW_WITH(cuda::cast(s, wide, narrow), InternalError, "cast: out");  // in place across sizes races
    EXPECT_THROW_WITH(cuda::embedding(s, out, x, ids), InternalError, "embedding: out");
    EXPECT_THROW_WITH(cuda::gather_rows(s, out, x, ids), InternalError, "gather_rows: out");
    EXPECT_THROW_WITH(cuda::gather_rows(s, x, host, ids), InternalError, "not in GPU memory");
    EXPECT_THROW_WITH(cuda::argmax_rows(s, ids, empty_cols), InternalError, "argmax_rows: logits");
  });
}

}  // namespace
}  // namespace tiergen::kernels

#else  // a build without the CUDA backend

TEST(CudaElementwise, SkippedWithoutCuda) { GTEST_SKIP() << "this build has no CUDA backend"; }

#endif
