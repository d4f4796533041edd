// Pointwise ops on the GPU: add_, activation_, silu_mul_ (CPU reference: kernels/cpu/elementwise.cc)
// and cast (reference: the host conversions of runtime/core/dtype.h, round to nearest even).
// Each element is widened to f32, computed with the reference's formula in f32, and rounded once to
// the output's dtype. The transcendental functions are CUDA's full-precision erff, tanhf and expf
// (at most 2 ulp, CUDA Math API), never the __expf-style intrinsics, since the reference calls the
// exact library functions; tests/gpu/cuda_elementwise_test.cc derives each op's tolerance from that.
#include <algorithm>
#include <string>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/dtype.cuh"
#include "kernels/cuda/ops.h"
#include "kernels/cuda/vec.cuh"

namespace tiergen::kernels::cuda {
namespace {

// The functions, as kernels/cpu/elementwise.cc writes them (same constants, same association).
struct AddOp {
  static constexpr int kArity = 2;
  __device__ float operator()(float a, float b) const { return a + b; }
};
struct ReluOp {
  static constexpr int kArity = 1;
  __device__ float operator()(float a, float) const { return a > 0.f ? a : 0.f; }  // NaN -> 0, as the CPU
};
struct GeluOp {  // exact: 0.5 x (1 + erf(x / sqrt 2))
  static constexpr int kArity = 1;
  __device__ float operator()(float a, float) const { return 0.5f * a * (1.0f + erff(a * 0.70710678118654752f)); }
};
struct GeluTanhOp {  // BLOOM's constants, as transformers writes them
  static constexpr int kArity = 1;
  __device__ float operator()(float a, float) const {
    return a * 0.5f * (1.0f + tanhf(0.79788456f * a * (1.0f + 0.044715f * a * a)));
  }
};
struct SiluOp {
  static constexpr int kArity = 1;
  __device__ float operator()(float a, float) const { return a / (1.0f + expf(-a)); }
};
struct SiluMulOp {
  static constexpr int kArity = 2;
  __device__ float operator()(float g, float u) const { return g / (1.0f + expf(-g)) * u; }
};
struct CastOp {
  static constexpr int kArity = 1;
  __device__ float operator()(float a, float) const { return a; }
};

// out[i] = f(a[i], b[i]) for i < n (b unread for unary f), grid-stride. The first `packs` * V
// elements move as packs; the fewer than V left (all n when the launcher chose V = 1 for unaligned
// pointers) go one by one. Element i is read and written by one thread in one iteration, so out
// may alias a or b exactly (the in-place ops).
template <int V, typename F, typename To, typename Ta, typename Tb>
__global__ void map_kernel(To* out, const Ta* a, const Tb* b, int64_t packs, int64_t n, F f) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t first = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  for (int64_t p = first; p < packs; p += stride) {
    float fa[V], fb[V] = {};
    load_pack<V>(a + p * V, fa);
    if constexpr (F::kArity == 2) load_pack<V>(b + p * V, fb);
#pragma unroll
    for (int i = 0; i < V; ++i) fa[i] = f(fa[i], fb[i]);
    store_pack<V>(out + p * V, fa);
  }
  for (int64_t i = packs * V + first; i < n; i += stride) {
    float fb = 0.f;
    if constexpr (F::kArity == 2) fb = load_f32(b[i]);
    out[i] = store_as<To>(f(load_f32(a[i]), fb));
  }
}

// Queues out = f(a, b) over n elements (b null for unary f).
template <typename F, typename To, typename Ta, typename Tb>
void map(cudaStream_t stream, To* out, const Ta* a, const Tb* b, int64_t n, F f) {
  if (n == 0) return;
  constexpr int kThreads = 256;
  constexpr int V = pack_width<To, Ta, Tb>();
  const bool packed = pack_aligned<V>(out) && pack_aligned<V>(a) && (b == nullptr || pack_aligned<V>(b));
  const int64_t packs = packed ? n / V : 0;
  // Enough blocks to give every thread one pack (or element), capped: the grid-stride loop does
  // the rest. 4096 blocks of 256 are several waves on any current GPU.
  const int64_t items = packed ? std::max<int64_t>(packs, n - packs * V) : n;
  const auto blocks = static_cast<unsigned>(std::clamp<int64_t>((items + kThreads - 1) / kThreads, 1, 4096));
  if (packed)
    map_kernel<V, F><<<blocks, kThreads, 0, stream>>>(out, a, b, packs, n, f);
  else
    map_kernel<1, F><<<blocks, kThreads, 0, stream>>>(out, a, b, n, n, f);
  CUDA_CHECK_LAUNCH();
}

void check_same_shape(const char* op, const char* what, const Tensor& t, const Tensor& like, const char* like_name) {
  if (t.shape() != like.shape())
    throw InternalError(std::string(op) + ": " + what + " is " + t.describe() + ", expected the shape of " + like_name +
                        " " + like.describe());
}

// out = f(x, y) elementwise with x, y of one shape and any float dtypes; out may be x itself.
template <typename F>
void binary(cudaStream_t stream, const char* op, Tensor& out, const Tensor& x, const Tensor& y, F f) {
  dispatch_float(x.dtype(), op, [&](auto tx) {
    dispatch_float(y.dtype(), op, [&](auto ty) {
      using Tx = typename decltype(tx)::type;
      using Ty = typename decltype(ty)::type;
      map(stream, out.data<Tx>(), x.data<Tx>(), y.data<Ty>(), x.numel(), f);
    });
  });
}

// Checks for the in-place binary ops: x += y, gate = silu(gate) * up.
void check_inplace_pair(const char* op, const char* xn, const Tensor& x, const char* yn, const Tensor& y) {
  check_device(op, xn, x);
  check_device(op, yn, y);
  check_same_shape(op, yn, y, x, xn);
  // y may be x itself (vec.cuh, overlaps).
  if (overlaps(x, y) && (x.raw() != y.raw() || x.dtype() != y.dtype()))
    throw InternalError(std::string(op) + ": " + yn + " " + y.describe() + " partly overlaps " + xn + " " +
                        x.describe());
}

}  // namespace

