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
#include <cmath>
#include <cstdint>
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

// Asks for `bytes` from p into the cache ahead of use (into every level: a non-temporal hint
// fills only L1 on Intel server cores, where lines fetched rows ahead are evicted before use).
inline void prefetch(const void* p, int64_t bytes) {
  const char* c = static_cast<const char*>(p);
  for (int64_t b = 0; b < bytes; b += 64) __builtin_prefetch(c + b, 0, 3);
}

// Cache rows an item prefetches ahead of the four it reads. Measured on OPT-30B's shape (32
// sequences x 544 rows, 56 heads, f16): on an Intel Xeon (Sapphire Rapids, 16 cores) the hardware
// prefetcher follows the four row streams and software prefetching only costs (113 GB/s without,
// 94 with one row ahead, 34 with four rows ahead non-temporal); on an AMD EPYC one row ahead is
// the best (36 GB/s on 2 cores, 26 without).
int64_t rows_ahead() {
  static const int64_t ahead = [] {
    __builtin_cpu_init();
    return __builtin_cpu_is("intel") ? 0 : 1;
  }();
  return ahead;
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

// Four rows at once, so that q, or acc, is loaded once for four rows of the cache: the kernel then
// keeps up with the memory on fewer cores. out[r] = q (D) . k_r (D).
template <typename KV>
inline void dot4(float* out, const float* q, const KV* const* k, int64_t D) {
#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
  if (D % 8 == 0) {
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
    for (int64_t d = 0; d < D; d += 8) {
      const __m256 qv = _mm256_loadu_ps(q + d);
      a0 = _mm256_fmadd_ps(qv, load8(k[0] + d), a0);
      a1 = _mm256_fmadd_ps(qv, load8(k[1] + d), a1);
      a2 = _mm256_fmadd_ps(qv, load8(k[2] + d), a2);
      a3 = _mm256_fmadd_ps(qv, load8(k[3] + d), a3);
    }
    // Pairwise sums: lane r of each 128-bit half holds a partial sum of row r.
    const __m256 s = _mm256_hadd_ps(_mm256_hadd_ps(a0, a1), _mm256_hadd_ps(a2, a3));
    _mm_storeu_ps(out, _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1)));
    return;
  }
#endif
  for (int r = 0; r < 4; ++r) out[r] = dot(q, k[r], D);
}

// acc (D) += sum_r w[r] * v_r (D).
template <typename KV>
inline void axpy4(float* acc, const float* w, const KV* const* v, int64_t D) {
#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
  if (D % 8 == 0) {
    const __m256 w0 = _mm256_set1_ps(w[0]), w1 = _mm256_set1_ps(w[1]), w2 = _mm256_set1_ps(w[2]),
                 w3 = _mm256_set1_ps(w[3]);
    for (int64_t d = 0; d < D; d += 8) {
      __m256 a = _mm256_loadu_ps(acc + d);
      a = _mm256_fmadd_ps(w0, load8(v[0] + d), a);
      a = _mm256_fmadd_ps(w1, load8(v[1] + d), a);
      a = _mm256_fmadd_ps(w2, load8(v[2] + d), a);
      a = _mm256_fmadd_ps(w3, load8(v[3] + d), a);
      _mm256_storeu_ps(acc + d, a);
    }
    return;
  }
#endif
  for (int r = 0; r < 4; ++r) axpy(acc, w[r], v[r], D);
}

// Work is cut into items of (query, block of kv heads, chunk of cache rows). A block is as many
// heads as fit the accumulators (every head, for most models), so an item streams whole cache rows,
// one contiguous run of memory that the hardware prefetcher follows; chunks split a long sequence
// (flash-decoding's split over keys) so that a decode step's few queries still keep every thread
// busy. A query whose rows are cut into several chunks has its partial softmax states merged after.
struct WorkSplit {
  int64_t kb = 1;          // kv heads per item
  int64_t chunk_rows = 1;  // cache rows per item, at most
};

constexpr int64_t kMaxHeadsPerItem = 64;  // query heads' accumulators an item holds (64 x 128 f32 = 32 KiB)
constexpr int64_t kMinChunkRows = 64;     // shorter chunks cost more in merging than they gain

