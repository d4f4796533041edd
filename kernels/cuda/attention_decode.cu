// Decode attention (every sequence with q_len == 1 in the step), flash-decoding style. CPU
// reference: kernels/cpu/attention.cc. Memory-bound: each step reads every cached K and V row once,
// so the kernels are built around the cache reads. Keys are split into chunks across blocks; each
// block writes its chunk's partial softmax (running max m, sum l, unnormalised acc) to scratch,
// and a combine kernel, a block per (sequence, query head), merges the chunks, divides by the
// total sum and rounds once to out's dtype. Two split kernels:
//  - SIMT (every dtype pair; MHA always): a block per (kv head [, group of up to GQ query heads],
//    key chunk, sequence). Its threads are key groups of kTpk threads; each group reads one cache
//    row with one 16-byte load per thread (the row's bytes are contiguous, so a group's loads are
//    one coalesced segment) and keeps kUnroll keys of K and V in flight per thread before using
//    any. Each key group keeps an online softmax over its keys; the block merges its groups in
//    shared memory. Query heads sharing the kv head are scored against the same loaded rows.
//  - tensor cores (shared kv heads, q and cache both F16 or both BF16, head_dim % 16 == 0, i.e.
//    every supported head dim but 8, which the SIMT kernel takes): the kv head's query heads
//    are the rows of mma tiles, K/V tiles stream through shared memory by cp.async (see
//    decode_mma_kernel). Scoring several heads per key in SIMT costs a dot-product reduction and
//    the softmax bookkeeping per head per key in every lane of a key group, which made GQA
//    compute-bound (about 1.1 TB/s of KV on an H100 against 1.8 here for 32/8 heads).
// Chunks have one length for the whole step (from the host's max_kv_len); a sequence uses
// ceil(kv_len / chunk) of them and the blocks past its end return at once. Grids put the heads
// fastest, so blocks running side by side read neighbouring bytes of the same cache rows.
// Scores, exponentials and sums are f32; expf (accurate, not __expf).
#include <algorithm>
#include <limits>
#include <string>

#include "kernels/cuda/attention_impl.cuh"
#include "kernels/cuda/attention_mma.cuh"
#include "kernels/cuda/cuda_check.h"

