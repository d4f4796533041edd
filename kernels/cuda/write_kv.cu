// write_kv on the GPU: this step's keys and values into their cache rows. CPU reference: the CPU
// backend's write_kv (kernels/cpu/cpu_backend.cc, cpu::write_rows per row). Row t of k / v (T, C)
// goes to cache row slot_of_row[t] * capacity + pos_of_row[t], converted to the cache's dtype
// through f32: widening to f32 is exact, so each element is rounded once (to nearest even), the
// same bits as the host's convert_from_f32.
#include <limits>
#include <string>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/dtype.cuh"
#include "kernels/cuda/ops.h"

namespace tiergen::kernels::cuda {
namespace {

constexpr int kThreads = 128;

// One block per step row; its threads stride over the C columns of K and V (coalesced on both
// sides). Rows of a step go to distinct cache rows, so no two blocks write the same bytes.
template <typename Ti, typename Tc>
__global__ void __launch_bounds__(kThreads)
    write_kv_kernel(Tc* __restrict__ k_cache, Tc* __restrict__ v_cache, int64_t capacity, const Ti* __restrict__ k,
                    const Ti* __restrict__ v, int64_t C, const int32_t* __restrict__ slot_of_row,
                    const int32_t* __restrict__ pos_of_row) {
  const int64_t t = blockIdx.x;
  const int64_t dst = (static_cast<int64_t>(slot_of_row[t]) * capacity + pos_of_row[t]) * C;
  const int64_t src = t * C;
  for (int64_t c = threadIdx.x; c < C; c += kThreads) {
    k_cache[dst + c] = store_as<Tc>(load_f32(k[src + c]));
    v_cache[dst + c] = store_as<Tc>(load_f32(v[src + c]));
  }
}

}  // namespace

void write_kv(cudaStream_t stream, Tensor& k_cache, Tensor& v_cache, int64_t capacity, const Tensor& k, const Tensor& v,
              const int32_t* slot_of_row, const int32_t* pos_of_row) {
  static constexpr const char* op = "write_kv";
  check_device(op, "k cache", k_cache);
  check_device(op, "v cache", v_cache);
  check_device(op, "k", k);
  check_device(op, "v", v);
  check_2d(op, "k cache", k_cache, -1, -1);
  const int64_t C = k_cache.dim(1);
  check_2d(op, "v cache", v_cache, k_cache.dim(0), C);
  check_2d(op, "k", k, -1, C);
  const int64_t T = k.dim(0);
  check_2d(op, "v", v, T, C);
  if (capacity <= 0 || k_cache.dim(0) % capacity != 0)
    throw InternalError("write_kv: cache " + k_cache.describe() + " is not whole slots of capacity " +
                        std::to_string(capacity));
  if (k_cache.dtype() != v_cache.dtype() || k.dtype() != v.dtype())
    throw UnsupportedError("write_kv: K and V must share a dtype, in the cache and in the step; got " +
                           k_cache.describe() + " / " + v_cache.describe() + " and " + k.describe() + " / " +
                           v.describe());
  if (T == 0 || C == 0) return;
  if (!slot_of_row || !pos_of_row) throw InternalError("write_kv: slot_of_row or pos_of_row is null");
  if (T > std::numeric_limits<int>::max())
    throw UnsupportedError("write_kv: " + k.describe() + " is too large for one launch");
  dispatch_float(k.dtype(), op, [&](auto ti) {
    dispatch_float(k_cache.dtype(), op, [&](auto tc) {
      using Ti = typename decltype(ti)::type;
      using Tc = typename decltype(tc)::type;
      write_kv_kernel<Ti, Tc><<<static_cast<unsigned>(T), kThreads, 0, stream>>>(
          k_cache.data<Tc>(), v_cache.data<Tc>(), capacity, k.data<Ti>(), v.data<Ti>(), C, slot_of_row, pos_of_row);
      CUDA_CHECK_LAUNCH();
    });
  });
}

}  // namespace tiergen::kernels::cuda
