// Conformance of the CUDA attention, rope_ and write_kv launchers (kernels/cuda/attention*.cu,
// rope.cu, write_kv.cu) against the CPU backend, in the manner of cuda_conformance_test.cc: seeded
// inputs rounded to the GPU dtype, the CPU reference run on the same values widened to f32, a
// tolerance derived from each op's error model (written next to it), NaN failing outright, and
// outputs in guarded device buffers. Cache rows that no sequence owns hold NaN, so a kernel that
// reads past a sequence's keys fails. The launchers are called directly (the backend does not
// route these ops yet) on a stream of their own.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <iostream>
#include <numeric>
#include <ostream>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "kernels/backend.h"
#include "runtime/core/error.h"
#include "tests/gpu/gpu_check.h"
#include "tests/testutil/testutil.h"

#ifdef TIERGEN_HAVE_CUDA
#include <cuda_runtime.h>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_handles.h"
#include "kernels/cuda/ops.h"
#endif

namespace tiergen::kernels {
namespace {

#ifndef TIERGEN_HAVE_CUDA
TEST(CudaAttention, NeedsTheCudaBackend) { GTEST_SKIP() << "this build has no CUDA backend"; }
#else

using namespace gpu_test;  // NOLINT(google-build-using-namespace): a test file

// The launchers' stream and scratch, as the engine will own them. gpu() stages inputs and reads
// outputs on the backend's own stream, so each side is drained before the other touches the data.
struct Launch {
  cuda::Stream stream{0};
  cuda::Workspace ws{0};
};
Launch& launch() {
  static Launch l;
  return l;
}
void before_launch() { gpu().synchronize(); }
void after_launch() { CUDA_CHECK(cudaStreamSynchronize(launch().stream.get())); }

Tensor host_i32(const std::vector<int32_t>& v) {
  Tensor t = Tensor::empty({static_cast<int64_t>(v.size())}, DType::I32);
  std::memcpy(t.raw(), v.data(), v.size() * sizeof(int32_t));
  return t;
}

// Overwrites rows [r0, r1) of a host tensor with 0xff bytes: NaN in F32, F16 and BF16.
void poison_rows(Tensor& t, int64_t r0, int64_t r1) {
  const size_t row = t.nbytes() / static_cast<size_t>(t.dim(0));
  std::memset(static_cast<char*>(t.raw()) + r0 * row, 0xff, static_cast<size_t>(r1 - r0) * row);
}

// ---------------------------------------------------------------------------------------------
// attention

struct AttnCase {
  DType act;    // q and out
  DType cache;  // K and V
  int head_dim;
  int n_heads;
  int n_kv_heads;
  bool alibi;
};

void PrintTo(const AttnCase& c, std::ostream* os) {
  *os << "{act=" << dtype_name(c.act) << ", cache=" << dtype_name(c.cache) << ", head_dim=" << c.head_dim
      << ", heads=" << c.n_heads << "/" << c.n_kv_heads << ", alibi=" << (c.alibi ? "true" : "false") << "}";
}

std::string attn_name(const ::testing::TestParamInfo<AttnCase>& info) {
  const AttnCase& c = info.param;
  return std::string(dtype_name(c.act)) + "_cache" + dtype_name(c.cache) + "_d" + std::to_string(c.head_dim) + "_h" +
         std::to_string(c.n_heads) + "kv" + std::to_string(c.n_kv_heads) + (c.alibi ? "_alibi" : "_noalibi");
}

// A step's sequences: (new tokens, tokens already cached).
using Batch = std::vector<std::pair<int, int> >;

// Error model. For output row t (query i of sequence s at position pos, n = pos + 1 keys visible),
// head h and dim d, with u = 2^-24: the output is a convex combination sum_j w_j v_j of the V rows,
// and GPU and CPU differ by their weights and by their rounding of the sum.
//  Weights. w_j = e^(s_j) / sum_i e^(s_i). If each side's e^(s_j) carries a relative error of at
//   most e^eps - 1 =: delta, its weights differ from the exact ones by sum_j |dw_j| <= 2 delta /
//   (1 - delta) (a common factor cancels in the normalisation), so the two sides by that with
//   eps the sum of both sides' exponent errors:
//   - scores s_j = dot(q, k_j) * scale + slope * j: the dot in f32 errs by D u sum|q k| (CPU, FMA or
//     adds in any order) and 2 D u sum|q k| (GPU: tensor cores may truncate their adds); each side's
//     scale-and-ALiBi step by 2u (|dot| scale + |slope| j). With A = ||q||_1 max_{j<=pos} |k_j| >=
//     sum|q k|: u ((3D + 4) scale A + 4 |slope| pos);
//   - exp: expf within 2 ulp (4u) on the GPU, std::exp within 1 ulp (2u) on the CPU: 6u;
//   - normalisation: the CPU's float(1 / sum) and p * inv, 2u; the GPU's 1 / l and o * (1 / l), 2u;
//   - the GPU's online rescales exp(m_old - m_new), 4u each, shared by l and acc so they only
//     perturb the weights of the keys seen before them: at most n / 8 + 2 per key (every kernel
//     takes at least 8 keys per rescale) plus a merge of key groups and one of chunks: 4u (n/8 + 4);
//   - the tensor-core kernels (q and cache both F16 or both BF16 and head_dim % 16 == 0: prefill,
//     q_len > 1, and decode when query heads share kv heads) round P to that dtype before P V and
//     sum l over the rounded P: u_p = unit roundoff of the dtype; 0 otherwise (head dim 8 goes to
//     the SIMT kernels in every dtype pair).
//   So eps = u ((3D + 4) scale A + 4 |slope| pos + n/2 + 26) + u_p, and sum|dw| * max|v| bounds the
//   error it causes, max|v| over the visible rows of V in dim d's kv head (Mv).
//  Sums (relative to sum_j w_j |v_j| <= Mv): the CPU's f32 accumulation of n products, (n + 1) u;
//   the GPU's accumulation and its sum l, each a rounding per key and per rescale plus the
//   key-group and chunk merges, (2n + 40) u each (l's error is a common factor on the output; a
//   merge adds rounding only where both sides are nonzero, so even the 128 key groups of the SIMT
//   decode at head dim 8 add at most one rounding per key seen);
//   the rounding of s_j - m on each side, u |s_j - m| on a weight e^(s_j - m) / L, at most u / e
//   per key: n u over both sides. Total (6n + 81) u Mv.
//  Output: the GPU rounds once to its dtype, u_out |out|, plus half a subnormal in underflow.
// |gpu - cpu| <= u_out |ref| + (1 + u_out) Mv (2 delta / (1 - delta) + (6n + 81) u) + underflow_slack.
void check_attention(const AttnCase& c, const Batch& batch, uint32_t seed, double& worst) {
  const int D = c.head_dim, Hq = c.n_heads, Hkv = c.n_kv_heads, group = Hq / Hkv;
  const int S = static_cast<int>(batch.size());
  std::mt19937 rng(seed);
  int max_kv = 0;
  for (const auto& [q_len, past] : batch) max_kv = std::max(max_kv, q_len + past);
  const int64_t capacity = max_kv + 3;
  const int slots = S + 2;
  std::vector<int32_t> slot_of(static_cast<size_t>(slots));
  std::iota(slot_of.begin(), slot_of.end(), 0);
  std::shuffle(slot_of.begin(), slot_of.end(), rng);  // sequences in scattered slots

  StepPlan plan;
  for (int s = 0; s < S; ++s)
    plan.add_sequence(std::vector<int32_t>(static_cast<size_t>(batch[s].first), 0), batch[s].second,
                      slot_of[static_cast<size_t>(s)]);
  const int64_t T = plan.num_tokens();
  const int64_t C = static_cast<int64_t>(Hkv) * D;

  // q spread so that scores span several units (a softmax far from uniform); K and V in [-1, 1].
  const HostInput q = random_input({T, static_cast<int64_t>(Hq) * D}, c.act, -3.f, 3.f, rng);
  HostInput k = random_input({slots * capacity, C}, c.cache, -1.f, 1.f, rng);
  HostInput v = random_input({slots * capacity, C}, c.cache, -1.f, 1.f, rng);
  // Rows past each slot's kv_len, and whole unused slots, are NaN (in F32, native and f32 are one
  // tensor; poisoning it twice is harmless).
  std::vector<int> kv_of_slot(static_cast<size_t>(slots), 0);
  for (int s = 0; s < S; ++s) kv_of_slot[static_cast<size_t>(slot_of[static_cast<size_t>(s)])] = plan.kv_len[s];
  for (int sl = 0; sl < slots; ++sl)
    for (Tensor* t : {&k.native, &k.f32, &v.native, &v.f32})
      poison_rows(*t, sl * capacity + kv_of_slot[static_cast<size_t>(sl)], (sl + 1) * capacity);

  Tensor slopes = Tensor::empty({Hq}, DType::F32);
  for (int h = 0; h < Hq; ++h)  // BLOOM's slopes for a power-of-two head count, 2^(-8 (h + 1) / H)
    slopes.data<float>()[h] = std::exp2(-8.f * static_cast<float>(h + 1) / static_cast<float>(Hq));
  const float scale = 1.f / std::sqrt(static_cast<float>(D));

  Tensor ref = Tensor::empty({T, static_cast<int64_t>(Hq) * D}, DType::F32);
  LayerKv kv{k.f32, v.f32, capacity};
  const StepTensors st = cpu().upload_step(plan);
  kernels::AttentionShape cpu_shape{Hq, Hkv, D, scale, c.alibi ? slopes : Tensor()};
  cpu().attention(ref, q.f32, kv, st, cpu_shape);

  const Tensor qd = upload(q.native), kd = upload(k.native), vd = upload(v.native), sd = upload(slopes);
  const Tensor qb = upload(host_i32(plan.q_begin)), ql = upload(host_i32(plan.q_len));
  const Tensor kl = upload(host_i32(plan.kv_len)), sl = upload(host_i32(plan.slot));
  GuardedOutput out({T, static_cast<int64_t>(Hq) * D}, c.act);
  const cuda::SeqMeta meta{qb.data<int32_t>(), ql.data<int32_t>(), kl.data<int32_t>(), sl.data<int32_t>(), S,
                           plan.max_q_len(),   plan.max_kv_len()};
  const cuda::AttentionShape shape{Hq, Hkv, D, scale, c.alibi ? sd.data<float>() : nullptr};
  before_launch();
  cuda::attention(launch().stream.get(), launch().ws, out.view(), qd, kd, vd, capacity, meta, shape);
  after_launch();
  std::vector<float> got;
  ASSERT_TRUE(out.read(got));

  const double u = kU32, u_out = unit_roundoff(c.act);
  // As attention_prefill.cu's prefill() and attention_decode.cu's decode() dispatch.
  const bool tensor_cores = c.act == c.cache && c.act != DType::F32 && D % 16 == 0;
  std::vector<double> tol(got.size());
  for (int s = 0; s < S; ++s) {
    const int q_len = plan.q_len[s], kv_len = plan.kv_len[s];
    const int64_t first = static_cast<int64_t>(plan.slot[s]) * capacity;
    for (int kvh = 0; kvh < Hkv; ++kvh) {
      // Running maxima of |k| and |v| over this sequence's rows, for every prefix.
      std::vector<double> kmax(static_cast<size_t>(kv_len)), vmax(static_cast<size_t>(kv_len));
      for (int j = 0; j < kv_len; ++j) {
        double km = j ? kmax[j - 1] : 0, vm = j ? vmax[j - 1] : 0;
        for (int d = 0; d < D; ++d) {
          km = std::max(km, std::fabs(static_cast<double>(k.f32.data<float>()[(first + j) * C + kvh * D + d])));
          vm = std::max(vm, std::fabs(static_cast<double>(v.f32.data<float>()[(first + j) * C + kvh * D + d])));
        }
        kmax[static_cast<size_t>(j)] = km;
        vmax[static_cast<size_t>(j)] = vm;
      }
      for (int i = 0; i < q_len; ++i) {
        const int pos = kv_len - q_len + i, n = pos + 1;
        const int64_t row = plan.q_begin[s] + i;
        const double u_p = tensor_cores && (q_len > 1 || group > 1) ? unit_roundoff(c.act) : 0.0;
        for (int h = kvh * group; h < (kvh + 1) * group; ++h) {
          double q1 = 0;
          for (int d = 0; d < D; ++d) q1 += std::fabs(q.f32.data<float>()[row * Hq * D + h * D + d]);
          const double A = q1 * kmax[static_cast<size_t>(pos)];
          const double slope = c.alibi ? slopes.data<float>()[h] : 0.0;
          const double eps = u * ((3.0 * D + 4) * scale * A + 4 * std::fabs(slope) * pos + n / 2.0 + 26) + u_p;
          const double delta = std::expm1(eps);
          const double mv = vmax[static_cast<size_t>(pos)];
          const double bound = mv * (2 * delta / (1 - delta) + (6.0 * n + 81) * u);
          for (int d = 0; d < D; ++d) {
            const size_t idx = static_cast<size_t>(row * Hq * D + h * D + d);
            tol[idx] = u_out * std::fabs(ref.data<float>()[idx]) + (1 + u_out) * bound + underflow_slack(c.act);
          }
        }
      }
    }
  }
  EXPECT_TRUE(all_close(got, ref.data<float>(), tol, static_cast<size_t>(Hq) * D, worst));
}

class AttentionConformance : public CudaTest, public ::testing::WithParamInterface<AttnCase> {};

uint32_t case_seed(const AttnCase& c, uint32_t batch) {
  return static_cast<uint32_t>(c.head_dim * 7919 + c.n_heads * 131 + c.n_kv_heads * 17) ^
         (static_cast<uint32_t>(c.act) << 20) ^ (static_cast<uint32_t>(c.cache) << 24) ^ (c.alibi ? 1u << 28 : 0u) ^
         (batch << 12);
}

TEST_P(AttentionConformance, RaggedBatchesMatchCpuReference) {
  const AttnCase c = GetParam();
  // Prefill of several lengths (1 goes to the decode kernel in the same step); a mixed step of
  // decodes over 1..600 cached tokens with chunked prefills beside them; a pure decode step
  // across chunk and tile boundaries.
  const std::vector<std::pair<const char*, Batch> > batches = {
      {"prefill", {{1, 0}, {7, 0}, {33, 0}, {130, 0}}},
      {"mixed", {{1, 1}, {1, 17}, {20, 100}, {1, 63}, {1, 64}, {3, 5}, {1, 65}, {1, 255}, {64, 0}, {1, 599}, {1, 600}}},
      {"decode", {{1, 0}, {1, 1}, {1, 31}, {1, 32}, {1, 127}, {1, 128}, {1, 129}, {1, 300}, {1, 511}, {1, 599}}},
  };
  double all = 0;
  std::string line;
  for (size_t b = 0; b < batches.size(); ++b) {
    SCOPED_TRACE(std::string("batch ") + batches[b].first);
    double worst = 0;
    check_attention(c, batches[b].second, case_seed(c, static_cast<uint32_t>(b)), worst);
    line += std::string(" ") + batches[b].first + " " + std::to_string(worst);
    all = std::max(all, worst);
  }
  std::cout << "[ attention " << attn_name({c, 0}) << " ] max |err|/tol" << line << "\n";
}

std::vector<AttnCase> attention_cases() {
  std::vector<AttnCase> cases;
  const std::pair<int, int> heads[] = {{4, 4}, {8, 2}, {12, 1}};  // GQA ratio 1, 4, MQA (12 > 8 per block)
  // Head dims 8, 16 and 32 are those of small models (the Hugging Face reference models of
  // tests/data/hf-reference have 8 and 16): 8 runs on the SIMT kernels in every dtype pair (no
  // mma k-slice of 16 fits it; in 16 bits its key groups are single threads), 16 and 32 on the
  // tensor cores where the pair is 16-bit (short tile rows, few key groups per warp in SIMT).
  for (DType dt : {DType::F32, DType::F16, DType::BF16})
    for (int D : {8, 16, 32, 64, 80, 128, 256})
      for (const auto& [hq, hkv] : heads)
        for (bool alibi : {false, true}) cases.push_back({dt, dt, D, hq, hkv, alibi});
  // The remaining head dim, and mixed dtype pairs (the SIMT prefill and mixed decode loads).
  cases.push_back({DType::F16, DType::F16, 96, 8, 2, true});
  cases.push_back({DType::F32, DType::F32, 96, 4, 4, false});
  for (const auto& [act, cache] :
       {std::pair{DType::F16, DType::F32}, std::pair{DType::BF16, DType::F16}, std::pair{DType::F32, DType::BF16}})
    for (int D : {64, 128}) cases.push_back({act, cache, D, 8, 2, D == 128});
  // Every mixed pair at the small head dims, MHA (one query head per SIMT decode block) and GQA
  // with ALiBi (8 per block): the loads of 8- and 16-byte q pieces against 16-byte cache pieces.
  for (const auto& [act, cache] :
       {std::pair{DType::F16, DType::F32}, std::pair{DType::BF16, DType::F32}, std::pair{DType::F32, DType::F16},
        std::pair{DType::F32, DType::BF16}, std::pair{DType::F16, DType::BF16}, std::pair{DType::BF16, DType::F16}})
    for (int D : {8, 16, 32}) {
      cases.push_back({act, cache, D, 4, 4, false});
      cases.push_back({act, cache, D, 8, 2, true});
    }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Cuda, AttentionConformance, ::testing::ValuesIn(attention_cases()), attn_name);

// Long contexts: decode over ~3000 keys splits each sequence into many chunks; a prefill chunk
// with 2960 tokens before it walks many key tiles.
class AttentionLongContext : public CudaTest, public ::testing::WithParamInterface<AttnCase> {};

TEST_P(AttentionLongContext, SplitDecodeMatchesCpuReference) {
  const AttnCase c = GetParam();
  double worst = 0;
  check_attention(c, {{1, 2999}, {1, 3000}, {1, 1500}, {40, 2960}, {1, 0}}, case_seed(c, 9), worst);
  std::cout << "[ attention long " << attn_name({c, 0}) << " ] max |err|/tol " << worst << "\n";
}

INSTANTIATE_TEST_SUITE_P(Cuda, AttentionLongContext,
                         ::testing::Values(AttnCase{DType::F32, DType::F32, 128, 8, 2, false},
                                           AttnCase{DType::F16, DType::F16, 128, 8, 2, false},
                                           AttnCase{DType::BF16, DType::BF16, 128, 8, 2, true},
                                           AttnCase{DType::F16, DType::F16, 128, 8, 8, true},
                                           AttnCase{DType::BF16, DType::BF16, 64, 16, 1, false},
                                           AttnCase{DType::F16, DType::F16, 8, 8, 2, true},
                                           AttnCase{DType::BF16, DType::BF16, 16, 16, 1, false},
                                           AttnCase{DType::F32, DType::F32, 32, 8, 8, true}),
                         attn_name);

TEST_F(CudaTest, AttentionRejectsBadCalls) {
  Tensor q = gpu().alloc({3, 4 * 64}, DType::F16), out = gpu().alloc({3, 4 * 64}, DType::F16);
  Tensor k = gpu().alloc({20, 2 * 64}, DType::F16), v = gpu().alloc({20, 2 * 64}, DType::F16);
  const Tensor ids = upload(host_i32({0, 0, 0, 0}));
  const int32_t* p = ids.data<int32_t>();
  const cuda::SeqMeta meta{p, p, p, p, 1, 3, 3};
  auto run = [&](Tensor& o, const Tensor& qq, const Tensor& kk, int64_t cap, cuda::AttentionShape sh) {
    cuda::attention(launch().stream.get(), launch().ws, o, qq, kk, kk, cap, meta, sh);
  };
  EXPECT_THROW_WITH(run(out, q, k, 10, {4, 3, 64, 1.f, nullptr}), InternalError, "attention: bad head counts");
  EXPECT_THROW_WITH(run(out, q, k, 10, {2, 2, 64, 1.f, nullptr}), InternalError, "attention: q");
  EXPECT_THROW_WITH(run(out, q, k, 7, {4, 2, 64, 1.f, nullptr}), InternalError, "whole slots of capacity 7");
  Tensor out32 = gpu().alloc({3, 4 * 64}, DType::F32);
  EXPECT_THROW_WITH(run(out32, q, k, 10, {4, 2, 64, 1.f, nullptr}), UnsupportedError, "q and out of one dtype");
  Tensor q48 = gpu().alloc({3, 4 * 48}, DType::F16), o48 = gpu().alloc({3, 4 * 48}, DType::F16);
  Tensor k48 = gpu().alloc({20, 2 * 48}, DType::F16);
  EXPECT_THROW_WITH(run(o48, q48, k48, 10, {4, 2, 48, 1.f, nullptr}), UnsupportedError, "head_dim 48");
  // A multiple of 8 (whole 16-byte pieces) that no kernel is built for; the message lists those that are.
  Tensor q24 = gpu().alloc({3, 4 * 24}, DType::F16), o24 = gpu().alloc({3, 4 * 24}, DType::F16);
  Tensor k24 = gpu().alloc({20, 2 * 24}, DType::F16);
  EXPECT_THROW_WITH(run(o24, q24, k24, 10, {4, 2, 24, 1.f, nullptr}), UnsupportedError,
                    "head_dim 24 is not supported on the CUDA backend (8, 16, 32, 64, 80, 96, 128, 256)");
  const Tensor q_host = Tensor::empty({3, 4 * 64}, DType::F16);
  EXPECT_THROW_WITH(run(out, q_host, k, 10, {4, 2, 64, 1.f, nullptr}), InternalError, "not in GPU memory");
}

// Decode throughput: the step that decides generation speed reads the whole KV cache once. Timed
// with events on the launchers' stream; printed, not asserted (the figure depends on the GPU).
TEST_F(CudaTest, AttentionThroughput) {
  cudaStream_t stream = launch().stream.get();
  auto time_it = [&](const char* what, int S, int q_len, int kv, int Hq, int Hkv, int D, double bytes, double flops) {
    const int64_t cap = kv;
    Tensor kc = gpu().alloc({S * cap, static_cast<int64_t>(Hkv) * D}, DType::F16);
    Tensor vc = gpu().alloc({S * cap, static_cast<int64_t>(Hkv) * D}, DType::F16);
    Tensor q = gpu().alloc({static_cast<int64_t>(S) * q_len, static_cast<int64_t>(Hq) * D}, DType::F16);
    Tensor out = gpu().alloc(q.shape(), DType::F16);
    StepPlan plan;
    for (int s = 0; s < S; ++s) plan.add_sequence(std::vector<int32_t>(static_cast<size_t>(q_len), 0), kv - q_len, s);
    const Tensor qb = upload(host_i32(plan.q_begin)), ql = upload(host_i32(plan.q_len));
    const Tensor kl = upload(host_i32(plan.kv_len)), sl = upload(host_i32(plan.slot));
    before_launch();
    CUDA_CHECK(cudaMemsetAsync(kc.raw(), 0x2a, kc.nbytes(), stream));  // 0x2a2a: 0.047 in f16
    CUDA_CHECK(cudaMemsetAsync(vc.raw(), 0x2a, vc.nbytes(), stream));
    CUDA_CHECK(cudaMemsetAsync(q.raw(), 0x3c, q.nbytes(), stream));
    const cuda::SeqMeta meta{
        qb.data<int32_t>(), ql.data<int32_t>(), kl.data<int32_t>(), sl.data<int32_t>(), S, q_len, kv};
    const cuda::AttentionShape shape{Hq, Hkv, D, 1.f / std::sqrt(static_cast<float>(D)), nullptr};
    for (int i = 0; i < 3; ++i) cuda::attention(stream, launch().ws, out, q, kc, vc, cap, meta, shape);
    cudaEvent_t e0, e1;
    CUDA_CHECK(cudaEventCreate(&e0));
    CUDA_CHECK(cudaEventCreate(&e1));
    constexpr int kIters = 20;
    CUDA_CHECK(cudaEventRecord(e0, stream));
    for (int i = 0; i < kIters; ++i) cuda::attention(stream, launch().ws, out, q, kc, vc, cap, meta, shape);
    CUDA_CHECK(cudaEventRecord(e1, stream));
    CUDA_CHECK(cudaEventSynchronize(e1));
    float ms = 0;
    CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1));
    CUDA_CHECK(cudaEventDestroy(e0));
    CUDA_CHECK(cudaEventDestroy(e1));
    const double sec = ms / 1e3 / kIters;
    std::cout << "[ attention timing ] " << gpu().name() << ": " << what << " " << S << " seqs x " << kv << " tokens x "
              << Hq << "/" << Hkv << " heads x " << D << " f16: " << sec * 1e6 << " us";
    if (bytes > 0) std::cout << ", KV read " << bytes / sec / 1e9 << " GB/s";
    if (flops > 0) std::cout << ", " << flops / sec / 1e12 << " TFLOP/s";
    std::cout << "\n";
  };
  auto kv_bytes = [](int S, int kv, int Hkv, int D) { return 2.0 * S * kv * Hkv * D * 2; };
  time_it("decode", 32, 1, 544, 32, 32, 128, kv_bytes(32, 544, 32, 128), 0);
  time_it("decode", 32, 1, 544, 32, 8, 128, kv_bytes(32, 544, 8, 128), 0);
  time_it("decode", 32, 1, 1024, 64, 8, 128, kv_bytes(32, 1024, 8, 128), 0);
  time_it("decode", 8, 1, 4096, 32, 32, 128, kv_bytes(8, 4096, 32, 128), 0);
  // Small head dims (the reference models' 8 and 16, and 32): SIMT decode at 8, tensor cores at 16.
  time_it("decode", 32, 1, 1024, 8, 2, 8, kv_bytes(32, 1024, 2, 8), 0);
  time_it("decode", 32, 1, 1024, 8, 2, 16, kv_bytes(32, 1024, 2, 16), 0);
  time_it("decode", 32, 1, 1024, 32, 32, 32, kv_bytes(32, 1024, 32, 32), 0);
  // Causal prefill: per head, 4 D flops for each of the L (L + 1) / 2 visible (query, key) pairs.
  time_it("prefill", 4, 512, 512, 32, 32, 128, 0, 4.0 * 32 * 4 * 128 * 512.0 * 513 / 2);
  time_it("prefill", 4, 512, 512, 8, 2, 8, 0, 4.0 * 8 * 4 * 8 * 512.0 * 513 / 2);
  time_it("prefill", 4, 512, 512, 16, 4, 32, 0, 4.0 * 16 * 4 * 32 * 512.0 * 513 / 2);
}