namespace tiergen::kernels::cuda::attn {
namespace {

constexpr int kThreads = 128;
constexpr int kMinChunk = 128;  // keys per block at least: below this the merge costs as much as the keys
constexpr unsigned kFull = 0xffffffffu;

constexpr int pow2_at_least(int n) {
  int p = 1;
  while (p < n) p *= 2;
  return p;
}

// How a block of kThreads covers cache rows of D elements of Tc, for GQ query heads per block.
template <typename Tc, int D, int GQ>
struct Geom {
  // Keys per key group per iteration, all loaded before the first is used: 2 * kUnroll 16-byte
  // loads in flight per thread. Blocks serving several query heads hold GQ times the q and acc
  // registers and do GQ times the arithmetic per byte, so they keep fewer loads in flight.
  static constexpr int kUnroll = GQ == 1 ? 4 : 2;
  static constexpr int kVec = 16 / sizeof(Tc);  // elements per 16-byte load
  static_assert(D % kVec == 0, "a cache row is whole 16-byte vectors");
  static constexpr int kNv = D / kVec;                                            // vectors per row
  static constexpr int kTpk = pow2_at_least(kNv) < 32 ? pow2_at_least(kNv) : 32;  // threads per key
  static constexpr int kVpt = (kNv + kTpk - 1) / kTpk;                            // vectors per thread
  static constexpr int kGroups = kThreads / kTpk;                                 // keys side by side
  static constexpr int kSpan = kGroups * kUnroll;                                 // keys per iteration
  // Small head dims have short rows: D = 8 in F16/BF16 is one vector, so a key group is a single
  // thread (kTpk 1: no shuffles) and the block scores 128 keys side by side; D = 16 and 32 take 2
  // and 4 threads per key (F32: twice as many). The merge's static shared memory grows as
  // kGroups * (D + 2) floats per query head, kGroups * D = kThreads * kVec * kNv / kTpk being at
  // most kThreads * kVec: 40 KB at most (GQ = 8, D = 8 in 16 bits: 32 KB of acc, 8 KB of m and l),
  // under the 48 KB a kernel may have without opting in.
  static constexpr size_t kMergeBytes = static_cast<size_t>(GQ) * kGroups * (2 + D) * sizeof(float);
  static_assert(kMergeBytes <= 48 * 1024, "the key groups' merge fits in static shared memory");
};

// 16 bytes of the cache, read once per step: not kept in L1, and the L2 asked to fetch the whole
// 256-byte segment (a key group reads its row's segment at once). volatile keeps the loads in
// program order (all of an iteration's loads are issued before their first use anyway); without
// it nvcc put some of the kUnroll x kVpt vectors in local memory.
__device__ __forceinline__ uint4 ld_stream(const void* p) {
  uint4 r;
  asm volatile("ld.global.nc.L1::no_allocate.L2::256B.v4.u32 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
               : "l"(p));
  return r;
}

// Scratch layout: for (sequence s, query head h, chunk c), index (s * Hq + h) * n_chunks + c:
// ml[2 * i] = running max, ml[2 * i + 1] = sum of exp(score - max); acc[i * D + d] unnormalised.
struct Partials {
  float* ml;
  float* acc;
};

// grid (n_kv_heads * n_qblocks, n_chunks, num_seqs); query heads h0 .. h0 + nh - 1 of kv head kvh.
// Heads vary fastest, so blocks running side by side read neighbouring bytes of the same cache rows.
template <typename Tq, typename Tc, int D, int GQ>
__global__ void __launch_bounds__(kThreads)
    decode_split_kernel(Partials part, Args a, int group, int n_qblocks, int chunk, int n_chunks) {
  using G = Geom<Tc, D, GQ>;
  const int s = blockIdx.z;
  if (a.seqs.q_len[s] != 1) return;
  const int kv_len = a.seqs.kv_len[s];
  const int k_begin = blockIdx.y * chunk;
  if (k_begin >= kv_len) return;  // past this sequence's last chunk
  const int k_end = min(kv_len, k_begin + chunk);
  const int kvh = blockIdx.x / n_qblocks, qb = blockIdx.x % n_qblocks;
  const int h0 = kvh * group + qb * GQ;
  const int nh = min(GQ, group - qb * GQ);
  const int kg = threadIdx.x / G::kTpk, li = threadIdx.x % G::kTpk;

  // This thread's slice of each query head: vectors li, li + kTpk, ... of the row.
  const int64_t ld_q = static_cast<int64_t>(a.n_heads) * D;
  const Tq* qrow = static_cast<const Tq*>(a.q) + a.seqs.q_begin[s] * ld_q + static_cast<int64_t>(h0) * D;
  float qf[GQ][G::kVpt][G::kVec];
  float slope[GQ];
#pragma unroll
  for (int g = 0; g < GQ; ++g) {
    slope[g] = (a.slopes && g < nh) ? a.slopes[h0 + g] : 0.f;
#pragma unroll
    for (int v = 0; v < G::kVpt; ++v) {
      const int vi = li + v * G::kTpk;
      if (g < nh && vi < G::kNv) {
        load_vec(qrow + g * D + vi * G::kVec, qf[g][v]);
      } else {
#pragma unroll
        for (int e = 0; e < G::kVec; ++e) qf[g][v][e] = 0.f;
      }
    }
  }

  const int64_t ld_kv = static_cast<int64_t>(a.n_kv_heads) * D;
  const int64_t first = static_cast<int64_t>(a.seqs.slot[s]) * a.capacity;
  const Tc* __restrict__ kbase = static_cast<const Tc*>(a.k) + first * ld_kv + static_cast<int64_t>(kvh) * D;
  const Tc* __restrict__ vbase = static_cast<const Tc*>(a.v) + first * ld_kv + static_cast<int64_t>(kvh) * D;

  float m[GQ], l[GQ], acc[GQ][G::kVpt][G::kVec];
#pragma unroll
  for (int g = 0; g < GQ; ++g) {
    m[g] = -INFINITY;
    l[g] = 0.f;
#pragma unroll
    for (int v = 0; v < G::kVpt; ++v)
#pragma unroll
      for (int e = 0; e < G::kVec; ++e) acc[g][v][e] = 0.f;
  }

  // Every thread runs the same number of iterations (the shuffles below need whole warps); keys
  // past k_end are not read and score -inf.
  for (int j0 = k_begin; j0 < k_end; j0 += G::kSpan) {
    uint4 kr[G::kUnroll][G::kVpt], vr[G::kUnroll][G::kVpt];
#pragma unroll
    for (int u = 0; u < G::kUnroll; ++u) {
      const int j = j0 + u * G::kGroups + kg;
#pragma unroll
      for (int v = 0; v < G::kVpt; ++v) {
        const int vi = li + v * G::kTpk;
        if (j < k_end && vi < G::kNv) {
          kr[u][v] = ld_stream(kbase + j * ld_kv + vi * G::kVec);
          vr[u][v] = ld_stream(vbase + j * ld_kv + vi * G::kVec);
        } else {
          kr[u][v] = make_uint4(0, 0, 0, 0);
          vr[u][v] = make_uint4(0, 0, 0, 0);
        }
      }
    }
#pragma unroll
    for (int g = 0; g < GQ; ++g) {
      if (g >= nh) break;  // uniform over the block
      float sc[G::kUnroll];
#pragma unroll
      for (int u = 0; u < G::kUnroll; ++u) {
        float dot = 0.f;
#pragma unroll
        for (int v = 0; v < G::kVpt; ++v) {
          float kf[G::kVec];
          widen16<Tc>(kr[u][v], kf);
#pragma unroll
          for (int e = 0; e < G::kVec; ++e) dot = fmaf(qf[g][v][e], kf[e], dot);
        }
        // The key group's kTpk lanes are aligned within the warp: xor offsets below kTpk stay in it.
#pragma unroll
        for (int o = G::kTpk / 2; o > 0; o >>= 1) dot += __shfl_xor_sync(kFull, dot, o);
        const int j = j0 + u * G::kGroups + kg;
        sc[u] = j < k_end ? dot * a.scale + slope[g] * static_cast<float>(j) : -INFINITY;
      }
      float mx = m[g];
#pragma unroll
      for (int u = 0; u < G::kUnroll; ++u) mx = fmaxf(mx, sc[u]);
      const float base = safe_base(mx);
      const float corr = expf(m[g] - base);  // 0 while m[g] is -inf
      float p[G::kUnroll], psum = 0.f;
#pragma unroll
      for (int u = 0; u < G::kUnroll; ++u) {
        p[u] = expf(sc[u] - base);
        psum += p[u];
      }
      l[g] = l[g] * corr + psum;
      m[g] = mx;
#pragma unroll
      for (int v = 0; v < G::kVpt; ++v) {
#pragma unroll
        for (int e = 0; e < G::kVec; ++e) acc[g][v][e] *= corr;
#pragma unroll
        for (int u = 0; u < G::kUnroll; ++u) {
          float vf[G::kVec];
          widen16<Tc>(vr[u][v], vf);
#pragma unroll
          for (int e = 0; e < G::kVec; ++e) acc[g][v][e] = fmaf(p[u], vf[e], acc[g][v][e]);
        }
      }
    }
  }

  // Merge the key groups: rescale each to the block's max, sum over groups.
  __shared__ float sm_m[GQ][G::kGroups], sm_l[GQ][G::kGroups];
  __shared__ float sm_acc[GQ][G::kGroups][D];
#pragma unroll
  for (int g = 0; g < GQ; ++g)
    if (g < nh && li == 0) {
      sm_m[g][kg] = m[g];
      sm_l[g][kg] = l[g];
    }
  __syncthreads();
#pragma unroll
  for (int g = 0; g < GQ; ++g) {
    if (g >= nh) break;
    float bm = -INFINITY;
    for (int i = 0; i < G::kGroups; ++i) bm = fmaxf(bm, sm_m[g][i]);
    const float f = expf(m[g] - safe_base(bm));  // 0 for a group that saw no key
#pragma unroll
    for (int v = 0; v < G::kVpt; ++v) {
      const int vi = li + v * G::kTpk;
      if (vi < G::kNv)
#pragma unroll
        for (int e = 0; e < G::kVec; ++e) sm_acc[g][kg][vi * G::kVec + e] = acc[g][v][e] * f;
    }
  }
  __syncthreads();
  const int64_t out_base = (static_cast<int64_t>(s) * a.n_heads + h0) * n_chunks + blockIdx.y;
  for (int i = threadIdx.x; i < nh * D; i += kThreads) {
    const int g = i / D, d = i % D;
    float sum = 0.f;
    for (int k = 0; k < G::kGroups; ++k) sum += sm_acc[g][k][d];
    part.acc[(out_base + static_cast<int64_t>(g) * n_chunks) * D + d] = sum;
  }
  if (threadIdx.x < nh) {
    const int g = threadIdx.x;
    float bm = -INFINITY;
    for (int i = 0; i < G::kGroups; ++i) bm = fmaxf(bm, sm_m[g][i]);
    float bl = 0.f;
    for (int i = 0; i < G::kGroups; ++i) bl += sm_l[g][i] * expf(sm_m[g][i] - safe_base(bm));
    const int64_t idx = out_base + static_cast<int64_t>(g) * n_chunks;
    part.ml[2 * idx] = bm;
    part.ml[2 * idx + 1] = bl;
  }
}

// grid (num_seqs, n_heads): out row q_begin[s], head h = sum_c acc_c e^(m_c - M) / sum_c l_c e^(m_c - M).
template <typename Tq>
__global__ void __launch_bounds__(kThreads)
    decode_combine_kernel(Tq* out, Partials part, SeqMeta seqs, int n_heads, int D, int chunk, int n_chunks) {
  const int s = blockIdx.x, h = blockIdx.y;
  if (seqs.q_len[s] != 1) return;
  const int used = (seqs.kv_len[s] + chunk - 1) / chunk;
  const int64_t base = (static_cast<int64_t>(s) * n_heads + h) * n_chunks;
  float M = -INFINITY;
  for (int c = 0; c < used; ++c) M = fmaxf(M, part.ml[2 * (base + c)]);
  float L = 0.f;
  for (int c = 0; c < used; ++c) L += part.ml[2 * (base + c) + 1] * expf(part.ml[2 * (base + c)] - M);
  Tq* orow = out + static_cast<int64_t>(seqs.q_begin[s]) * n_heads * D + static_cast<int64_t>(h) * D;
  for (int d = threadIdx.x; d < D; d += kThreads) {
    float o = 0.f;
    for (int c = 0; c < used; ++c) o += part.acc[(base + c) * D + d] * expf(part.ml[2 * (base + c)] - M);
    orow[d] = store_as<Tq>(o / L);
  }
}

// ---- shared kv heads on the tensor cores ----
// A block serves one kv head of one sequence's chunk for up to 16 of its query heads: they are the
// 16 rows of the mma A tile (heads past the group are zero rows, never written). Key tiles of
// kBK = 64 rows of K and V go to shared memory by cp.async, two stages deep (as in
// attention_prefill.cu); warp w takes keys 16w..16w+15 of each tile: S (16 x 16) = Q K^T, the
// online softmax on it, P rounded to T, O (16 x D) += P V, all in registers. At the end the four
// warps' (m, l, O) are merged in shared memory (reusing the tiles' space) and written as the
// chunk's partials, combined as the SIMT kernel's are. K and V are read from memory once per kv
// head, and the per-key work is a few mma instructions for all the group's heads together.
template <int D>
struct MmaTile {
  // Q K^T takes the head dim in k-slices of 16 (D = 16, 32, 64, 80, 96, 128, 256; decode() sends
  // head dim 8 to the SIMT kernel), P V in n-slices of 8; rows are whole 16-byte cp.async pieces.
  static_assert(mma_head_dim(D), "the tensor-core decode needs head_dim % 16 == 0");
  static constexpr int kBK = 64;     // keys per tile, 16 per warp
  static constexpr int kLd = D + 8;  // shared row stride in elements (16 bytes of padding)
  static constexpr size_t kSmemBytes = static_cast<size_t>(16 + 2 * 2 * kBK) * kLd * 2;
  static_assert(static_cast<size_t>(4 * 16 * D + 2 * 4 * 16) * sizeof(float) <= kSmemBytes,
                "the warps' merge fits in the tiles' shared memory");
};

// grid (n_kv_heads * n_hblocks, n_chunks, num_seqs).
template <typename T, int D>
__global__ void __launch_bounds__(kThreads)
    decode_mma_kernel(Partials part, Args a, int group, int n_hblocks, int chunk, int n_chunks) {
  using TL = MmaTile<D>;
  constexpr int kBK = TL::kBK, kLd = TL::kLd;
  const int s = blockIdx.z;
  if (a.seqs.q_len[s] != 1) return;
  const int kv_len = a.seqs.kv_len[s];
  const int k_begin = blockIdx.y * chunk;
  if (k_begin >= kv_len) return;
  const int k_end = min(kv_len, k_begin + chunk);
  const int kvh = blockIdx.x / n_hblocks, hb = blockIdx.x % n_hblocks;
  const int h0 = kvh * group + hb * 16;
  const int nh = min(16, group - hb * 16);

  // The nh query heads of the row are contiguous: (nh, D) with row stride D.
  const int64_t ld_q = static_cast<int64_t>(a.n_heads) * D, ld_kv = static_cast<int64_t>(a.n_kv_heads) * D;
  const uint16_t* qg = static_cast<const uint16_t*>(a.q) + a.seqs.q_begin[s] * ld_q + static_cast<int64_t>(h0) * D;
  const int64_t first = static_cast<int64_t>(a.seqs.slot[s]) * a.capacity + k_begin;
  const uint16_t* kg = static_cast<const uint16_t*>(a.k) + first * ld_kv + static_cast<int64_t>(kvh) * D;
  const uint16_t* vg = static_cast<const uint16_t*>(a.v) + first * ld_kv + static_cast<int64_t>(kvh) * D;
  const int n_keys = k_end - k_begin, n_tiles = (n_keys + kBK - 1) / kBK;

  extern __shared__ __align__(16) unsigned char smem_dec[];
  uint16_t* Qs = reinterpret_cast<uint16_t*>(smem_dec);
  auto Ks = [&](int b) { return Qs + (16 + b * kBK) * kLd; };
  auto Vs = [&](int b) { return Qs + (16 + (2 + b) * kBK) * kLd; };
  load_tile<D, 16, kLd, kThreads>(Qs, qg, D, nh);
  load_tile<D, kBK, kLd, kThreads>(Ks(0), kg, ld_kv, min(kBK, n_keys));
  load_tile<D, kBK, kLd, kThreads>(Vs(0), vg, ld_kv, min(kBK, n_keys));
  cp_async_commit();

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, c = lane % 4;
  const float slope[2] = {a.slopes && g < nh ? a.slopes[h0 + g] : 0.f,  // rows g and g + 8
                          a.slopes && g + 8 < nh ? a.slopes[h0 + g + 8] : 0.f};
  float o[D / 8][4];
#pragma unroll
  for (int i = 0; i < D / 8; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};  // l: this thread's part of the row sum

  for (int t = 0; t < n_tiles; ++t) {
    if (t + 1 < n_tiles) {
      const int next = (t + 1) * kBK;
      load_tile<D, kBK, kLd, kThreads>(Ks((t + 1) & 1), kg + next * ld_kv, ld_kv, min(kBK, n_keys - next));
      load_tile<D, kBK, kLd, kThreads>(Vs((t + 1) & 1), vg + next * ld_kv, ld_kv, min(kBK, n_keys - next));
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    const int kw = t * kBK + 16 * warp;  // the warp's first key, relative to k_begin
    if (kw < n_keys) {
      const uint16_t* Kt = Ks(t & 1) + 16 * warp * kLd;
      const uint16_t* Vt = Vs(t & 1) + 16 * warp * kLd;
      float sc[2][4] = {};
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) {
        const uint16_t* qa = Qs + g * kLd + kk * 16 + 2 * c;
        const uint32_t af[4] = {lds32(qa), lds32(qa + 8 * kLd), lds32(qa + 8), lds32(qa + 8 * kLd + 8)};
#pragma unroll
        for (int n = 0; n < 2; ++n) {
          const uint16_t* kb = Kt + (n * 8 + g) * kLd + kk * 16 + 2 * c;
          mma16816<T>(sc[n], af, lds32(kb), lds32(kb + 8));
        }
      }
      float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
      for (int n = 0; n < 2; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int jr = kw + n * 8 + 2 * c + (e & 1);  // key index relative to k_begin
          sc[n][e] = jr < n_keys ? sc[n][e] * a.scale + slope[e >> 1] * static_cast<float>(k_begin + jr) : -INFINITY;
          mx[e >> 1] = fmaxf(mx[e >> 1], sc[n][e]);
        }
      float base[2], corr[2];
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        mx[i] = fmaxf(mx[i], __shfl_xor_sync(kFull, mx[i], 1));
        mx[i] = fmaxf(mx[i], __shfl_xor_sync(kFull, mx[i], 2));
        const float m_new = fmaxf(m[i], mx[i]);
        base[i] = safe_base(m_new);
        corr[i] = expf(m[i] - base[i]);
        m[i] = m_new;
        l[i] *= corr[i];
      }
      uint32_t pa[4];
#pragma unroll
      for (int n = 0; n < 2; ++n) {
#pragma unroll
        for (int e = 0; e < 4; ++e) sc[n][e] = expf(sc[n][e] - base[e >> 1]);
        pa[2 * n] = round_pack<T>(sc[n][0], sc[n][1]);
        pa[2 * n + 1] = round_pack<T>(sc[n][2], sc[n][3]);
        l[0] += sc[n][0] + sc[n][1];
        l[1] += sc[n][2] + sc[n][3];
      }
#pragma unroll
      for (int dn = 0; dn < D / 8; ++dn) {
        o[dn][0] *= corr[0];
        o[dn][1] *= corr[0];
        o[dn][2] *= corr[1];
        o[dn][3] *= corr[1];
        const uint16_t* vb = Vt + 2 * c * kLd + dn * 8 + g;
        const uint32_t b0 = static_cast<uint32_t>(vb[0]) | (static_cast<uint32_t>(vb[kLd]) << 16);
        const uint32_t b1 = static_cast<uint32_t>(vb[8 * kLd]) | (static_cast<uint32_t>(vb[9 * kLd]) << 16);
        mma16816<T>(o[dn], pa, b0, b1);
      }
    }
    __syncthreads();  // the stage just read is refilled next; after the last tile, smem is reused
  }