WorkSplit split_work(int64_t total_rows, int64_t Hkv, int64_t group) {
  WorkSplit w;
  w.kb = std::max<int64_t>(1, std::min(Hkv, kMaxHeadsPerItem / group));
  while (Hkv % w.kb != 0) --w.kb;
  const int64_t want_items = 8 * static_cast<int64_t>(omp_get_max_threads());
  const int64_t row_items = total_rows * (Hkv / w.kb);  // rows x blocks: the work in units of a block's row
  w.chunk_rows = std::max(kMinChunkRows, (row_items + want_items - 1) / want_items);
  return w;
}

struct Item {
  int64_t query, blk, j0, j1;  // query index, head block, cache rows [j0, j1)
  int64_t partial;             // slot of its partial state, or -1: it holds the whole query and writes out
};

// One item's softmax state for nh heads: running max, sum of exponentials and the weighted sum of
// values, all relative to the max.
struct Partials {
  int64_t nh = 0, D = 0;
  std::vector<float> max, sum, acc;  // (slots, nh), (slots, nh), (slots, nh, D)
  void resize(int64_t slots) {
    max.resize(static_cast<size_t>(slots * nh));
    sum.resize(static_cast<size_t>(slots * nh));
    acc.resize(static_cast<size_t>(slots * nh * D));
  }
};

