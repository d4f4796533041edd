// Prefill attention (sequences with q_len > 1) without tensor cores: the path for F32 activations
// or caches, for mixed pairs (e.g. BF16 q with an F16 cache) and, in every pair, for head dim 8
// (no mma k-slice of 16 fits it). CPU reference: kernels/cpu/attention.cc. Same tiling idea as
// attention_prefill.cu, in plain f32 FMAs:
//
// A block of 4 warps takes 16 query rows (4 per warp) of one head of one sequence; the rows sit in
// shared memory widened to f32. Key tiles of 32 rows of K and V are widened into shared memory
// (16-byte global loads). Per tile, lane j of a warp scores key j against the warp's 4 rows (K's
// shared rows padded by one float, so the 32 lanes read 32 banks), the warp keeps an online softmax
// per row (max and sum by shuffles), writes the tile's weights to shared memory, and then each lane
// accumulates its output dims (lane, lane + 32, ...) over the 32 keys. Scores never leave the
// warp; nothing of size T x T exists.
//
// Head dims: any multiple of 8 (K and V rows are read in 16-byte pieces: D * sizeof(Tc) is a
// multiple of 16 for D % 8 == 0 in every dtype). For D < 32 (8, 16) only lanes 0..D-1 accumulate
// output dims; the scoring still puts one key on each of the 32 lanes.
#include <string>

#include "kernels/cuda/attention_impl.cuh"
#include "kernels/cuda/cuda_check.h"

namespace tiergen::kernels::cuda::attn {
namespace {

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kRowsPerWarp = 4;
constexpr int kBQ = kWarps * kRowsPerWarp;  // query rows per block
constexpr int kBK = 32;                     // keys per tile: one per lane
constexpr unsigned kFull = 0xffffffffu;

template <int D>
struct Smem {
  static constexpr int kQ = 0;                   // Qs (kBQ, D)
  static constexpr int kK = kQ + kBQ * D;        // Ks (kBK, D + 1)
  static constexpr int kV = kK + kBK * (D + 1);  // Vs (kBK, D)
  static constexpr int kP = kV + kBK * D;        // Ps (kWarps, kRowsPerWarp, kBK)
  static constexpr int kFloats = kP + kWarps * kRowsPerWarp * kBK;
  static constexpr size_t kBytes = static_cast<size_t>(kFloats) * sizeof(float);
};

__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(kFull, v, o));
  return v;
}
__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFull, v, o);
  return v;
}

