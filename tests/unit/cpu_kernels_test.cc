// Conformance of the CPU kernels (the reference backend) against naive double-precision loops,
// over a grid of shapes with odd sizes, for every weight dtype and both GEMM paths (row-at-a-time
// for small M, converted panels + sgemm for large M). NaN fails outright.
#include <cctype>
#include <cmath>
#include <ostream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "kernels/backend.h"
#include "kernels/cpu/ops.h"
#include "runtime/core/error.h"
#include "runtime/engine/layer.h"
#include "tests/testutil/testutil.h"

namespace tiergen {
namespace {

Tensor random_tensor(Shape shape, DType dtype, uint64_t seed, float scale = 1.0f) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> dist(-scale, scale);
  Tensor t = Tensor::empty(std::move(shape), dtype);
  for (int64_t i = 0; i < t.numel(); ++i) {
    float v = dist(rng);
    convert_from_f32(static_cast<char*>(t.raw()) + i * dtype_size(dtype), dtype, &v, 1);
  }
  return t;
}

// Relative error bound for an f32 dot product of length K: K ulps of the absolute sum.
void expect_close(const Tensor& out, const std::vector<double>& ref, const std::vector<double>& abs_scale, double k) {
  ASSERT_EQ(out.numel(), static_cast<int64_t>(ref.size()));
  for (size_t i = 0; i < ref.size(); ++i) {
    const float v = out.data<float>()[i];
    ASSERT_TRUE(std::isfinite(v)) << "element " << i;
    const double tol = (k + 2) * 1.2e-7 * abs_scale[i] + 1e-30;
    ASSERT_NEAR(v, ref[i], tol) << "element " << i;
  }
}

// out (M, N) = x (M, K) · w (N, K)^T [+ b (N)], w and b in dtype `wt`.
struct LinearParam {
  DType wt;
  int64_t M, N, K;
  bool bias;
};

// What gtest prints for GetParam() (--gtest_list_tests, failure messages): one line.
void PrintTo(const LinearParam& p, std::ostream* os) {
  *os << "{wt=" << dtype_name(p.wt) << ", M=" << p.M << ", N=" << p.N << ", K=" << p.K
      << ", bias=" << (p.bias ? "true" : "false") << "}";
}

// The test name suffix, e.g. m17_n130_k64_bf16_bias: [A-Za-z0-9_] only, as gtest requires.
std::string linear_param_name(const ::testing::TestParamInfo<LinearParam>& info) {
  const LinearParam& p = info.param;
  std::string dt = dtype_name(p.wt);
  for (char& c : dt) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  std::ostringstream name;
  name << "m" << p.M << "_n" << p.N << "_k" << p.K << "_" << dt << (p.bias ? "_bias" : "_nobias");
  return name.str();
}

// Every dtype x M (both GEMM paths) x N x K, with and without a bias.
std::vector<LinearParam> linear_grid() {
  std::vector<LinearParam> grid;
  for (DType wt : {DType::F32, DType::F16, DType::BF16})
    for (int64_t M : {1, 3, 8, 9, 67})
      for (int64_t N : {1, 5, 130})
        for (int64_t K : {1, 7, 64, 301})
          for (bool bias : {false, true}) grid.push_back({wt, M, N, K, bias});
  return grid;
}

class LinearTest : public ::testing::TestWithParam<LinearParam> {};

TEST_P(LinearTest, MatchesNaive) {
  const auto [wt, M, N, K, bias] = GetParam();
  auto be = kernels::make_cpu_backend();
  Tensor x = random_tensor({M, K}, DType::F32, 1);
  Tensor w = random_tensor({N, K}, wt, 2);
  Tensor b = random_tensor({N}, wt, 3);
  Tensor out = Tensor::empty({M, N});
  be->linear(out, x, w, bias ? &b : nullptr);
  const Tensor wf = w.to_f32(), bf = b.to_f32();
  std::vector<double> ref(static_cast<size_t>(M * N)), scale(ref.size());
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      double acc = bias ? bf.data<float>()[n] : 0.0, abs = bias ? std::fabs(bf.data<float>()[n]) : 0.0;
      for (int64_t k = 0; k < K; ++k) {
        const double p = static_cast<double>(x.data<float>()[m * K + k]) * wf.data<float>()[n * K + k];
        acc += p;
        abs += std::fabs(p);
      }
      ref[m * N + n] = acc;
      scale[m * N + n] = abs;
    }
  expect_close(out, ref, scale, static_cast<double>(K));
}

