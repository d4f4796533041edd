// read_probe on the GPU: reads every byte of a tensor, as fast as the memory allows, to measure the
// read rate the roofline bound uses (runtime/generate/rates.cc). CPU counterpart: the CPU backend's
// read_probe. Each thread keeps four 16-byte loads in flight per iteration (grid-stride over the
// tensor's 16-byte words); the XOR of what it read is stored only when it equals a value the host
// passes, which it never does, so the loads cannot be optimised away and nothing is written.
#include <cstdint>

#include "runtime/core/error.h"

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/ops.h"

namespace tiergen::kernels::cuda {
namespace {

constexpr int kThreads = 512;
constexpr int kUnroll = 4;

__global__ void __launch_bounds__(kThreads)
    read_probe_kernel(const uint4* __restrict__ p, int64_t n, const uint8_t* __restrict__ tail, int64_t tail_n,
                      unsigned never, unsigned* sink) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads;
  int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  unsigned acc = 0;
  for (; i + (kUnroll - 1) * stride < n; i += kUnroll * stride) {
    uint4 v[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) v[u] = p[i + u * stride];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) acc ^= v[u].x ^ v[u].y ^ v[u].z ^ v[u].w;
  }
  for (; i < n; i += stride) {
    const uint4 v = p[i];
    acc ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  if (blockIdx.x == 0)
    for (int64_t t = threadIdx.x; t < tail_n; t += kThreads) acc ^= tail[t];
  if (acc == never) *sink = acc;
}

}  // namespace

void read_probe(cudaStream_t stream, const Tensor& x, unsigned* sink) {
  check_device("read_probe", "x", x);
  const auto* base = static_cast<const uint8_t*>(x.raw());
  if (reinterpret_cast<uintptr_t>(base) % 16 != 0)
    throw InternalError("read_probe: " + x.describe() + " is not 16-byte aligned");
  const size_t words = x.nbytes() / 16;
  // Enough blocks to fill every SM several times over; the grid-stride loop covers the rest.
  read_probe_kernel<<<sm_count() * 4, kThreads, 0, stream>>>(reinterpret_cast<const uint4*>(base),
                                                             static_cast<int64_t>(words), base + words * 16,
                                                             static_cast<int64_t>(x.nbytes() % 16), 0x9E3779B9u, sink);
  CUDA_CHECK_LAUNCH();
}

}  // namespace tiergen::kernels::cuda