// ---------------------------------------------------------------------------------------------
// rope_: in place on x (T, H * head_dim)

struct RopeCase {
  DType dt;
  int head_dim;
  int heads;
};

void PrintTo(const RopeCase& c, std::ostream* os) {
  *os << "{dt=" << dtype_name(c.dt) << ", head_dim=" << c.head_dim << ", heads=" << c.heads << "}";
}

std::string rope_name(const ::testing::TestParamInfo<RopeCase>& info) {
  return std::string(dtype_name(info.param.dt)) + "_d" + std::to_string(info.param.head_dim) + "_h" +
         std::to_string(info.param.heads);
}

class RopeConformance : public CudaTest, public ::testing::WithParamInterface<RopeCase> {};

// Error model, u = 2^-24. Both sides form the angle by the same single f32 product (bit-identical)
// and take cos and sin in f32: CUDA's cosf/sinf within 2 ulp (4u relative), glibc's within 1 ulp
// (2u): |dc| <= 6u |c|, |ds| <= 6u |s|. Each side's a c - b s (or b c + a s) then errs by at most
// 2u (|a c| + |b s|) (two products and a difference, rounded; less with an FMA). So the f32 values
// differ by 10u (|a||c| + |b||s|) <= 10u (|a| + |b|), and the GPU's one rounding to x's dtype adds
// u_out |out| and half a subnormal in underflow.
TEST_P(RopeConformance, MatchesCpuReference) {
  const RopeCase c = GetParam();
  const int D = c.head_dim, half = D / 2;
  const int64_t T = 37, C = static_cast<int64_t>(c.heads) * D;
  std::mt19937 rng(static_cast<uint32_t>(D * 31 + c.heads) ^ (static_cast<uint32_t>(c.dt) << 20));
  const HostInput x = random_input({T, C}, c.dt, -2.f, 2.f, rng);
  std::vector<int32_t> pos(static_cast<size_t>(T));
  std::uniform_int_distribution<int32_t> pd(0, 8191);
  for (int32_t& p : pos) p = pd(rng);
  pos[0] = 0;
  pos[1] = 4095;
  Tensor inv_freq = Tensor::empty({half}, DType::F32);
  for (int i = 0; i < half; ++i)
    inv_freq.data<float>()[i] = std::pow(10000.f, -2.f * static_cast<float>(i) / static_cast<float>(D));

  Tensor ref = x.native.to_f32();  // a copy the reference rotates in place
  const Tensor pos_host = host_i32(pos);
  cpu().rope_(ref, D, pos_host, inv_freq);

  GuardedOutput out({T, C}, c.dt);
  gpu().copy(out.view(), x.native);
  const Tensor pd_dev = upload(pos_host), fd = upload(inv_freq);
  before_launch();
  cuda::rope_(launch().stream.get(), out.view(), D, pd_dev.data<int32_t>(), fd.data<float>());
  after_launch();
  std::vector<float> got;
  ASSERT_TRUE(out.read(got));

  const double u_out = unit_roundoff(c.dt);
  std::vector<double> tol(got.size());
  for (int64_t t = 0; t < T; ++t)
    for (int64_t h = 0; h < c.heads; ++h)
      for (int i = 0; i < D; ++i) {
        const int64_t base = t * C + h * D;
        const int lo = i % half;
        const double a = std::fabs(x.f32.data<float>()[base + lo]),
                     b = std::fabs(x.f32.data<float>()[base + lo + half]);
        const size_t idx = static_cast<size_t>(base + i);
        tol[idx] =
            u_out * std::fabs(ref.data<float>()[idx]) + (1 + u_out) * 10 * kU32 * (a + b) + underflow_slack(c.dt);
      }
  double worst = 0;
  EXPECT_TRUE(all_close(got, ref.data<float>(), tol, static_cast<size_t>(C), worst));
  std::cout << "[ rope_ " << rope_name({c, 0}) << " ] max |err|/tol " << worst << "\n";
}