void add_(cudaStream_t stream, Tensor& x, const Tensor& y) {
  check_inplace_pair("add_", "x", x, "y", y);
  binary(stream, "add_", x, x, y, AddOp{});
}

void silu_mul_(cudaStream_t stream, Tensor& gate, const Tensor& up) {
  check_inplace_pair("silu_mul_", "gate", gate, "up", up);
  binary(stream, "silu_mul_", gate, gate, up, SiluMulOp{});
}

void activation_(cudaStream_t stream, Tensor& x, Act act) {
  static constexpr const char* op = "activation_";
  check_device(op, "x", x);
  dispatch_float(x.dtype(), op, [&](auto tx) {
    using T = typename decltype(tx)::type;
    T* p = x.data<T>();
    const int64_t n = x.numel();
    switch (act) {
      case Act::Relu:
        return map(stream, p, p, static_cast<const T*>(nullptr), n, ReluOp{});
      case Act::Gelu:
        return map(stream, p, p, static_cast<const T*>(nullptr), n, GeluOp{});
      case Act::GeluTanh:
        return map(stream, p, p, static_cast<const T*>(nullptr), n, GeluTanhOp{});
      case Act::Silu:
        return map(stream, p, p, static_cast<const T*>(nullptr), n, SiluOp{});
    }
    throw InternalError("activation_: unknown activation " + std::to_string(static_cast<int>(act)));
  });
}

void cast(cudaStream_t stream, Tensor& out, const Tensor& x) {
  static constexpr const char* op = "cast";
  check_device(op, "out", out);
  check_device(op, "x", x);
  check_numel(op, "out", out, x.numel());
  if (x.dtype() == out.dtype()) {  // a copy; also the only cast that may run in place
    if (out.raw() != x.raw() && x.nbytes() > 0) {
      if (overlaps(out, x)) throw InternalError("cast: out " + out.describe() + " partly overlaps x " + x.describe());
      CUDA_CHECK(cudaMemcpyAsync(out.raw(), x.raw(), x.nbytes(), cudaMemcpyDeviceToDevice, stream));
    }
    return;
  }
  // Elements of different sizes at the same index live at different addresses: any overlap races.
  if (overlaps(out, x)) throw InternalError("cast: out " + out.describe() + " overlaps x " + x.describe());
  dispatch_float(x.dtype(), op, [&](auto tx) {
    dispatch_float(out.dtype(), op, [&](auto to) {
      using Tx = typename decltype(tx)::type;
      using To = typename decltype(to)::type;
      map(stream, out.data<To>(), x.data<Tx>(), static_cast<const Tx*>(nullptr), x.numel(), CastOp{});
    });
  });
}

}  // namespace tiergen::kernels::cuda
