// Causal attention over a ragged batch: each sequence's queries attend to its own cache rows. GQA:
// query head h reads kv head h / (n_heads / n_kv_heads). ALiBi adds slope_h * key_position (the
// per-query constant that HF's form differs by cancels in the softmax). The cache is f32, or f16 /
// bf16 when it is a GPU run's cache kept in host memory (--cpu-cache-compute); q and out are f32.
#include <omp.h>
#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>
#endif

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
// is read, with F16C's conversion for f16 and a shift for bf16.
struct Bf16 {
  uint16_t bits;
};
inline float to_f32(float x) { return x; }
inline float to_f32(_Float16 x) { return static_cast<float>(x); }
inline float to_f32(Bf16 x) { return std::bit_cast<float>(static_cast<uint32_t>(x.bits) << 16); }

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
// Eight elements of the cache as f32.
inline __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
inline __m256 load8(const _Float16* p) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
inline __m256 load8(const Bf16* p) {
  const __m256i wide = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16));
}
inline float hsum(__m256 x) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
#endif

// Asks for `bytes` from p into the cache ahead of use: a decode item reads a few KiB of each cache
// row, rows 2 * width apart, which the hardware prefetcher (within a 4 KiB page) does not foresee.
inline void prefetch(const void* p, int64_t bytes) {
  const char* c = static_cast<const char*>(p);
  for (int64_t b = 0; b < bytes; b += 64) __builtin_prefetch(c + b, 0, 0);
}

// q (D) · k (D), k widened as read.
template <typename KV>
inline float dot(const float* q, const KV* k, int64_t D) {
#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
  if (D % 16 == 0) {  // two accumulators: the FMA latency is hidden
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    for (int64_t d = 0; d < D; d += 16) {
      a0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + d), load8(k + d), a0);
      a1 = _mm256_fmadd_ps(_mm256_loadu_ps(q + d + 8), load8(k + d + 8), a1);
    }
    return hsum(_mm256_add_ps(a0, a1));
  }
#endif
  float s = 0.f;
  for (int64_t d = 0; d < D; ++d) s += q[d] * to_f32(k[d]);
  return s;
}

// acc (D) += w * v (D), v widened as read.
template <typename KV>
inline void axpy(float* acc, float w, const KV* v, int64_t D) {
#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
  if (D % 8 == 0) {
    const __m256 wv = _mm256_set1_ps(w);
    for (int64_t d = 0; d < D; d += 8)
      _mm256_storeu_ps(acc + d, _mm256_fmadd_ps(wv, load8(v + d), _mm256_loadu_ps(acc + d)));
    return;
  }
#endif
  for (int64_t d = 0; d < D; ++d) acc[d] += w * to_f32(v[d]);
}

// Work is cut into items of (sequence, query, block of kv heads): an item streams its block's
// part of each cache row once for all the query heads that read it, so a decode step reads the
// cache in row order (long runs the prefetcher follows) instead of one head's 2*D bytes per row.
// Blocks shrink until there are enough items to keep every thread busy.
int64_t kv_heads_per_item(int64_t n_queries, int64_t Hkv, int64_t group) {
  const int64_t want_items = 8 * static_cast<int64_t>(omp_get_max_threads());
  const int64_t most = std::max<int64_t>(1, 16 / group);  // at most 16 query heads' accumulators
  int64_t kb = std::max<int64_t>(1, std::min({Hkv, most, Hkv * n_queries / want_items}));
  while (Hkv % kb != 0) --kb;
  return kb;
}

template <typename KV>
void attend(Tensor& out, const Tensor& q, std::span<const AttentionSeq> seqs, const AttentionParams& p) {
  const int64_t D = p.head_dim, Hq = p.n_heads, Hkv = p.n_kv_heads;
  const int64_t group = Hq / Hkv;
  const int64_t ld_q = Hq * D, ld_kv = Hkv * D;
  std::vector<std::pair<int64_t, int64_t>> queries;  // (sequence index, query index within it)
  for (size_t si = 0; si < seqs.size(); ++si)
    for (int64_t i = 0; i < seqs[si].q_len; ++i) queries.emplace_back(static_cast<int64_t>(si), i);
  const auto n_queries = static_cast<int64_t>(queries.size());
  const int64_t kb = kv_heads_per_item(n_queries, Hkv, group);
  const int64_t blocks = Hkv / kb, nh = kb * group;  // query heads per item
  const float* qp = q.data<float>();
  float* op = out.data<float>();
#pragma omp parallel
  {
    std::vector<float> scores;  // (nh, pos + 1)
    std::vector<float> acc(static_cast<size_t>(nh * D));
#pragma omp for collapse(2) schedule(dynamic, 1)
    for (int64_t it = 0; it < n_queries; ++it) {
      for (int64_t blk = 0; blk < blocks; ++blk) {
        const AttentionSeq& s = seqs[queries[it].first];
        const int64_t i = queries[it].second;
        const int64_t pos = s.kv_len - s.q_len + i;  // this query's position; keys 0..pos visible
        const int64_t n = pos + 1, h0 = blk * nh;    // query heads h0 .. h0 + nh read kv heads blk*kb ..
        const float* qv = qp + (s.q_begin + i) * ld_q + h0 * D;
        const KV* kp = static_cast<const KV*>(s.k.raw()) + blk * kb * D;
        const KV* vp = static_cast<const KV*>(s.v.raw()) + blk * kb * D;
        scores.resize(static_cast<size_t>(nh * n));
        const int64_t span = kb * D * static_cast<int64_t>(sizeof(KV));  // bytes of a row an item reads
        constexpr int64_t kAhead = 4;                                        // rows prefetched ahead
        for (int64_t j = 0; j < n; ++j) {
          const KV* row = kp + j * ld_kv;
          if (j + kAhead < n) prefetch(row + kAhead * ld_kv, span);
          for (int64_t h = 0; h < nh; ++h) scores[h * n + j] = dot(qv + h * D, row + (h / group) * D, D) * p.scale;
        }
        for (int64_t h = 0; h < nh; ++h) {
          float* sc = scores.data() + h * n;
          if (p.alibi_slopes) {
            const float slope = p.alibi_slopes[h0 + h];
            for (int64_t j = 0; j < n; ++j) sc[j] += slope * static_cast<float>(j);
          }
          float mx = -INFINITY;
          for (int64_t j = 0; j < n; ++j) mx = std::max(mx, sc[j]);
          double sum = 0;
          for (int64_t j = 0; j < n; ++j) {
            sc[j] = std::exp(sc[j] - mx);
            sum += sc[j];
          }
          const auto inv = static_cast<float>(1.0 / sum);
          for (int64_t j = 0; j < n; ++j) sc[j] *= inv;
        }
        std::fill(acc.begin(), acc.end(), 0.f);
        for (int64_t j = 0; j < n; ++j) {
          const KV* row = vp + j * ld_kv;
          if (j + kAhead < n) prefetch(row + kAhead * ld_kv, span);
          for (int64_t h = 0; h < nh; ++h) axpy(acc.data() + h * D, scores[h * n + j], row + (h / group) * D, D);
        }
        std::copy(acc.begin(), acc.end(), op + (s.q_begin + i) * ld_q + h0 * D);
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
