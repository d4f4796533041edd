// Causal attention over a ragged batch: each sequence's queries attend to its own cache rows. GQA:
// query head h reads kv head h / (n_heads / n_kv_heads). ALiBi adds slope_h * key_position (the
// per-query constant that HF's form differs by cancels in the softmax). The cache is f32, or f16 /
// bf16 when it is a GPU run's cache kept in host memory (--cpu-cache-compute); q and out are f32.
#include <algorithm>
#include <bit>
#include <cstdint>
#include <cmath>
#include <string>
#include <vector>

#include "kernels/cpu/ops.h"
#include "runtime/core/error.h"

namespace tiergen::kernels::cpu {

namespace {

// The cache's element as f32: a 16-bit cache (a GPU run's, kept in host memory) is widened as it
// is read, with F16C's conversion for f16 and a shift for bf16, so the loops still vectorise.
struct Bf16 {
  uint16_t bits;
};
inline float to_f32(float x) { return x; }
inline float to_f32(_Float16 x) { return static_cast<float>(x); }
inline float to_f32(Bf16 x) { return std::bit_cast<float>(static_cast<uint32_t>(x.bits) << 16); }

template <typename KV>
void attend(Tensor& out, const Tensor& q, std::span<const AttentionSeq> seqs, const AttentionParams& p) {
  const int64_t D = p.head_dim, Hq = p.n_heads, Hkv = p.n_kv_heads;
  const int64_t group = Hq / Hkv;
  const int64_t ld_q = Hq * D, ld_kv = Hkv * D;
  // One work item per (sequence, head, query): flattened so short and long sequences balance.
  std::vector<std::pair<int64_t, int64_t>> items;  // (sequence index, query index within it)
  for (size_t si = 0; si < seqs.size(); ++si)
    for (int64_t i = 0; i < seqs[si].q_len; ++i) items.emplace_back(static_cast<int64_t>(si), i);
  const int64_t n_items = static_cast<int64_t>(items.size());
  const float* qp = q.data<float>();
  float* op = out.data<float>();
#pragma omp parallel
  {
    std::vector<float> scores;
    std::vector<float> acc(static_cast<size_t>(D));
#pragma omp for collapse(2) schedule(dynamic, 4)
    for (int64_t it = 0; it < n_items; ++it) {
      for (int64_t h = 0; h < Hq; ++h) {
        const AttentionSeq& s = seqs[items[it].first];
        const int64_t i = items[it].second;
        const int64_t pos = s.kv_len - s.q_len + i;  // this query's position; keys 0..pos visible
        const float* qv = qp + (s.q_begin + i) * ld_q + h * D;
        const KV* kp = static_cast<const KV*>(s.k.raw()) + (h / group) * D;
        const KV* vp = static_cast<const KV*>(s.v.raw()) + (h / group) * D;
        const float slope = p.alibi_slopes ? p.alibi_slopes[h] : 0.f;
        scores.resize(static_cast<size_t>(pos + 1));
        float mx = -INFINITY;
        for (int64_t j = 0; j <= pos; ++j) {
          const KV* kv = kp + j * ld_kv;
          float dot = 0.f;
#pragma omp simd reduction(+ : dot)
          for (int64_t d = 0; d < D; ++d) dot += qv[d] * to_f32(kv[d]);
          scores[j] = dot * p.scale + slope * static_cast<float>(j);
          mx = std::max(mx, scores[j]);
        }
        double sum = 0;
        for (int64_t j = 0; j <= pos; ++j) {
          scores[j] = std::exp(scores[j] - mx);
          sum += scores[j];
        }
        const float inv = static_cast<float>(1.0 / sum);
        std::fill(acc.begin(), acc.end(), 0.f);
        for (int64_t j = 0; j <= pos; ++j) {
          const float wgt = scores[j] * inv;
          const KV* vv = vp + j * ld_kv;
#pragma omp simd
          for (int64_t d = 0; d < D; ++d) acc[d] += wgt * to_f32(vv[d]);
        }
        std::copy(acc.begin(), acc.end(), op + (s.q_begin + i) * ld_q + h * D);
      }
    }
  }
}

}  // namespace

void attention(Tensor& out, const Tensor& q, std::span<const AttentionSeq> seqs, const AttentionParams& p) {
  check_host("attention", out);
  check_host("attention", q);
  const int64_t D = p.head_dim, Hq = p.n_heads, Hkv = p.n_kv_heads;
  if (Hq <= 0 || Hkv <= 0 || Hq % Hkv != 0 || D <= 0)
    throw InternalError("attention: bad head counts " + std::to_string(Hq) + "/" + std::to_string(Hkv));
  check_2d("attention", "q", q, -1, Hq * D);
  check_2d("attention", "out", out, q.dim(0), Hq * D);
  for (const AttentionSeq& s : seqs) {
    check_host("attention", s.k);
    check_host("attention", s.v);
    check_2d("attention", "k cache", s.k, -1, Hkv * D);
    check_2d("attention", "v cache", s.v, s.k.dim(0), Hkv * D);
    if (s.q_len > s.kv_len || s.kv_len > s.k.dim(0) || s.q_begin < 0 || s.q_begin + s.q_len > q.dim(0))
      throw InternalError("attention: sequence rows [" + std::to_string(s.q_begin) + ", +" + std::to_string(s.q_len) +
                          ") with " + std::to_string(s.kv_len) + " cached rows does not fit q " + q.describe() +
                          " / cache " + s.k.describe());
  }
  const DType kv_dtype = seqs.empty() ? DType::F32 : seqs.front().k.dtype();
  for (const AttentionSeq& s : seqs)
    if (s.k.dtype() != kv_dtype || s.v.dtype() != kv_dtype)
      throw InternalError("attention: caches of different dtypes in one batch");
  if (q.dtype() != DType::F32 || out.dtype() != DType::F32)
    throw InternalError("attention: q and out must be f32, got " + q.describe() + " and " + out.describe());
  switch (kv_dtype) {
    case DType::F32:
      return attend<float>(out, q, seqs, p);
    case DType::F16:
      return attend<_Float16>(out, q, seqs, p);
    case DType::BF16:
      return attend<Bf16>(out, q, seqs, p);
    default:
      throw InternalError("attention: a " + std::string(dtype_name(kv_dtype)) + " cache");
  }
}

}  // namespace tiergen::kernels::cpu