std::vector<RopeCase> rope_cases() {
  std::vector<RopeCase> cases;
  for (DType dt : {DType::F32, DType::F16, DType::BF16})
    for (const auto& [d, h] : {std::pair{64, 3}, std::pair{128, 2}, std::pair{80, 1}}) cases.push_back({dt, d, h});
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Cuda, RopeConformance, ::testing::ValuesIn(rope_cases()), rope_name);

TEST_F(CudaTest, RopeRejectsBadShapes) {
  Tensor x = gpu().alloc({2, 12}, DType::F16);
  const Tensor pos = upload(host_i32({0, 1})), f = upload(Tensor::empty({3}, DType::F32));
  EXPECT_THROW_WITH(cuda::rope_(launch().stream.get(), x, 5, pos.data<int32_t>(), f.data<float>()), InternalError,
                    "rope_: x");
  EXPECT_THROW_WITH(cuda::rope_(launch().stream.get(), x, 8, pos.data<int32_t>(), f.data<float>()), InternalError,
                    "rope_: x");
}

// ---------------------------------------------------------------------------------------------
// write_kv: rows of k, v (T, C) into cache rows slot * capacity + pos, converted to the cache dtype.
// Exact: each element is rounded once to nearest even, as the host's convert_from_f32 does.

struct KvCase {
  DType step;   // k and v
  DType cache;  // the caches
};