  // Merge the warps: Ow (4, 16, D), Mw and Lw (4, 16) in the tiles' shared memory.
  float* Ow = reinterpret_cast<float*>(smem_dec);
  float* Mw = Ow + 4 * 16 * D;
  float* Lw = Mw + 4 * 16;
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    l[i] += __shfl_xor_sync(kFull, l[i], 1);
    l[i] += __shfl_xor_sync(kFull, l[i], 2);
    const int r = g + 8 * i;
    if (c == 0) {
      Mw[warp * 16 + r] = m[i];
      Lw[warp * 16 + r] = l[i];
    }
#pragma unroll
    for (int dn = 0; dn < D / 8; ++dn) {
      Ow[(warp * 16 + r) * D + dn * 8 + 2 * c] = o[dn][2 * i];
      Ow[(warp * 16 + r) * D + dn * 8 + 2 * c + 1] = o[dn][2 * i + 1];
    }
  }
  __syncthreads();
  const int64_t out_base = (static_cast<int64_t>(s) * a.n_heads + h0) * n_chunks + blockIdx.y;
  for (int i = threadIdx.x; i < nh * D; i += kThreads) {
    const int r = i / D, d = i % D;
    float M = -INFINITY;
    for (int w = 0; w < 4; ++w) M = fmaxf(M, Mw[w * 16 + r]);
    float sum = 0.f;
    for (int w = 0; w < 4; ++w) sum += Ow[(w * 16 + r) * D + d] * expf(Mw[w * 16 + r] - M);  // 0 for an idle warp
    part.acc[(out_base + static_cast<int64_t>(r) * n_chunks) * D + d] = sum;
  }
  if (threadIdx.x < nh) {
    const int r = threadIdx.x;
    float M = -INFINITY;
    for (int w = 0; w < 4; ++w) M = fmaxf(M, Mw[w * 16 + r]);
    float L = 0.f;
    for (int w = 0; w < 4; ++w) L += Lw[w * 16 + r] * expf(Mw[w * 16 + r] - M);
    const int64_t idx = out_base + static_cast<int64_t>(r) * n_chunks;
    part.ml[2 * idx] = M;
    part.ml[2 * idx + 1] = L;
  }
}