template <typename KV>
void attend(Tensor& out, const Tensor& q, std::span<const AttentionSeq> seqs, const AttentionParams& p) {
  const int64_t D = p.head_dim, Hq = p.n_heads, Hkv = p.n_kv_heads;
  const int64_t group = Hq / Hkv;
  const int64_t ld_q = Hq * D, ld_kv = Hkv * D;
  struct Query {
    int64_t seq, i, n;  // sequence index, query index within it, keys visible (0 .. n)
  };
  std::vector<Query> queries;
  int64_t total_rows = 0;
  for (size_t si = 0; si < seqs.size(); ++si)
    for (int64_t i = 0; i < seqs[si].q_len; ++i) {
      const int64_t n = seqs[si].kv_len - seqs[si].q_len + i + 1;
      queries.push_back({static_cast<int64_t>(si), i, n});
      total_rows += n;
    }
  const WorkSplit w = split_work(total_rows, Hkv, group);
  const int64_t blocks = Hkv / w.kb, nh = w.kb * group;  // query heads per item
  std::vector<Item> items;
  struct Merge {
    int64_t query, blk, first, count;  // the partial slots [first, first + count) of one query's block
  };
  std::vector<Merge> merges;
  int64_t slots = 0;
  for (int64_t qi = 0; qi < static_cast<int64_t>(queries.size()); ++qi) {
    const int64_t n = queries[qi].n;
    const int64_t chunks = (n + w.chunk_rows - 1) / w.chunk_rows;
    const int64_t rows = (n + chunks - 1) / chunks;  // even chunks
    for (int64_t blk = 0; blk < blocks; ++blk) {
      if (chunks > 1) merges.push_back({qi, blk, slots, chunks});
      for (int64_t c = 0; c < chunks; ++c)
        items.push_back({qi, blk, c * rows, std::min(n, (c + 1) * rows), chunks > 1 ? slots++ : -1});
    }
  }
  Partials part{nh, D, {}, {}, {}};
  part.resize(slots);
  const float* qp = q.data<float>();
  float* op = out.data<float>();
  const auto n_items = static_cast<int64_t>(items.size());
#pragma omp parallel
  {
    std::vector<float> scores;  // (nh, rows of the item)
    std::vector<float> acc(static_cast<size_t>(nh * D));
#pragma omp for schedule(dynamic, 1)
    for (int64_t ii = 0; ii < n_items; ++ii) {
      const Item& it = items[ii];
      const Query& qr = queries[it.query];
      const AttentionSeq& s = seqs[qr.seq];
      const int64_t m = it.j1 - it.j0, h0 = it.blk * nh;  // query heads h0 .. h0 + nh read kv heads blk*kb ..
      const float* qv = qp + (s.q_begin + qr.i) * ld_q + h0 * D;
      const KV* kp = static_cast<const KV*>(s.k.raw()) + it.j0 * ld_kv + it.blk * w.kb * D;
      const KV* vp = static_cast<const KV*>(s.v.raw()) + it.j0 * ld_kv + it.blk * w.kb * D;
      scores.resize(static_cast<size_t>(nh * m));
      const int64_t span = w.kb * D * static_cast<int64_t>(sizeof(KV));  // bytes of a row an item reads
      const int64_t ahead = rows_ahead();
      int64_t j = 0;
      for (; j + 4 <= m; j += 4) {
        const KV* row = kp + j * ld_kv;
        if (ahead > 0 && j + ahead + 4 <= m)
          for (int r = 0; r < 4; ++r) prefetch(row + (ahead + r) * ld_kv, span);
        for (int64_t h = 0; h < nh; ++h) {
          const int64_t off = (h / group) * D;
          const KV* rows[4] = {row + off, row + ld_kv + off, row + 2 * ld_kv + off, row + 3 * ld_kv + off};
          float sc[4];
          dot4(sc, qv + h * D, rows, D);
          for (int r = 0; r < 4; ++r) scores[h * m + j + r] = sc[r] * p.scale;
        }
      }
      for (; j < m; ++j) {
        const KV* row = kp + j * ld_kv;
        for (int64_t h = 0; h < nh; ++h) scores[h * m + j] = dot(qv + h * D, row + (h / group) * D, D) * p.scale;
      }
      float* mx_out = it.partial >= 0 ? part.max.data() + it.partial * nh : nullptr;
      float* sum_out = it.partial >= 0 ? part.sum.data() + it.partial * nh : nullptr;
      for (int64_t h = 0; h < nh; ++h) {
        float* sc = scores.data() + h * m;
        if (p.alibi_slopes) {
          const float slope = p.alibi_slopes[h0 + h];
          for (int64_t j = 0; j < m; ++j) sc[j] += slope * static_cast<float>(it.j0 + j);
        }
        float mx = -INFINITY;
        for (int64_t j = 0; j < m; ++j) mx = std::max(mx, sc[j]);
        double sum = 0;
        for (int64_t j = 0; j < m; ++j) {
          sc[j] = std::exp(sc[j] - mx);
          sum += sc[j];
        }
        if (mx_out) {  // normalised in the merge, across chunks
          mx_out[h] = mx;
          sum_out[h] = static_cast<float>(sum);
        } else {
          const auto inv = static_cast<float>(1.0 / sum);
          for (int64_t j = 0; j < m; ++j) sc[j] *= inv;
        }
      }
      std::fill(acc.begin(), acc.end(), 0.f);
      for (j = 0; j + 4 <= m; j += 4) {
        const KV* row = vp + j * ld_kv;
        if (ahead > 0 && j + ahead + 4 <= m)
          for (int r = 0; r < 4; ++r) prefetch(row + (ahead + r) * ld_kv, span);
        for (int64_t h = 0; h < nh; ++h) {
          const int64_t off = (h / group) * D;
          const KV* rows[4] = {row + off, row + ld_kv + off, row + 2 * ld_kv + off, row + 3 * ld_kv + off};
          const float w[4] = {scores[h * m + j], scores[h * m + j + 1], scores[h * m + j + 2], scores[h * m + j + 3]};
          axpy4(acc.data() + h * D, w, rows, D);
        }
      }
      for (; j < m; ++j) {
        const KV* row = vp + j * ld_kv;
        for (int64_t h = 0; h < nh; ++h) axpy(acc.data() + h * D, scores[h * m + j], row + (h / group) * D, D);
      }
      float* dst = it.partial >= 0 ? part.acc.data() + it.partial * nh * D : op + (s.q_begin + qr.i) * ld_q + h0 * D;
      std::copy(acc.begin(), acc.end(), dst);
    }
    // out = sum_c e^(max_c - max) acc_c / sum_c e^(max_c - max) sum_c, per head.
#pragma omp for schedule(static)
    for (int64_t mi = 0; mi < static_cast<int64_t>(merges.size()); ++mi) {
      const Merge& mg = merges[mi];
      const Query& qr = queries[mg.query];
      float* o = op + (seqs[qr.seq].q_begin + qr.i) * ld_q + mg.blk * nh * D;
      for (int64_t h = 0; h < nh; ++h) {
        float mx = -INFINITY;
        for (int64_t c = 0; c < mg.count; ++c) mx = std::max(mx, part.max[(mg.first + c) * nh + h]);
        double total = 0;
        std::fill(acc.begin(), acc.begin() + D, 0.f);
        for (int64_t c = 0; c < mg.count; ++c) {
          const int64_t slot = mg.first + c;
          const float f = std::exp(part.max[slot * nh + h] - mx);
          total += static_cast<double>(f) * part.sum[slot * nh + h];
          const float* a = part.acc.data() + (slot * nh + h) * D;
          for (int64_t d = 0; d < D; ++d) acc[d] += f * a[d];
        }
        const auto inv = static_cast<float>(1.0 / total);
        for (int64_t d = 0; d < D; ++d) o[h * D + d] = acc[d] * inv;
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
