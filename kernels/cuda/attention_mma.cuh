// Tensor-core building blocks shared by the prefill (attention_prefill.cu) and GQA decode
// (attention_decode_mma.cu) attention kernels: cp.async tile copies into shared memory, the
// mma.sync m16n8k16 instruction with f32 accumulation, and the rounding of P to 16 bits.
//
// mma.sync.m16n8k16 fragments (PTX ISA, "Matrix fragments for mma.m16n8k16"), with g = lane / 4,
// c = lane % 4: A (16 x 16, row-major) regs a0..a3 = rows (g, g + 8, g, g + 8), columns
// (2c, 2c + 1) + (0, 0, 8, 8); B (16 x 8, "col": B[k][n] with k contiguous) regs b0, b1 = k rows
// (2c, 2c + 1) + (0, 8), column g; C/D (16 x 8) f32 d0..d3 = (row g, cols 2c, 2c + 1), (row g + 8,
// cols 2c, 2c + 1). So a score tile's C fragments of key columns 16t..16t+15 are, re-packed as
// 16-bit pairs, the A fragment of P for keys 16t..16t+15: no shared-memory round trip for P.
// K row-major [key][dim] is already B for Q K^T; V's B for P V pairs two keys of one dim, gathered
// with two 16-bit shared loads. Shared rows are padded by 16 bytes (kLd = D + 8), which keeps
// those, and every 32-bit fragment load, free of bank conflicts.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

namespace tiergen::kernels::cuda::attn {

__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, int src_bytes) {
  const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  // src_bytes 0 fills the 16 bytes with zeros and reads nothing. The L2 is asked to fetch whole
  // 256-byte segments: the tiles read rows of D * 2 >= 128 contiguous bytes for D >= 64. For the
  // short rows of D = 16 and 32 (32 and 64 bytes) it is only a prefetch hint, at worst bringing
  // in the neighbouring heads' bytes of the same cache or q rows, which other blocks read.
  asm volatile("cp.async.cg.shared.global.L2::256B [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(gmem), "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

// d += a (16 x 16) * b (16 x 8), f32 accumulation.
template <typename T>
__device__ __forceinline__ void mma16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  if constexpr (std::is_same_v<T, __half>) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
}

// Rounds (x, y) to T in place and returns them packed, x in the low half.
template <typename T>
__device__ __forceinline__ uint32_t round_pack(float& x, float& y) {
  if constexpr (std::is_same_v<T, __half>) {
    const __half2 h = __floats2half2_rn(x, y);
    x = __low2float(h);
    y = __high2float(h);
    return *reinterpret_cast<const uint32_t*>(&h);
  } else {
    const __nv_bfloat162 h = __floats2bfloat162_rn(x, y);
    x = __low2float(h);
    y = __high2float(h);
    return *reinterpret_cast<const uint32_t*>(&h);
  }
}

__device__ __forceinline__ uint32_t lds32(const uint16_t* p) { return *reinterpret_cast<const uint32_t*>(p); }

// Copies rows [0, n_rows) of a (rows x D) tile from global (row stride ld elements) into shared
// (row stride kLd); rows n_rows.. of the tile are zero-filled without reading global memory.
// A block of kThreads threads issues the copies. D and kLd multiples of 8 keep every piece on a
// 16-byte boundary at both ends (the tensor-core kernels use D % 16 == 0, kLd = D + 8).
template <int D, int kRows, int kLd, int kThreads>
__device__ __forceinline__ void load_tile(uint16_t* sm, const uint16_t* g, int64_t ld, int n_rows) {
  static_assert(D % 8 == 0 && kLd % 8 == 0, "rows of whole 16-byte pieces, on 16-byte boundaries");
  constexpr int kPerRow = D / 8;  // 16-byte pieces
  for (int i = threadIdx.x; i < kRows * kPerRow; i += kThreads) {
    const int r = i / kPerRow, c = (i % kPerRow) * 8;
    const bool ok = r < n_rows;
    cp_async16(sm + r * kLd + c, ok ? g + r * ld + c : g, ok ? 16 : 0);
  }
}

}  // namespace tiergen::kernels::cuda::attn
