// attention on the GPU: the launcher behind ops.h's attention(). CPU reference:
// kernels/cpu/attention.cc. It checks the call and sends each sequence of the step to one of two
// paths, decided per sequence on the device (the host knows only the step's maxima):
//  - q_len == 1 (decode): attention_decode.cu, flash-decoding over the cache, split along the keys
//    (SIMT, or tensor cores when F16/BF16 query heads share kv heads and head_dim % 16 == 0);
//  - q_len > 1 (prefill, or a chunk of one): attention_prefill.cu (tensor cores, F16/BF16 with
//    head_dim % 16 == 0) or attention_prefill_simt.cu (f32 FMAs, for F32, mixed dtype pairs and
//    head_dim 8, which has no whole mma k-slice of 16).
// A mixed step launches both; each kernel's blocks for the other kind of sequence return at once.
#include <cstdint>
#include <limits>
#include <string>

#include "kernels/cuda/attention_impl.cuh"
#include "kernels/cuda/cuda_check.h"

namespace tiergen::kernels::cuda {

void attention(cudaStream_t stream, Workspace& ws, Tensor& out, const Tensor& q, const Tensor& k_cache,
               const Tensor& v_cache, int64_t capacity, const SeqMeta& seqs, const AttentionShape& shape) {
  static constexpr const char* op = "attention";
  check_device(op, "out", out);
  check_device(op, "q", q);
  check_device(op, "k cache", k_cache);
  check_device(op, "v cache", v_cache);
  const int Hq = shape.n_heads, Hkv = shape.n_kv_heads, D = shape.head_dim;
  if (Hq <= 0 || Hkv <= 0 || Hq % Hkv != 0 || D <= 0)
    throw InternalError("attention: bad head counts " + std::to_string(Hq) + "/" + std::to_string(Hkv) +
                        " or head_dim " + std::to_string(D));
  check_2d(op, "q", q, -1, static_cast<int64_t>(Hq) * D);
  check_2d(op, "out", out, q.dim(0), static_cast<int64_t>(Hq) * D);
  check_2d(op, "k cache", k_cache, -1, static_cast<int64_t>(Hkv) * D);
  check_2d(op, "v cache", v_cache, k_cache.dim(0), static_cast<int64_t>(Hkv) * D);
  if (capacity <= 0 || k_cache.dim(0) % capacity != 0)
    throw InternalError("attention: cache " + k_cache.describe() + " is not whole slots of capacity " +
                        std::to_string(capacity));
  if (seqs.num_seqs < 0 || seqs.max_q_len < 0 || seqs.max_q_len > seqs.max_kv_len || seqs.max_kv_len > capacity)
    throw InternalError("attention: step of " + std::to_string(seqs.num_seqs) + " sequences with max q_len " +
                        std::to_string(seqs.max_q_len) + " and max kv_len " + std::to_string(seqs.max_kv_len) +
                        " does not fit a cache of capacity " + std::to_string(capacity));
  if (seqs.num_seqs > 0 && (!seqs.q_begin || !seqs.q_len || !seqs.kv_len || !seqs.slot))
    throw InternalError("attention: a sequence array is null");
  if (q.dtype() != out.dtype() || !is_gpu_float(q.dtype()) || k_cache.dtype() != v_cache.dtype() ||
      !is_gpu_float(k_cache.dtype()))
    throw UnsupportedError(
        "attention: the CUDA backend needs q and out of one dtype and K and V of one dtype, "
        "each F32, F16 or BF16; got q " +
        q.describe() + ", out " + out.describe() + ", k " + k_cache.describe() + ", v " + v_cache.describe());
  if (!attn::supported_head_dim(D))
    throw UnsupportedError("attention: head_dim " + std::to_string(D) +
                           " is not supported on the CUDA backend (8, 16, 32, 64, 80, 96, 128, 256)");
  // The kernels read 16-byte pieces of rows; every head's row starts on a 16-byte boundary when the
  // tensors do, since it is D * dtype_size bytes with D a multiple of 8 (16 bytes at least in F16
  // and BF16 for D = 8, 32 in F32).
  for (const Tensor* t : {static_cast<const Tensor*>(&out), &q, &k_cache, &v_cache})
    if (reinterpret_cast<uintptr_t>(t->raw()) % 16 != 0)
      throw InternalError("attention: " + t->describe() + " does not start on a 16-byte boundary");
  if (seqs.num_seqs > 65535)
    throw UnsupportedError("attention: " + std::to_string(seqs.num_seqs) +
                           " sequences in one step exceed one launch's grid (65535)");
  if (seqs.num_seqs == 0 || seqs.max_q_len == 0 || q.dim(0) == 0) return;

  attn::Args a;
  a.out = out.raw();
  a.q = q.raw();
  a.k = k_cache.raw();
  a.v = v_cache.raw();
  a.capacity = capacity;
  a.seqs = seqs;
  a.n_heads = Hq;
  a.n_kv_heads = Hkv;
  a.head_dim = D;
  a.scale = shape.scale;
  a.slopes = shape.alibi_slopes;
  if (seqs.max_q_len > 1) attn::prefill(stream, a, q.dtype(), k_cache.dtype());
  attn::decode(stream, ws, a, q.dtype(), k_cache.dtype());
}

}  // namespace tiergen::kernels::cuda