// The step's chunking: `base_blocks` blocks per chunk index; enough chunks to give every SM about
// `per_sm` blocks, none under `min_chunk` keys, each a whole number of `span`-key iterations.
struct Chunking {
  int chunk = 0, n_chunks = 0;
};
Chunking plan_chunks(const Args& a, int64_t base_blocks, int per_sm, int min_chunk, int span) {
  const int64_t want = (static_cast<int64_t>(sm_count()) * per_sm + base_blocks - 1) / base_blocks;
  const int64_t by_len = std::max<int64_t>(1, (a.seqs.max_kv_len + min_chunk - 1) / min_chunk);
  const int64_t splits = std::clamp<int64_t>(want, 1, by_len);
  int64_t chunk = (a.seqs.max_kv_len + splits - 1) / splits;
  chunk = (chunk + span - 1) / span * span;
  const int64_t n_chunks = (a.seqs.max_kv_len + chunk - 1) / chunk;
  if (n_chunks > 65535) throw UnsupportedError("attention: too many key chunks for one launch's grid");
  return {static_cast<int>(chunk), static_cast<int>(n_chunks)};
}

// The partials of every (sequence, query head, chunk), from the backend's workspace.
Partials scratch(Workspace& ws, cudaStream_t stream, const Args& a, int n_chunks) {
  const int64_t entries = static_cast<int64_t>(a.seqs.num_seqs) * a.n_heads * n_chunks;
  const size_t ml_bytes = (static_cast<size_t>(entries) * 2 * sizeof(float) + 255) / 256 * 256;
  char* p = static_cast<char*>(ws.get(ml_bytes + static_cast<size_t>(entries) * a.head_dim * sizeof(float), stream));
  return {reinterpret_cast<float*>(p), reinterpret_cast<float*>(p + ml_bytes)};
}

