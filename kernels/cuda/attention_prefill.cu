// Prefill attention (sequences with q_len > 1) on the tensor cores, FlashAttention-2 style. CPU
// reference: kernels/cpu/attention.cc. Used when q and the cache are both F16 or both BF16 and the
// head dim is a multiple of 16 (16, 32, 64, 80, 96, 128, 256); other dtype pairs, and head dim 8,
// go to the f32 SIMT kernel (attention_prefill_simt.cu).
//
// A block of 4 warps takes 64 query rows of one head of one sequence; each warp owns 16 rows. Key
// tiles of kBK rows of K and V are copied into shared memory with cp.async, two stages deep, so the
// next tile loads while this one is computed. Per tile, each warp:
//   S (16 x kBK) = Q K^T with mma.sync m16n8k16 (16-bit inputs, f32 accumulation), in registers;
//   causal / length mask, scale and ALiBi on S, then the online softmax: running row max m, the
//     accumulator rescaled by exp(m_old - m_new), P = exp(S - m_new) in f32;
//   P is rounded to the input dtype (the tensor cores take 16-bit operands) and the row sums l are
//     taken over the rounded values, so the normalised weights are exactly P / l;
//   O (16 x D) += P V with mma.sync, O in f32 registers.
// No T x T score matrix exists anywhere; only Q, two K/V stages and the registers. At the end
// O / l is rounded once to out's dtype.
//
// The fragment layouts and why no shared-memory round trip is needed for P: attention_mma.cuh.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <string>

#include "kernels/cuda/attention_impl.cuh"
#include "kernels/cuda/attention_mma.cuh"
#include "kernels/cuda/cuda_check.h"