INSTANTIATE_TEST_SUITE_P(Grid, LinearTest, ::testing::ValuesIn(linear_grid()), linear_param_name);

TEST(CpuKernels, LinearRejectsShapeMismatch) {
  auto be = kernels::make_cpu_backend();
  Tensor x = Tensor::empty({2, 3}), w = Tensor::empty({4, 5}), out = Tensor::empty({2, 4});
  EXPECT_THROW_WITH(be->linear(out, x, w, nullptr), InternalError, "linear: x");
}

TEST(CpuKernels, Norms) {
  auto be = kernels::make_cpu_backend();
  for (int64_t C : {1, 7, 64, 1000}) {
    Tensor x = random_tensor({5, C}, DType::F32, 4, 3.0f);
    Tensor w = random_tensor({C}, DType::BF16, 5), b = random_tensor({C}, DType::F16, 6);
    const Tensor wf = w.to_f32(), bf = b.to_f32();
    Tensor rms = Tensor::empty({5, C}), ln = Tensor::empty({5, C});
    be->rms_norm(rms, x, w, 1e-6f);
    be->layer_norm(ln, x, w, b, 1e-5f);
    for (int64_t m = 0; m < 5; ++m) {
      const float* r = x.data<float>() + m * C;
      double ss = 0, mean = 0, var = 0;
      for (int64_t c = 0; c < C; ++c) ss += double(r[c]) * r[c], mean += r[c];
      mean /= C;
      for (int64_t c = 0; c < C; ++c) var += (r[c] - mean) * (r[c] - mean);
      var /= C;
      for (int64_t c = 0; c < C; ++c) {
        const double e_rms = r[c] / std::sqrt(ss / C + 1e-6) * wf.data<float>()[c];
        const double e_ln = (r[c] - mean) / std::sqrt(var + 1e-5) * wf.data<float>()[c] + bf.data<float>()[c];
        EXPECT_NEAR(rms.data<float>()[m * C + c], e_rms, 1e-5 * (1 + std::fabs(e_rms))) << C;
        EXPECT_NEAR(ln.data<float>()[m * C + c], e_ln, 1e-5 * (1 + std::fabs(e_ln))) << C;
      }
    }
  }
}

TEST(CpuKernels, ActivationsAndSiluMul) {
  auto be = kernels::make_cpu_backend();
  Tensor x = random_tensor({3, 33}, DType::F32, 7, 4.0f);
  const std::vector<float> orig(x.data<float>(), x.data<float>() + x.numel());
  auto run = [&](kernels::Act act, auto fn) {
    Tensor y = Tensor::empty({3, 33});
    std::copy(orig.begin(), orig.end(), y.data<float>());
    be->activation_(y, act);
    for (size_t i = 0; i < orig.size(); ++i)
      EXPECT_NEAR(y.data<float>()[i], fn(double(orig[i])), 1e-6 * (1 + std::fabs(fn(double(orig[i])))));
  };
  run(kernels::Act::Relu, [](double v) { return v > 0 ? v : 0.0; });
  run(kernels::Act::Gelu, [](double v) { return 0.5 * v * (1 + std::erf(v / std::sqrt(2.0))); });
  run(kernels::Act::GeluTanh,
      [](double v) { return 0.5 * v * (1 + std::tanh(0.79788456 * v * (1 + 0.044715 * v * v))); });
  run(kernels::Act::Silu, [](double v) { return v / (1 + std::exp(-v)); });
  Tensor g = Tensor::empty({3, 33}), u = random_tensor({3, 33}, DType::F32, 8);
  std::copy(orig.begin(), orig.end(), g.data<float>());
  be->silu_mul_(g, u);
  for (size_t i = 0; i < orig.size(); ++i) {
    const double e = orig[i] / (1 + std::exp(-double(orig[i]))) * u.data<float>()[i];
    EXPECT_NEAR(g.data<float>()[i], e, 1e-6 * (1 + std::fabs(e)));
  }
}