template <typename Tq>
void combine(cudaStream_t stream, const Args& a, const Partials& part, const Chunking& ck) {
  decode_combine_kernel<Tq>
      <<<dim3(static_cast<unsigned>(a.seqs.num_seqs), static_cast<unsigned>(a.n_heads)), kThreads, 0, stream>>>(
          static_cast<Tq*>(a.out), part, a.seqs, a.n_heads, a.head_dim, ck.chunk, ck.n_chunks);
  CUDA_CHECK_LAUNCH();
}

template <typename Tq, typename Tc, int D, int GQ>
void launch_simt(cudaStream_t stream, Workspace& ws, const Args& a) {
  using G = Geom<Tc, D, GQ>;
  const int group = a.n_heads / a.n_kv_heads;
  const int n_qblocks = (group + GQ - 1) / GQ;
  const int64_t heads = static_cast<int64_t>(a.n_kv_heads) * n_qblocks;
  // About 8 blocks of this size fit an SM: one full wave.
  const Chunking ck = plan_chunks(a, a.seqs.num_seqs * heads, 8, kMinChunk, G::kSpan);
  const Partials part = scratch(ws, stream, a, ck.n_chunks);
  const dim3 grid(static_cast<unsigned>(heads), static_cast<unsigned>(ck.n_chunks),
                  static_cast<unsigned>(a.seqs.num_seqs));
  decode_split_kernel<Tq, Tc, D, GQ><<<grid, kThreads, 0, stream>>>(part, a, group, n_qblocks, ck.chunk, ck.n_chunks);
  CUDA_CHECK_LAUNCH();
  combine<Tq>(stream, a, part, ck);
}