// grid (q tiles, n_heads, num_seqs); heavier (later) query tiles first.
template <typename Tq, typename Tc, int D>
__global__ void __launch_bounds__(kThreads) prefill_simt_kernel(Args a) {
  using SM = Smem<D>;
  constexpr int kVec = 16 / sizeof(Tc);
  static_assert(D % kVec == 0, "a K/V row is whole 16-byte pieces");
  constexpr int kDpl = (D + 31) / 32;  // output dims per lane
  const int s = blockIdx.z, h = blockIdx.y;
  const int q_len = a.seqs.q_len[s];
  if (q_len <= 1) return;  // decode() serves q_len == 1
  const int q0 = (gridDim.x - 1 - blockIdx.x) * kBQ;
  if (q0 >= q_len) return;
  const int kv_len = a.seqs.kv_len[s];
  const int past = kv_len - q_len;
  const int rows = min(kBQ, q_len - q0);
  const int kv_end = past + q0 + rows;  // keys visible to the tile's last row: [0, kv_end)
  const int kvh = h / (a.n_heads / a.n_kv_heads);

  const int64_t ld_q = static_cast<int64_t>(a.n_heads) * D, ld_kv = static_cast<int64_t>(a.n_kv_heads) * D;
  const int64_t q_row0 = static_cast<int64_t>(a.seqs.q_begin[s]) + q0;
  const Tq* qg = static_cast<const Tq*>(a.q) + q_row0 * ld_q + static_cast<int64_t>(h) * D;
  const int64_t first = static_cast<int64_t>(a.seqs.slot[s]) * a.capacity;
  const Tc* kg = static_cast<const Tc*>(a.k) + first * ld_kv + static_cast<int64_t>(kvh) * D;
  const Tc* vg = static_cast<const Tc*>(a.v) + first * ld_kv + static_cast<int64_t>(kvh) * D;

  extern __shared__ float smem_simt[];
  float* Qs = smem_simt + SM::kQ;
  float* Ks = smem_simt + SM::kK;
  float* Vs = smem_simt + SM::kV;
  float* Ps = smem_simt + SM::kP;
  for (int i = threadIdx.x; i < kBQ * D; i += kThreads) {
    const int r = i / D, d = i % D;
    Qs[i] = r < rows ? load_f32(qg[r * ld_q + d]) : 0.f;
  }

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const float* Qw = Qs + warp * kRowsPerWarp * D;
  float* Pw = Ps + warp * kRowsPerWarp * kBK;
  int lim[kRowsPerWarp];  // last key each row may see
#pragma unroll
  for (int i = 0; i < kRowsPerWarp; ++i) lim[i] = min(past + q0 + warp * kRowsPerWarp + i, kv_end - 1);
  const int warp_last = past + q0 + warp * kRowsPerWarp + kRowsPerWarp - 1;
  const float slope = a.slopes ? a.slopes[h] : 0.f;

  float m[kRowsPerWarp], l[kRowsPerWarp], acc[kRowsPerWarp][kDpl];
#pragma unroll
  for (int i = 0; i < kRowsPerWarp; ++i) {
    m[i] = -INFINITY;
    l[i] = 0.f;
#pragma unroll
    for (int x = 0; x < kDpl; ++x) acc[i][x] = 0.f;
  }

  for (int kv0 = 0; kv0 < kv_end; kv0 += kBK) {
    __syncthreads();  // the previous tile is no longer read (and, the first time, Qs is written)
    for (int i = threadIdx.x; i < kBK * (D / kVec); i += kThreads) {
      const int r = i / (D / kVec), cv = (i % (D / kVec)) * kVec;
      float kf[kVec], vf[kVec];
      if (kv0 + r < kv_end) {
        load_vec(kg + (kv0 + r) * ld_kv + cv, kf);
        load_vec(vg + (kv0 + r) * ld_kv + cv, vf);
      } else {  // not a key of this block: zeros, never the cache's bytes
#pragma unroll
        for (int e = 0; e < kVec; ++e) kf[e] = vf[e] = 0.f;
      }
#pragma unroll
      for (int e = 0; e < kVec; ++e) {
        Ks[r * (D + 1) + cv + e] = kf[e];
        Vs[r * D + cv + e] = vf[e];
      }
    }
    __syncthreads();
    if (kv0 > warp_last) continue;  // every key of the tile is in this warp's future

    const int j = kv0 + lane;
    float dot[kRowsPerWarp] = {};
    const float* kr = Ks + lane * (D + 1);
#pragma unroll 8
    for (int d = 0; d < D; ++d) {
      const float kd = kr[d];
#pragma unroll
      for (int i = 0; i < kRowsPerWarp; ++i) dot[i] = fmaf(Qw[i * D + d], kd, dot[i]);
    }
#pragma unroll
    for (int i = 0; i < kRowsPerWarp; ++i) {
      const float sc = j <= lim[i] ? dot[i] * a.scale + slope * static_cast<float>(j) : -INFINITY;
      const float m_new = fmaxf(m[i], warp_max(sc));
      const float base = safe_base(m_new);
      const float corr = expf(m[i] - base);
      const float p = expf(sc - base);
      l[i] = l[i] * corr + warp_sum(p);
      m[i] = m_new;
      Pw[i * kBK + lane] = p;
#pragma unroll
      for (int x = 0; x < kDpl; ++x) acc[i][x] *= corr;
    }
    __syncwarp();
#pragma unroll 4
    for (int jj = 0; jj < kBK; ++jj) {
#pragma unroll
      for (int x = 0; x < kDpl; ++x) {
        const int d = lane + 32 * x;
        if (D % 32 == 0 || d < D) {
          const float v = Vs[jj * D + d];
#pragma unroll
          for (int i = 0; i < kRowsPerWarp; ++i) acc[i][x] = fmaf(Pw[i * kBK + jj], v, acc[i][x]);
        }
      }
    }
    __syncwarp();  // Pw is rewritten by the next tile
  }

  Tq* og = static_cast<Tq*>(a.out) + q_row0 * ld_q + static_cast<int64_t>(h) * D;
#pragma unroll
  for (int i = 0; i < kRowsPerWarp; ++i) {
    const int r = warp * kRowsPerWarp + i;
    if (r >= rows) continue;
#pragma unroll
    for (int x = 0; x < kDpl; ++x) {
      const int d = lane + 32 * x;
      if (D % 32 == 0 || d < D) og[r * ld_q + d] = store_as<Tq>(acc[i][x] / l[i]);
    }
  }
}

template <typename Tq, typename Tc, int D>
void launch_simt(cudaStream_t stream, const Args& a) {
  constexpr size_t smem = Smem<D>::kBytes;
  // Above 48 KB (D = 256) a kernel must opt in to the larger dynamic shared memory.
  CUDA_CHECK(cudaFuncSetAttribute(prefill_simt_kernel<Tq, Tc, D>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  static_cast<int>(smem)));
  const dim3 grid(static_cast<unsigned>((a.seqs.max_q_len + kBQ - 1) / kBQ), static_cast<unsigned>(a.n_heads),
                  static_cast<unsigned>(a.seqs.num_seqs));
  prefill_simt_kernel<Tq, Tc, D><<<grid, kThreads, smem, stream>>>(a);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void prefill_simt(cudaStream_t stream, const Args& a, DType act, DType cache) {
  dispatch_float(act, "attention", [&](auto tq) {
    dispatch_float(cache, "attention", [&](auto tc) {
      using Tq = typename decltype(tq)::type;
      using Tc = typename decltype(tc)::type;
      // Equal 16-bit pairs run on the tensor cores (attention_prefill.cu) wherever mma_head_dim()
      // holds; here they are instantiated only for the head dims it rejects (8).
      dispatch_head_dim(a.head_dim, [&](auto d) {
        constexpr int D = decltype(d)::value;
        if constexpr (std::is_same_v<Tq, Tc> && !std::is_same_v<Tq, float> && mma_head_dim(D))
          throw InternalError("attention: the SIMT prefill was asked for a tensor-core dtype pair and head dim");
        else
          launch_simt<Tq, Tc, D>(stream, a);
      });
    });
  });
}

}  // namespace tiergen::kernels::cuda::attn