TEST(CpuKernels, EmbeddingGathersAndRejectsBadIds) {
  auto be = kernels::make_cpu_backend();
  Tensor table = random_tensor({10, 6}, DType::F16, 9);
  const Tensor tf = table.to_f32();
  const std::vector<int32_t> ids = {3, 0, 9, 3};
  Tensor out = Tensor::empty({4, 6});
  kernels::cpu::embedding(out, table, ids);
  for (int64_t t = 0; t < 4; ++t)
    for (int64_t c = 0; c < 6; ++c) EXPECT_EQ(out.data<float>()[t * 6 + c], tf.data<float>()[ids[t] * 6 + c]);
  const std::vector<int32_t> bad = {10};
  Tensor one = Tensor::empty({1, 6});
  EXPECT_THROW_WITH(kernels::cpu::embedding(one, table, bad), InvalidArgumentError,
                    "token id 10 is outside the vocabulary");
}

TEST(CpuKernels, RopeRotatesHalves) {
  auto be = kernels::make_cpu_backend();
  const int D = 8, H = 3;
  Tensor x = random_tensor({4, H * D}, DType::F32, 10);
  const std::vector<float> orig(x.data<float>(), x.data<float>() + x.numel());
  const std::vector<int64_t> pos = {0, 1, 7, 100};
  const std::vector<float> inv = {1.0f, 0.1f, 0.01f, 0.001f};
  kernels::cpu::rope_(x, D, pos, inv);
  for (int64_t t = 0; t < 4; ++t)
    for (int h = 0; h < H; ++h)
      for (int i = 0; i < D / 2; ++i) {
        const double a = orig[t * H * D + h * D + i], b = orig[t * H * D + h * D + i + D / 2];
        const double ang = double(float(pos[t]) * inv[i]);
        EXPECT_NEAR(x.data<float>()[t * H * D + h * D + i], a * std::cos(ang) - b * std::sin(ang), 2e-6);
        EXPECT_NEAR(x.data<float>()[t * H * D + h * D + i + D / 2], b * std::cos(ang) + a * std::sin(ang), 2e-6);
      }
}

// Naive causal attention for one sequence whose queries are its last q_len positions.
void naive_attention(std::vector<double>& out, const float* q, const float* k, const float* v, int64_t q_len,
                     int64_t kv_len, int Hq, int Hkv, int D, float scale, const std::vector<float>& slopes) {
  out.assign(static_cast<size_t>(q_len * Hq * D), 0.0);
  for (int64_t i = 0; i < q_len; ++i)
    for (int h = 0; h < Hq; ++h) {
      const int kh = h / (Hq / Hkv);
      const int64_t pos = kv_len - q_len + i;
      std::vector<double> s(static_cast<size_t>(pos + 1));
      double mx = -1e300;
      for (int64_t j = 0; j <= pos; ++j) {
        double d = 0;
        for (int c = 0; c < D; ++c) d += double(q[(i * Hq + h) * D + c]) * k[(j * Hkv + kh) * D + c];
        s[j] = d * scale + (slopes.empty() ? 0.0 : slopes[h] * double(j));
        mx = std::max(mx, s[j]);
      }
      double sum = 0;
      for (auto& e : s) sum += (e = std::exp(e - mx));
      for (int64_t j = 0; j <= pos; ++j)
        for (int c = 0; c < D; ++c) out[(i * Hq + h) * D + c] += s[j] / sum * v[(j * Hkv + kh) * D + c];
    }
}

TEST(CpuKernels, AttentionRaggedGqaAlibi) {
  auto be = kernels::make_cpu_backend();
  for (bool alibi : {false, true}) {
    const int Hq = 6, Hkv = alibi ? 6 : 2, D = 5;
    const std::vector<float> slopes = alibi ? alibi_slopes(Hq) : std::vector<float>{};
    // Two sequences: a prefill of 5 tokens and a decode step (1 new token after 8 cached).
    const std::vector<std::pair<int64_t, int64_t>> shapes = {{5, 5}, {1, 9}};  // (q_len, kv_len)
    std::vector<kernels::AttentionSeq> seqs;
    int64_t rows = 0;
    for (size_t s = 0; s < shapes.size(); ++s) {
      seqs.push_back({rows, shapes[s].first, shapes[s].second, random_tensor({12, Hkv * D}, DType::F32, 20 + s),
                      random_tensor({12, Hkv * D}, DType::F32, 30 + s)});
      rows += shapes[s].first;
    }
    Tensor q = random_tensor({rows, Hq * D}, DType::F32, 11), out = Tensor::empty({rows, Hq * D});
    kernels::AttentionParams p{Hq, Hkv, D, 0.4f, alibi ? slopes.data() : nullptr};
    kernels::cpu::attention(out, q, seqs, p);
    for (const auto& s : seqs) {
      std::vector<double> ref;
      naive_attention(ref, q.data<float>() + s.q_begin * Hq * D, s.k.data<float>(), s.v.data<float>(), s.q_len,
                      s.kv_len, Hq, Hkv, D, 0.4f, slopes);
      for (size_t i = 0; i < ref.size(); ++i) EXPECT_NEAR(out.data<float>()[s.q_begin * Hq * D + i], ref[i], 1e-5);
    }
  }
}