namespace tiergen::kernels::cuda::attn {
namespace {

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kBQ = kWarps * 16;  // query rows per block
constexpr unsigned kFull = 0xffffffffu;

template <int D>
struct Tile {
  // Q K^T takes the head dim in k-slices of 16 (D = 16, 32, 64, 80, 96, 128, 256; head dim 8 goes
  // to the SIMT kernel), P V in n-slices of 8; rows are whole 16-byte cp.async pieces.
  static_assert(mma_head_dim(D), "the tensor-core prefill needs head_dim % 16 == 0");
  // 64 keys per tile, 32 for D = 256 (its O accumulator alone is 128 registers per thread).
  static constexpr int kBK = D > 128 ? 32 : 64;
  static constexpr int kLd = D + 8;  // shared row stride in elements: 16 bytes of padding
  static constexpr size_t kSmemBytes = static_cast<size_t>(kBQ + 2 * 2 * kBK) * kLd * 2;
};

// grid (q tiles, n_heads, num_seqs); heavier (later) query tiles first.
template <typename T, int D>
__global__ void __launch_bounds__(kThreads) prefill_mma_kernel(Args a) {
  using TL = Tile<D>;
  constexpr int kBK = TL::kBK, kLd = TL::kLd;
  const int s = blockIdx.z, h = blockIdx.y;
  const int q_len = a.seqs.q_len[s];
  if (q_len <= 1) return;  // decode() serves q_len == 1
  const int q0 = (gridDim.x - 1 - blockIdx.x) * kBQ;
  if (q0 >= q_len) return;
  const int kv_len = a.seqs.kv_len[s];
  const int past = kv_len - q_len;
  const int rows = min(kBQ, q_len - q0);
  const int kv_end = past + q0 + rows;  // keys visible to the tile's last row: [0, kv_end)
  const int n_tiles = (kv_end + kBK - 1) / kBK;
  const int kvh = h / (a.n_heads / a.n_kv_heads);

  const int64_t ld_q = static_cast<int64_t>(a.n_heads) * D, ld_kv = static_cast<int64_t>(a.n_kv_heads) * D;
  const int64_t q_row0 = static_cast<int64_t>(a.seqs.q_begin[s]) + q0;
  const uint16_t* qg = static_cast<const uint16_t*>(a.q) + q_row0 * ld_q + static_cast<int64_t>(h) * D;
  const int64_t first = static_cast<int64_t>(a.seqs.slot[s]) * a.capacity;
  const uint16_t* kg = static_cast<const uint16_t*>(a.k) + first * ld_kv + static_cast<int64_t>(kvh) * D;
  const uint16_t* vg = static_cast<const uint16_t*>(a.v) + first * ld_kv + static_cast<int64_t>(kvh) * D;

  extern __shared__ __align__(16) unsigned char smem_raw[];
  uint16_t* Qs = reinterpret_cast<uint16_t*>(smem_raw);
  // Stage b (0 or 1) of K and V; computed, not a pointer array, which a run-time index would put
  // in local memory.
  auto Ks = [&](int b) { return Qs + (kBQ + b * kBK) * kLd; };
  auto Vs = [&](int b) { return Qs + (kBQ + (2 + b) * kBK) * kLd; };

  load_tile<D, kBQ, kLd, kThreads>(Qs, qg, ld_q, rows);
  load_tile<D, kBK, kLd, kThreads>(Ks(0), kg, ld_kv, min(kBK, kv_end));
  load_tile<D, kBK, kLd, kThreads>(Vs(0), vg, ld_kv, min(kBK, kv_end));
  cp_async_commit();

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, c = lane % 4;
  const int r0 = warp * 16 + g;                         // this thread's rows: r0 and r0 + 8
  const int lim[2] = {min(past + q0 + r0, kv_end - 1),  // last key each row may see
                      min(past + q0 + r0 + 8, kv_end - 1)};
  const int warp_last = past + q0 + warp * 16 + 15;  // the warp's last row's position
  const float slope = a.slopes ? a.slopes[h] : 0.f;

  float o[D / 8][4];
#pragma unroll
  for (int i = 0; i < D / 8; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};  // l: this thread's part of the row sum

  for (int t = 0; t < n_tiles; ++t) {
    if (t + 1 < n_tiles) {
      const int next = (t + 1) * kBK;
      load_tile<D, kBK, kLd, kThreads>(Ks((t + 1) & 1), kg + next * ld_kv, ld_kv, min(kBK, kv_end - next));
      load_tile<D, kBK, kLd, kThreads>(Vs((t + 1) & 1), vg + next * ld_kv, ld_kv, min(kBK, kv_end - next));
      cp_async_commit();
      cp_async_wait<1>();  // everything but the group just issued has landed
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    const int kv0 = t * kBK;
    if (kv0 <= warp_last) {  // else every key of the tile is in this warp's future: skip it
      const uint16_t* Kt = Ks(t & 1);
      const uint16_t* Vt = Vs(t & 1);
      float sc[kBK / 8][4];
#pragma unroll
      for (int n = 0; n < kBK / 8; ++n) sc[n][0] = sc[n][1] = sc[n][2] = sc[n][3] = 0.f;
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) {
        const uint16_t* qa = Qs + r0 * kLd + kk * 16 + 2 * c;
        const uint32_t af[4] = {lds32(qa), lds32(qa + 8 * kLd), lds32(qa + 8), lds32(qa + 8 * kLd + 8)};
#pragma unroll
        for (int n = 0; n < kBK / 8; ++n) {
          const uint16_t* kb = Kt + (n * 8 + g) * kLd + kk * 16 + 2 * c;
          mma16816<T>(sc[n], af, lds32(kb), lds32(kb + 8));
        }
      }
      // Mask, scale and ALiBi as the reference: dot * scale + slope * key.
      float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
      for (int n = 0; n < kBK / 8; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int j = kv0 + n * 8 + 2 * c + (e & 1);
          sc[n][e] = j <= lim[e >> 1] ? sc[n][e] * a.scale + slope * static_cast<float>(j) : -INFINITY;
          mx[e >> 1] = fmaxf(mx[e >> 1], sc[n][e]);
        }
      float base[2], corr[2];
#pragma unroll
      for (int i = 0; i < 2; ++i) {  // a row's 64 scores live in the 4 lanes of a quad
        mx[i] = fmaxf(mx[i], __shfl_xor_sync(kFull, mx[i], 1));
        mx[i] = fmaxf(mx[i], __shfl_xor_sync(kFull, mx[i], 2));
        const float m_new = fmaxf(m[i], mx[i]);
        base[i] = safe_base(m_new);
        corr[i] = expf(m[i] - base[i]);
        m[i] = m_new;
        l[i] *= corr[i];
      }
#pragma unroll
      for (int i = 0; i < D / 8; ++i) {
        o[i][0] *= corr[0];
        o[i][1] *= corr[0];
        o[i][2] *= corr[1];
        o[i][3] *= corr[1];
      }
#pragma unroll
      for (int kt = 0; kt < kBK / 16; ++kt) {
        uint32_t pa[4];  // P's A fragment for keys 16kt..16kt+15 from score tiles 2kt, 2kt + 1
#pragma unroll
        for (int hf = 0; hf < 2; ++hf) {
          float* p = sc[2 * kt + hf];
#pragma unroll
          for (int e = 0; e < 4; ++e) p[e] = expf(p[e] - base[e >> 1]);
          pa[2 * hf] = round_pack<T>(p[0], p[1]);
          pa[2 * hf + 1] = round_pack<T>(p[2], p[3]);
          l[0] += p[0] + p[1];
          l[1] += p[2] + p[3];
        }
#pragma unroll
        for (int dn = 0; dn < D / 8; ++dn) {
          const uint16_t* vb = Vt + (kt * 16 + 2 * c) * kLd + dn * 8 + g;
          const uint32_t b0 = static_cast<uint32_t>(vb[0]) | (static_cast<uint32_t>(vb[kLd]) << 16);
          const uint32_t b1 = static_cast<uint32_t>(vb[8 * kLd]) | (static_cast<uint32_t>(vb[9 * kLd]) << 16);
          mma16816<T>(o[dn], pa, b0, b1);
        }
      }
    }
    __syncthreads();  // the stage just read is the one the next iteration refills
  }

#pragma unroll
  for (int i = 0; i < 2; ++i) {
    l[i] += __shfl_xor_sync(kFull, l[i], 1);
    l[i] += __shfl_xor_sync(kFull, l[i], 2);
  }
  T* og = static_cast<T*>(a.out) + q_row0 * ld_q + static_cast<int64_t>(h) * D;
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int r = r0 + 8 * i;
    if (r >= rows) continue;
    const float inv_l = 1.f / l[i];
    T* orow = og + r * ld_q;
#pragma unroll
    for (int dn = 0; dn < D / 8; ++dn) {
      float x = o[dn][2 * i] * inv_l, y = o[dn][2 * i + 1] * inv_l;
      *reinterpret_cast<uint32_t*>(orow + dn * 8 + 2 * c) = round_pack<T>(x, y);
    }
  }
}

template <typename T, int D>
void launch_mma(cudaStream_t stream, const Args& a) {
  constexpr size_t smem = Tile<D>::kSmemBytes;
  // Above 48 KB a kernel must opt in to dynamic shared memory; once per instantiation and device
  // is enough, but the call is cheap and not worth a per-device cache.
  CUDA_CHECK(cudaFuncSetAttribute(prefill_mma_kernel<T, D>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  static_cast<int>(smem)));
  const dim3 grid(static_cast<unsigned>((a.seqs.max_q_len + kBQ - 1) / kBQ), static_cast<unsigned>(a.n_heads),
                  static_cast<unsigned>(a.seqs.num_seqs));
  prefill_mma_kernel<T, D><<<grid, kThreads, smem, stream>>>(a);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void prefill(cudaStream_t stream, const Args& a, DType act, DType cache) {
  // The tensor cores take equal 16-bit pairs with head_dim % 16 == 0. The SIMT kernel takes the
  // rest: F32 or mixed pairs at any head dim, and head dim 8 in every pair (no mma k-slice of 16
  // fits it; its rows are too short for the tensor cores to matter).
  if (act != cache || (act != DType::F16 && act != DType::BF16) || !mma_head_dim(a.head_dim)) {
    prefill_simt(stream, a, act, cache);
    return;
  }
  dispatch_head_dim(a.head_dim, [&](auto d) {
    constexpr int D = decltype(d)::value;
    if constexpr (mma_head_dim(D)) {  // not instantiated for the others, which never get here
      if (act == DType::F16)
        launch_mma<__half, D>(stream, a);
      else
        launch_mma<__nv_bfloat16, D>(stream, a);
    }
  });
}

}  // namespace tiergen::kernels::cuda::attn
