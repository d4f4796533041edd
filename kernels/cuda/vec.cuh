// Memory access for the bandwidth-bound kernels (norms, pointwise ops, row copies): packed loads and
// stores, V consecutive elements moved as one aligned access (16 bytes for the widest type a kernel
// touches), widened to f32 on load and rounded to nearest even on store through dtype.cuh; and the
// launchers' host-side checks for them (alignment, overlap).
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/cuda/dtype.cuh"
#include "runtime/core/tensor.h"

namespace tiergen::kernels::cuda {

inline constexpr int kPackBytes = 16;  // the widest single global load (LDG.128)

template <typename T, int V>
struct alignas(sizeof(T) * V) Pack {
  T v[V];
};

// Elements per pack for a kernel touching the element types Ts...: 16 bytes of the widest.
template <typename... Ts>
inline constexpr int pack_width() {
  size_t widest = 1;
  ((widest = sizeof(Ts) > widest ? sizeof(Ts) : widest), ...);
  return static_cast<int>(kPackBytes / widest);
}

// f[0..V) = p[0..V) widened to f32; p is aligned to the pack.
template <int V, typename T>
__device__ __forceinline__ void load_pack(const T* p, float (&f)[V]) {
  const Pack<T, V> k = *reinterpret_cast<const Pack<T, V>*>(p);
#pragma unroll
  for (int i = 0; i < V; ++i) f[i] = load_f32(k.v[i]);
}

// p[0..V) = f[0..V) rounded to T; p is aligned to the pack.
template <int V, typename T>
__device__ __forceinline__ void store_pack(T* p, const float (&f)[V]) {
  Pack<T, V> k;
#pragma unroll
  for (int i = 0; i < V; ++i) k.v[i] = store_as<T>(f[i]);
  *reinterpret_cast<Pack<T, V>*>(p) = k;
}

// v rounded to T and widened back: the value a T tensor holds after storing v.
template <typename T>
__device__ __forceinline__ float round_to(float v) {
  return load_f32(store_as<T>(v));
}

// Host side: `p` may be read as packs of V elements of T.
template <int V, typename T>
inline bool pack_aligned(const T* p) {
  return reinterpret_cast<uintptr_t>(p) % (sizeof(T) * V) == 0;
}

// Host side: the byte ranges of two tensors intersect. The pointwise and row launchers allow an
// output to alias an input only exactly (same address, same dtype): each element is then read and
// written by one thread, while any other overlap lets one thread overwrite what another has yet to
// read.
inline bool overlaps(const Tensor& a, const Tensor& b) {
  const char *a0 = static_cast<const char*>(a.raw()), *b0 = static_cast<const char*>(b.raw());
  return a.nbytes() > 0 && b.nbytes() > 0 && a0 < b0 + b.nbytes() && b0 < a0 + a.nbytes();
}

}  // namespace tiergen::kernels::cuda