// A 16-bit cache (a GPU run's, kept in host memory) gives what an f32 cache holding the same values
// gives: each element is widened exactly as it is read, then the arithmetic is the f32 kernel's (to
// f32 rounding: the compiler may order the vectorised sums differently in the two instances).
TEST(CpuKernels, AttentionOverA16BitCacheEqualsItsF32Widening) {
  for (DType dt : {DType::F16, DType::BF16})
    for (const auto& [hq, hkv, d] : std::vector<std::tuple<int, int, int>>{{4, 4, 64}, {8, 2, 128}, {3, 1, 5}}) {
      SCOPED_TRACE(std::string(dtype_name(dt)) + " heads " + std::to_string(hq) + "/" + std::to_string(hkv) + " dim " +
                   std::to_string(d));
      const std::vector<std::pair<int64_t, int64_t>> shapes = {{7, 7}, {1, 40}, {2, 33}};  // (q_len, kv_len)
      std::vector<kernels::AttentionSeq> narrow, wide;
      int64_t rows = 0;
      for (size_t s = 0; s < shapes.size(); ++s) {
        kernels::AttentionSeq n{rows, shapes[s].first, shapes[s].second, Tensor(), Tensor()};
        for (Tensor* t : {&n.k, &n.v}) {
          *t = Tensor::empty({48, hkv * d}, dt);
          kernels::convert_on_host(*t, random_tensor({48, hkv * d}, DType::F32, 40 + s + (t == &n.v ? 7 : 0)));
        }
        narrow.push_back(n);
        wide.push_back({rows, n.q_len, n.kv_len, n.k.to_f32(), n.v.to_f32()});
        rows += shapes[s].first;
      }
      const Tensor q = random_tensor({rows, hq * d}, DType::F32, 12);
      Tensor a = Tensor::empty({rows, hq * d}), b = Tensor::empty({rows, hq * d});
      const kernels::AttentionParams p{hq, hkv, d, 0.125f, nullptr};
      kernels::cpu::attention(a, q, narrow, p);
      kernels::cpu::attention(b, q, wide, p);
      for (int64_t i = 0; i < a.numel(); ++i)
        ASSERT_NEAR(a.data<float>()[i], b.data<float>()[i], 1e-6 * std::max(1.0f, std::fabs(b.data<float>()[i])))
            << "element " << i;
    }
}