template <typename T, int D>
void launch_mma(cudaStream_t stream, Workspace& ws, const Args& a) {
  using TL = MmaTile<D>;
  const int group = a.n_heads / a.n_kv_heads;
  const int n_hblocks = (group + 15) / 16;
  const int64_t heads = static_cast<int64_t>(a.n_kv_heads) * n_hblocks;
  // Two or three blocks fit an SM (shared memory); at least two tiles per block.
  const Chunking ck = plan_chunks(a, a.seqs.num_seqs * heads, 4, 2 * TL::kBK, TL::kBK);
  const Partials part = scratch(ws, stream, a, ck.n_chunks);
  CUDA_CHECK(cudaFuncSetAttribute(decode_mma_kernel<T, D>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  static_cast<int>(TL::kSmemBytes)));
  const dim3 grid(static_cast<unsigned>(heads), static_cast<unsigned>(ck.n_chunks),
                  static_cast<unsigned>(a.seqs.num_seqs));
  decode_mma_kernel<T, D><<<grid, kThreads, TL::kSmemBytes, stream>>>(part, a, group, n_hblocks, ck.chunk, ck.n_chunks);
  CUDA_CHECK_LAUNCH();
  combine<T>(stream, a, part, ck);
}

}  // namespace

void decode(cudaStream_t stream, Workspace& ws, const Args& a, DType act, DType cache) {
  // MHA: one query head per block (the lightest in registers; memory-bound as it is). Shared kv
  // heads with q and cache both F16 or both BF16 and head_dim % 16 == 0: the tensor-core kernel,
  // all of a kv head's query heads as the rows of one mma tile. Other shared cases, head dim 8 in
  // 16 bits among them (no mma k-slice of 16 fits it): up to 8 query heads per SIMT block.
  const bool shared_kv = a.n_heads != a.n_kv_heads;
  if (shared_kv && act == cache && (act == DType::F16 || act == DType::BF16) && mma_head_dim(a.head_dim)) {
    dispatch_head_dim(a.head_dim, [&](auto d) {
      constexpr int D = decltype(d)::value;
      if constexpr (mma_head_dim(D)) {  // not instantiated for the others, which never get here
        if (act == DType::F16)
          launch_mma<__half, D>(stream, ws, a);
        else
          launch_mma<__nv_bfloat16, D>(stream, ws, a);
      }
    });
    return;
  }
  dispatch_float(act, "attention", [&](auto tq) {
    dispatch_float(cache, "attention", [&](auto tc) {
      using Tq = typename decltype(tq)::type;
      using Tc = typename decltype(tc)::type;
      dispatch_head_dim(a.head_dim, [&](auto d) {
        constexpr int D = decltype(d)::value;
        if (shared_kv)
          launch_simt<Tq, Tc, D, 8>(stream, ws, a);
        else
          launch_simt<Tq, Tc, D, 1>(stream, ws, a);
      });
    });
  });
}

}  // namespace tiergen::kernels::cuda::attn