void PrintTo(const KvCase& c, std::ostream* os) {
  *os << "{step=" << dtype_name(c.step) << ", cache=" << dtype_name(c.cache) << "}";
}

std::string kv_name(const ::testing::TestParamInfo<KvCase>& info) {
  return std::string("step") + dtype_name(info.param.step) + "_cache" + dtype_name(info.param.cache);
}

class WriteKvConformance : public CudaTest, public ::testing::WithParamInterface<KvCase> {};

TEST_P(WriteKvConformance, ScattersRowsExactly) {
  const KvCase c = GetParam();
  const int64_t capacity = 37, slots = 4, C = 200, T = 23;
  std::mt19937 rng((static_cast<uint32_t>(c.step) << 8) ^ static_cast<uint32_t>(c.cache));
  // Step values over many binades, subnormal to f16-overflowing, both signs: every rounding case.
  auto wide_values = [&](Shape shape, DType dt) {
    Tensor f = Tensor::empty(shape, DType::F32);
    std::uniform_real_distribution<float> e(-30.f, 17.f);
    for (int64_t i = 0; i < f.numel(); ++i)
      f.data<float>()[i] =
          std::exp2(e(rng)) * (rng() & 1 ? -1.f : 1.f) * (1.f + static_cast<float>(rng() % 997) / 997.f);
    Tensor n = Tensor::empty(shape, dt);
    convert_from_f32(n.raw(), dt, f.data<float>(), static_cast<size_t>(f.numel()));
    return n;
  };
  const Tensor k = wide_values({T, C}, c.step), v = wide_values({T, C}, c.step);
  const HostInput k0 = random_input({slots * capacity, C}, c.cache, -1.f, 1.f, rng);
  const HostInput v0 = random_input({slots * capacity, C}, c.cache, -1.f, 1.f, rng);
  std::vector<int32_t> cells(static_cast<size_t>(slots * capacity));
  std::iota(cells.begin(), cells.end(), 0);
  std::shuffle(cells.begin(), cells.end(), rng);
  std::vector<int32_t> slot_of_row, pos_of_row;
  for (int64_t t = 0; t < T; ++t) {
    slot_of_row.push_back(static_cast<int32_t>(cells[static_cast<size_t>(t)] / capacity));
    pos_of_row.push_back(static_cast<int32_t>(cells[static_cast<size_t>(t)] % capacity));
  }

  // Expected: the initial caches with the step's rows converted through f32 on the host.
  std::vector<float> want_k(static_cast<size_t>(slots * capacity * C)), want_v(want_k.size());
  convert_to_f32(want_k.data(), k0.native.raw(), c.cache, want_k.size());
  convert_to_f32(want_v.data(), v0.native.raw(), c.cache, want_v.size());
  std::vector<float> row(static_cast<size_t>(C));
  Tensor conv = Tensor::empty({C}, c.cache);
  for (int64_t t = 0; t < T; ++t) {
    const int64_t dst = (slot_of_row[static_cast<size_t>(t)] * capacity + pos_of_row[static_cast<size_t>(t)]) * C;
    for (const auto& [src, want] : {std::pair{&k, &want_k}, std::pair{&v, &want_v}}) {
      convert_to_f32(row.data(), static_cast<const char*>(src->raw()) + t * C * dtype_size(c.step), c.step, row.size());
      convert_from_f32(conv.raw(), c.cache, row.data(), row.size());
      convert_to_f32(want->data() + dst, conv.raw(), c.cache, row.size());
    }
  }

  GuardedOutput kc({slots * capacity, C}, c.cache), vc({slots * capacity, C}, c.cache);
  gpu().copy(kc.view(), k0.native);
  gpu().copy(vc.view(), v0.native);
  const Tensor kd = upload(k), vd = upload(v);
  const Tensor sd = upload(host_i32(slot_of_row)), pd = upload(host_i32(pos_of_row));
  before_launch();
  cuda::write_kv(launch().stream.get(), kc.view(), vc.view(), capacity, kd, vd, sd.data<int32_t>(), pd.data<int32_t>());
  after_launch();
  std::vector<float> got_k, got_v;
  ASSERT_TRUE(kc.read(got_k));
  ASSERT_TRUE(vc.read(got_v));
  // Bit equality of the widened values (widening is injective; no NaN is written).
  EXPECT_EQ(std::memcmp(got_k.data(), want_k.data(), want_k.size() * sizeof(float)), 0);
  EXPECT_EQ(std::memcmp(got_v.data(), want_v.data(), want_v.size() * sizeof(float)), 0);
}

std::vector<KvCase> kv_cases() {
  std::vector<KvCase> cases;
  for (DType s : {DType::F32, DType::F16, DType::BF16})
    for (DType ca : {DType::F32, DType::F16, DType::BF16}) cases.push_back({s, ca});
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Cuda, WriteKvConformance, ::testing::ValuesIn(kv_cases()), kv_name);

TEST_F(CudaTest, WriteKvRejectsBadShapes) {
  Tensor kc = gpu().alloc({20, 16}, DType::F16), vc = gpu().alloc({20, 16}, DType::F16);
  const Tensor k = gpu().alloc({2, 8}, DType::F16), v = gpu().alloc({2, 16}, DType::F16);
  const Tensor ids = upload(host_i32({0, 1}));
  const int32_t* p = ids.data<int32_t>();
  EXPECT_THROW_WITH(cuda::write_kv(launch().stream.get(), kc, vc, 10, k, v, p, p), InternalError, "write_kv: k");
  EXPECT_THROW_WITH(cuda::write_kv(launch().stream.get(), kc, vc, 7, v, v, p, p), InternalError,
                    "whole slots of capacity 7");
}

#endif  // TIERGEN_HAVE_CUDA

}  // namespace
}  // namespace tiergen::kernels