// Decode-shaped batches (many sequences, one query each, many heads), where the kernel gives each
// work item a block of kv heads: the naive attention's result for every head count, GQA ratio and
// head size, with ALiBi, over an f32 cache and an f16 one (against the naive run on the f16
// cache's values widened).
TEST(CpuKernels, AttentionInDecodeShapesMatchesTheNaiveOne) {
  struct Case {
    int hq, hkv, d, seqs;
    bool alibi;
    int64_t min_kv = 1;  // long caches are split over several work items, their partial softmaxes merged
  };
  for (const Case& c : {Case{16, 16, 128, 9, false}, Case{32, 4, 64, 20, false}, Case{12, 12, 80, 3, true},
                        Case{56, 56, 128, 40, false}, Case{8, 1, 24, 5, true}, Case{16, 16, 128, 2, false, 700},
                        Case{8, 2, 64, 3, true, 300}, Case{56, 56, 128, 1, false, 2000}})
    for (DType dt : {DType::F32, DType::F16}) {
      SCOPED_TRACE(std::to_string(c.hq) + "/" + std::to_string(c.hkv) + " heads, dim " + std::to_string(c.d) + ", " +
                   std::to_string(c.seqs) + " sequences, " + dtype_name(dt));
      const std::vector<float> slopes = c.alibi ? alibi_slopes(c.hq) : std::vector<float>{};
      std::vector<kernels::AttentionSeq> seqs, wide;
      for (int s = 0; s < c.seqs; ++s) {
        const int64_t kv_len = c.min_kv + (s * 37) % 61, rows = c.min_kv + 63;
        kernels::AttentionSeq n{s, 1, kv_len, Tensor(), Tensor()};
        for (Tensor* t : {&n.k, &n.v}) {
          *t = Tensor::empty({rows, c.hkv * c.d}, dt);
          kernels::convert_on_host(*t, random_tensor({rows, c.hkv * c.d}, DType::F32, 100 + 2 * s + (t == &n.v)));
        }
        seqs.push_back(n);
        wide.push_back({s, 1, kv_len, n.k.to_f32(), n.v.to_f32()});
      }
      const Tensor q = random_tensor({c.seqs, c.hq * c.d}, DType::F32, 13);
      Tensor out = Tensor::empty({c.seqs, c.hq * c.d});
      const auto scale = static_cast<float>(1.0 / std::sqrt(c.d));
      kernels::cpu::attention(out, q, seqs, {c.hq, c.hkv, c.d, scale, c.alibi ? slopes.data() : nullptr});
      for (const auto& s : wide) {
        std::vector<double> ref;
        naive_attention(ref, q.data<float>() + s.q_begin * c.hq * c.d, s.k.data<float>(), s.v.data<float>(), 1,
                        s.kv_len, c.hq, c.hkv, c.d, scale, slopes);
        for (size_t i = 0; i < ref.size(); ++i)
          ASSERT_NEAR(out.data<float>()[s.q_begin * c.hq * c.d + i], ref[i], 2e-5) << "sequence " << s.q_begin;
      }
    }
}

TEST(CpuKernels, WriteRowsNarrowsF32IntoA16BitCache) {
  Tensor cache = Tensor::empty({4, 3}, DType::F16);
  const Tensor row = random_tensor({1, 3}, DType::F32, 5);
  kernels::cpu::write_rows(cache, 2, row);
  Tensor want = Tensor::empty({1, 3}, DType::F16);
  kernels::convert_on_host(want, row);
  EXPECT_EQ(std::memcmp(cache.slice_rows(2, 3).raw(), want.raw(), want.nbytes()), 0);
  EXPECT_THROW(kernels::cpu::write_rows(cache, 0, Tensor::empty({1, 3}, DType::BF16)), InternalError);
}

TEST(CpuKernels, AlibiSlopesMatchBloomDefinition) {
  // 8 heads: 2^-1 .. 2^-8. 6 heads: the 4-head series 2^-2, 2^-4, 2^-6, 2^-8, then the odd powers
  // of the 8-head base: 2^-1, 2^-3.
  const auto s8 = alibi_slopes(8);
  for (int i = 0; i < 8; ++i) EXPECT_FLOAT_EQ(s8[i], std::pow(2.0f, -(i + 1.0f)));
  const auto s6 = alibi_slopes(6);
  const float e6[] = {0.25f, 0.0625f, 0.015625f, 0.00390625f, 0.5f, 0.125f};
  ASSERT_EQ(s6.size(), 6u);
  for (int i = 0; i < 6; ++i) EXPECT_FLOAT_EQ(s6[i], e6[i]);
}

TEST(Dtype, F16RoundTripsEveryValue) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = f16_to_f32(static_cast<uint16_t>(h));
    if (std::isnan(f)) continue;
    ASSERT_EQ(f32_to_f16(f), h) << std::hex << h;
  }
  EXPECT_EQ(f32_to_f16(1e6f), 0x7c00);                // overflow -> inf
  EXPECT_EQ(f32_to_f16(1.0f + 1.0f / 4096), 0x3c00);  // ties to even
  EXPECT_EQ(f32_to_bf16(1.0f + 1.0f / 256), 0x3f80);  // ties to even
  EXPECT_EQ(bf16_to_f32(f32_to_bf16(3.140625f)), 3.140625f);
}

}  // namespace
}  // namespace tiergen
