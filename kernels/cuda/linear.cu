// linear on the GPU through cuBLAS / cuBLASLt. CPU reference: kernels/cpu/gemm.cc (linear).
//
// Layout: tensors are row-major, cuBLAS is column-major. The bytes of a row-major (R, C) matrix
// are the column-major (C, R) matrix, its transpose, with leading dimension C. So
//   w's bytes  = column-major (K, N) = w^T, lda K      -> op T gives w   (N, K)
//   x's bytes  = column-major (K, M) = x^T, ldb K      -> op N gives x^T (K, M)
//   out's bytes = column-major (N, M) = out^T, ldc N
// and the row-major out (M, N) = x · w^T is the column-major out^T (N, M) = w · x^T:
// cublasGemmEx(T, N, m = N, n = M, k = K). No data is transposed.
//
// Every GEMM goes through cublasLtMatmul where cuBLASLt takes the combination (cublasGemmEx
// otherwise), with an epilogue: DEFAULT, BIAS, RELU or RELU_BIAS. The matmul descriptor, layouts
// and algorithm are cached per shape, dtypes, epilogue and alignments. Large shapes (the engine's:
// 32 x 4096 x 4096 and up) time the heuristic's first eight algorithms on the first call and keep
// the fastest, per power-of-two bucket of M, so a ragged batch's new M reuses its bucket's choice.
// Every candidate reduces split-K partial sums in f32 (REDUCTION_SCHEME_COMPUTE_TYPE, never in
// place in a 16-bit output), so the choice changes speed only.
//
// Bias: added to the f32 accumulator, then rounded once to out's dtype, as on the CPU.
//  - out F16 or F32: the BIAS epilogue adds the bias (one per row of the column-major out^T, i.e.
//    per output column n) to the f32 accumulator in the f32 scale type and rounds once when it
//    stores D. tests/gpu/cuda_conformance_test.cc checks the single rounding, near cancellation too.
//  - out BF16 (its bias epilogue rounds before the add, see gemm_lt), or where cuBLASLt has no
//    algorithm for the combination (e.g. a 16-bit bias with an f32 out): out F32: the GEMM writes
//    out, a small kernel adds the bias in place; out F16/BF16: the GEMM writes an f32 scratch (row
//    chunks of at most kChunkBytes, in the backend's grow-only Workspace), the kernel adds the bias
//    and rounds into out.
//  - no bias: the GEMM writes out directly and its epilogue rounds once (checked by the test).
// ReLU (linear_act): the RELU / RELU_BIAS epilogue applies it to the f32 sum before the rounding
// (ReLU and rounding commute: both are monotone and fix 0); on the fallback paths the elementwise
// ReLU runs after the GEMM.
// Accumulation (linear_accumulate, the residual add after a projection): beta = 1 with out as both
// C and D, one pass over out instead of a GEMM and an add_. Its kernels may round the product to
// out's dtype before adding C, as a GEMM then add_ does (tests/gpu/cuda_conformance_test.cc's
// error model allows for it); it is never timed (each timed call would add to out again) and takes
// the algorithm timed for the same GEMM without accumulation where one was.
// Not cuBLAS's own epilogue with beta = 1 over a bias pre-broadcast into out: on the H100 its
// tensor-core kernels with a 16-bit C round the product to 16 bits before adding C (several ulps
// off near cancellation; tests/gpu/cuda_conformance_test.cc caught it).
#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <unordered_map>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/dtype.cuh"
#include "kernels/cuda/ops.h"

namespace tiergen::kernels::cuda {
namespace {

constexpr size_t kChunkBytes = size_t{32} << 20;  // f32 scratch per GEMM when out is 16-bit

// out (M, N)[m, n] = round_to_out(acc[m, n] + bias[n]), acc f32 (M, N) or null for zero.
// out may alias acc (out F32): each element is read then written by the same thread.
// Grid-stride over M·N elements.
template <typename Tb, typename To>
__global__ void add_bias_kernel(To* out, const float* acc, const Tb* __restrict__ bias, int64_t M, int64_t N) {
  const int64_t total = M * N;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    out[i] = store_as<To>((acc ? acc[i] : 0.f) + load_f32(bias[i % N]));
}

cudaDataType_t cuda_type(DType t) {
  switch (t) {
    case DType::F32:
      return CUDA_R_32F;
    case DType::F16:
      return CUDA_R_16F;
    case DType::BF16:
      return CUDA_R_16BF;
    default:
      throw InternalError(std::string("linear: no cuBLAS type for ") + dtype_name(t));
  }
}

// out (M, N) of `out_type` = x (M, K) · w (N, K)^T, f32 accumulation, beta = 0 (out not read).
void gemm(cublasHandle_t cublas, void* out, cudaDataType_t out_type, const void* x, const void* w,
          cudaDataType_t in_type, int64_t M, int64_t N, int64_t K) {
  const float alpha = 1.0f, beta = 0.0f;  // f32: the scale type CUBLAS_COMPUTE_32F requires
  const int m = static_cast<int>(N), n = static_cast<int>(M), k = static_cast<int>(K);
  CUBLAS_CHECK(cublasGemmEx(cublas, CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, &alpha, w, in_type, k, x, in_type, k, &beta, out,
                            out_type, m, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

// ---- cuBLASLt with the bias epilogue ----

constexpr size_t kLtWorkspaceBytes = size_t{32} << 20;  // what cuBLAS itself reserves on Hopper

// The largest power of two, up to 256, that divides the address: what the algorithm may assume.
uint32_t alignment_of(const void* p) {
  const auto a = reinterpret_cast<uintptr_t>(p);
  uint32_t al = 256;
  while (al > 1 && a % al != 0) al /= 2;
  return al;
}

struct LtKey {
  int64_t M, N, K;
  int32_t device, in_type, out_type, bias_type, epilogue;
  uint32_t align_x, align_w, align_out, align_bias;
  bool accumulate;  // beta = 1: out += the product (out is C and D)
  int32_t batch;    // stacked projections (linear_stacked): w, out and bias strided, x shared
  bool operator==(const LtKey&) const = default;
};

struct LtKeyHash {
  size_t operator()(const LtKey& k) const {
    size_t h = 0;
    for (const uint64_t v : {static_cast<uint64_t>(k.M), static_cast<uint64_t>(k.N), static_cast<uint64_t>(k.K),
                             static_cast<uint64_t>(k.device) | static_cast<uint64_t>(k.epilogue) << 32 |
                                 static_cast<uint64_t>(k.accumulate) << 63 | static_cast<uint64_t>(k.batch) << 40,
                             static_cast<uint64_t>(k.in_type) | static_cast<uint64_t>(k.out_type) << 16 |
                                 static_cast<uint64_t>(k.bias_type) << 32,
                             static_cast<uint64_t>(k.align_x) | static_cast<uint64_t>(k.align_w) << 16 |
                                 static_cast<uint64_t>(k.align_out) << 32 | static_cast<uint64_t>(k.align_bias) << 48})
      h = h * 0x9E3779B97F4A7C15ull + std::hash<uint64_t>{}(v);
    return h;
  }
};

// One shape's matmul descriptor, layouts and chosen algorithm; `usable` false when cuBLASLt has no
// algorithm for it (the caller then takes the fallback path). Descriptors are host objects.
struct LtPlan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t w = nullptr, x = nullptr, out = nullptr;
  cublasLtMatmulAlgo_t algo{};
  size_t workspace = 0;
  bool usable = false;

  LtPlan() = default;
  LtPlan(const LtPlan&) = delete;
  LtPlan& operator=(const LtPlan&) = delete;
  ~LtPlan() {
    if (out) (void)cublasLtMatrixLayoutDestroy(out);
    if (x) (void)cublasLtMatrixLayoutDestroy(x);
    if (w) (void)cublasLtMatrixLayoutDestroy(w);
    if (desc) (void)cublasLtMatmulDescDestroy(desc);
  }
};

template <typename T>
void set_desc(cublasLtMatmulDesc_t desc, cublasLtMatmulDescAttributes_t attr, const T& v) {
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, attr, &v, sizeof(v)));
}
template <typename T>
void set_layout(cublasLtMatrixLayout_t layout, cublasLtMatrixLayoutAttribute_t attr, const T& v) {
  CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(layout, attr, &v, sizeof(v)));
}
template <typename T>
void set_pref(cublasLtMatmulPreference_t pref, cublasLtMatmulPreferenceAttributes_t attr, const T& v) {
  CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, attr, &v, sizeof(v)));
}

// One stream-ordered timing of `run` (a few calls, after one untimed): milliseconds per call.
template <typename Run>
float time_calls(cudaStream_t stream, Run run) {
  struct TimingEvent {
    cudaEvent_t e = nullptr;
    TimingEvent() { CUDA_CHECK(cudaEventCreate(&e)); }
    ~TimingEvent() { (void)cudaEventDestroy(e); }
    TimingEvent(const TimingEvent&) = delete;
    TimingEvent& operator=(const TimingEvent&) = delete;
  } start, stop;
  constexpr int kCalls = 3;
  run();
  CUDA_CHECK(cudaEventRecord(start.e, stream));
  for (int i = 0; i < kCalls; ++i) run();
  CUDA_CHECK(cudaEventRecord(stop.e, stream));
  CUDA_CHECK(cudaEventSynchronize(stop.e));
  float ms = 0;
  CUDA_CHECK(cudaEventElapsedTime(&ms, start.e, stop.e));
  return ms / kCalls;
}

// What a GEMM call needs besides its plan: the operands (the tuner times candidates on them; the
// call that follows overwrites out) and where to queue.
struct LtCall {
  cudaStream_t stream;
  cublasLtHandle_t lt;
  Workspace& ws;
  const void *x, *w, *bias;
  void* out;
  bool accumulate;  // out += product (beta = 1, C = D = out)
};

void run_lt(const LtCall& c, const LtPlan& p, const cublasLtMatmulAlgo_t& algo, size_t workspace_bytes) {
  void* workspace = workspace_bytes ? c.ws.get(workspace_bytes, c.stream) : nullptr;
  const float alpha = 1.0f, beta = c.accumulate ? 1.0f : 0.0f;
  CUBLAS_CHECK(cublasLtMatmul(c.lt, p.desc, &alpha, c.w, p.w, c.x, p.x, &beta, c.out, p.out, c.out, p.out, &algo,
                              workspace, workspace_bytes, c.stream));
}

// Shapes whose GEMM takes long enough that the heuristic's first choice is worth checking against
// its runners-up, timed (about 2^31 multiply-adds: a few microseconds at the H100's rate, while the
// engine's shapes, 32 x 4096 x 4096 and up, are where a better kernel pays on every step).
constexpr double kTuneMinMacs = 2.0 * (1 << 30);
constexpr int kTuneCandidates = 8;

std::unique_ptr<LtPlan> make_lt_plan(const LtKey& k, const LtCall& call) {
  auto p = std::make_unique<LtPlan>();
  // f32 accumulation and f32 alpha/beta/epilogue; for f32 inputs no TF32 (CUBLAS_COMPUTE_32F).
  CUBLAS_CHECK(cublasLtMatmulDescCreate(&p->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  set_desc(p->desc, CUBLASLT_MATMUL_DESC_TRANSA, CUBLAS_OP_T);
  set_desc(p->desc, CUBLASLT_MATMUL_DESC_TRANSB, CUBLAS_OP_N);
  set_desc(p->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, static_cast<cublasLtEpilogue_t>(k.epilogue));
  if (call.bias) {
    set_desc(p->desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, k.bias_type);
    set_desc(p->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, call.bias);  // the heuristic reads its alignment
  }
  const auto in = static_cast<cudaDataType_t>(k.in_type), out = static_cast<cudaDataType_t>(k.out_type);
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->w, in, static_cast<uint64_t>(k.K), static_cast<uint64_t>(k.N), k.K));
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->x, in, static_cast<uint64_t>(k.K), static_cast<uint64_t>(k.M), k.K));
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->out, out, static_cast<uint64_t>(k.N), static_cast<uint64_t>(k.M), k.N));
  if (k.batch > 1) {  // G GEMMs: w_g and out_g one after another, every one over the same x
    for (cublasLtMatrixLayout_t l : {p->w, p->x, p->out}) set_layout(l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, k.batch);
    set_layout(p->w, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, k.N * k.K);
    set_layout(p->x, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, int64_t{0});
    set_layout(p->out, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, k.M * k.N);
    if (call.bias) set_desc(p->desc, CUBLASLT_MATMUL_DESC_BIAS_BATCH_STRIDE, k.N);
  }

  cublasLtMatmulPreference_t pref = nullptr;
  CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  cublasLtMatmulHeuristicResult_t results[kTuneCandidates] = {};
  int found = 0;
  cublasStatus_t st = CUBLAS_STATUS_SUCCESS;
  try {
    set_pref(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, static_cast<uint64_t>(kLtWorkspaceBytes));
    // Split-K partial sums reduced in f32 (or no split): never in place in a 16-bit out.
    set_pref(pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK,
             static_cast<uint32_t>(CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE));
    set_pref(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, k.align_w);
    set_pref(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, k.align_x);
    set_pref(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, k.align_out);
    set_pref(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, k.align_out);
    const double macs =
        static_cast<double>(k.M) * static_cast<double>(k.N) * static_cast<double>(k.K) * static_cast<double>(k.batch);
    // Timing runs the candidates on the call's own operands: never where out is also an input, nor
    // where the call accumulates into out (each timed call would add to it again).
    const bool in_place =
        call.out == call.x || call.out == call.w || (call.bias && call.out == call.bias) || call.accumulate;
    const int want = macs >= kTuneMinMacs && !in_place ? kTuneCandidates : 1;
    st = cublasLtMatmulAlgoGetHeuristic(call.lt, p->desc, p->w, p->x, p->out, p->out, pref, want, results, &found);
  } catch (...) {
    (void)cublasLtMatmulPreferenceDestroy(pref);
    throw;
  }
  (void)cublasLtMatmulPreferenceDestroy(pref);
  if (st != CUBLAS_STATUS_SUCCESS && st != CUBLAS_STATUS_NOT_SUPPORTED && st != CUBLAS_STATUS_INVALID_VALUE)
    CUBLAS_CHECK(st);
  if (st != CUBLAS_STATUS_SUCCESS) return p;
  // A ragged batch brings a new M with every block: the algorithm timed for the nearest power of
  // two at or above M serves it when cuBLASLt confirms it supports this M (the timing is paid once
  // per bucket, not per block).
  // An accumulating GEMM (not timed, see above) takes the algorithm timed for the same GEMM
  // without accumulation where there is one: reading C changes the epilogue, not the main loop.
  LtKey bucket = k;
  bucket.M = std::bit_ceil(static_cast<uint64_t>(k.M));
  bucket.accumulate = false;
  thread_local std::unordered_map<LtKey, cublasLtMatmulAlgo_t, LtKeyHash> tuned;
  if (found > 1 || k.accumulate) {
    if (auto t = tuned.find(bucket); t != tuned.end()) {
      cublasLtMatmulHeuristicResult_t check{};
      if (cublasLtMatmulAlgoCheck(call.lt, p->desc, p->w, p->x, p->out, p->out, &t->second, &check) ==
              CUBLAS_STATUS_SUCCESS &&
          check.workspaceSize <= kLtWorkspaceBytes) {
        p->algo = t->second;
        p->workspace = check.workspaceSize;
        p->usable = true;
        return p;
      }
    }
  }
  // The heuristic's order, then by measured time where it offered several: the fastest wins. Every
  // candidate honours the preferences above (the f32 split-K reduction among them), so the choice
  // changes speed only, never the rounding the tests check.
  float best_ms = 0;
  for (int i = 0; i < found; ++i) {
    if (results[i].state != CUBLAS_STATUS_SUCCESS) continue;
    const float ms =
        found > 1 ? time_calls(call.stream, [&] { run_lt(call, *p, results[i].algo, results[i].workspaceSize); }) : 0.f;
    if (!p->usable || ms < best_ms) {
      p->algo = results[i].algo;
      p->workspace = results[i].workspaceSize;
      p->usable = true;
      best_ms = ms;
    }
  }
  if (found > 1 && p->usable) {
    if (tuned.size() >= 4096) tuned.clear();
    tuned[bucket] = p->algo;
  }
  return p;
}

// out (M, N) = x (M, K) · w (N, K)^T (+ bias (N) when given), ReLU'd when `relu`, in one
// cublasLtMatmul; false (nothing queued) when cuBLASLt has no algorithm for this combination. A
// cublasHandle_t is a valid cublasLtHandle_t (cuBLAS documents the cast); the stream and the
// workspace are passed per call.
bool gemm_lt(cudaStream_t stream, cublasHandle_t cublas, Workspace& ws, Tensor& out, const Tensor& x, const Tensor& w,
             const Tensor* bias, bool relu, bool accumulate, int64_t M, int64_t N, int64_t K, int32_t batch = 1) {
  // Not a bias with a BF16 out: on the H100 (cuBLAS 13.0) the kernels it picked for the test's
  // shapes with M >= 17 round the product to bf16 before their epilogue adds the bias, several bf16
  // ulps off near cancellation (tests/gpu/cuda_conformance_test.cc caught it, as it did for beta = 1
  // above). F16 and F32 outs pass the same tests; a BF16 out with a bias takes the f32 scratch below.
  if (bias && out.dtype() == DType::BF16) return false;
  // Plans are per thread: the bias pointer is set on the cached descriptor at each call. Ragged
  // batches bring new row counts M; past kMaxPlans shapes the cache starts over.
  constexpr size_t kMaxPlans = 4096;
  thread_local std::unordered_map<LtKey, std::unique_ptr<LtPlan>, LtKeyHash> plans;
  int device = 0;
  CUDA_CHECK(cudaGetDevice(&device));  // an algorithm is chosen for one device's architecture
  const cublasLtEpilogue_t epilogue = bias ? (relu ? CUBLASLT_EPILOGUE_RELU_BIAS : CUBLASLT_EPILOGUE_BIAS)
                                           : (relu ? CUBLASLT_EPILOGUE_RELU : CUBLASLT_EPILOGUE_DEFAULT);
  const LtKey key{M,
                  N,
                  K,
                  device,
                  static_cast<int32_t>(cuda_type(x.dtype())),
                  static_cast<int32_t>(cuda_type(out.dtype())),
                  bias ? static_cast<int32_t>(cuda_type(bias->dtype())) : -1,
                  static_cast<int32_t>(epilogue),
                  alignment_of(x.raw()),
                  alignment_of(w.raw()),
                  alignment_of(out.raw()),
                  bias ? alignment_of(bias->raw()) : 0,
                  accumulate,
                  batch};
  const LtCall call{stream,    reinterpret_cast<cublasLtHandle_t>(cublas),
                    ws,        x.raw(),
                    w.raw(),   bias ? bias->raw() : nullptr,
                    out.raw(), accumulate};
  auto it = plans.find(key);
  if (it == plans.end()) {
    if (plans.size() >= kMaxPlans) plans.clear();
    it = plans.emplace(key, make_lt_plan(key, call)).first;
  }
  LtPlan& p = *it->second;
  if (!p.usable) return false;
  if (bias) set_desc(p.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, bias->raw());
  run_lt(call, p, p.algo, p.workspace);
  return true;
}

// out (M, N) = acc (M, N) + bias (N), rounded to out's dtype; acc null means zero.
void add_bias(cudaStream_t stream, void* out, DType out_type, const float* acc, const Tensor& bias, int64_t M,
              int64_t N) {
  constexpr int kThreads = 256;
  // Enough blocks to cover the output, capped: the grid-stride loop does the rest.
  const int64_t blocks = std::min<int64_t>((M * N + kThreads - 1) / kThreads, 4096);
  dispatch_float(bias.dtype(), "linear", [&](auto tb) {
    dispatch_float(out_type, "linear", [&](auto to) {
      using Tb = typename decltype(tb)::type;
      using To = typename decltype(to)::type;
      add_bias_kernel<Tb, To>
          <<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(static_cast<To*>(out), acc, bias.data<Tb>(), M, N);
      CUDA_CHECK_LAUNCH();
    });
  });
}

// out = x · w^T + bias on the first path that takes the combination (see the top of the file).
void linear_bias(cudaStream_t stream, cublasHandle_t cublas, Workspace& ws, Tensor& out, const Tensor& x,
                 const Tensor& w, const Tensor* bias, int64_t M, int64_t N, int64_t K) {
  const cudaDataType_t in_type = cuda_type(x.dtype()), out_type = cuda_type(out.dtype());
  if (K == 0) {  // an empty sum: out is the bias, or zero (all-zero bits are 0.0 in every float type)
    if (bias)
      add_bias(stream, out.raw(), out.dtype(), nullptr, *bias, M, N);
    else
      CUDA_CHECK(cudaMemsetAsync(out.raw(), 0, out.nbytes(), stream));
    return;
  }
  if (gemm_lt(stream, cublas, ws, out, x, w, bias, /*relu=*/false, /*accumulate=*/false, M, N, K)) {
    return;
  } else if (!bias) {
    gemm(cublas, out.raw(), out_type, x.raw(), w.raw(), in_type, M, N, K);
  } else if (out.dtype() == DType::F32) {
    gemm(cublas, out.raw(), out_type, x.raw(), w.raw(), in_type, M, N, K);
    add_bias(stream, out.raw(), out.dtype(), out.data<float>(), *bias, M, N);
  } else {
    const int64_t row_bytes = N * static_cast<int64_t>(sizeof(float));
    const int64_t rows = std::clamp<int64_t>(static_cast<int64_t>(kChunkBytes) / row_bytes, 1, M);
    float* acc = static_cast<float*>(ws.get(static_cast<size_t>(rows * row_bytes), stream));
    const size_t x_row = static_cast<size_t>(K) * dtype_size(x.dtype());
    const size_t out_row = static_cast<size_t>(N) * dtype_size(out.dtype());
    for (int64_t r0 = 0; r0 < M; r0 += rows) {
      const int64_t mc = std::min(rows, M - r0);
      gemm(cublas, acc, CUDA_R_32F, static_cast<const char*>(x.raw()) + r0 * x_row, w.raw(), in_type, mc, N, K);
      add_bias(stream, static_cast<char*>(out.raw()) + r0 * out_row, out.dtype(), acc, *bias, mc, N);
    }
  }
}

// The checks both entry points share: devices, shapes, dtypes, sizes. Returns (M, N, K).
std::array<int64_t, 3> check_linear(const char* op, const Tensor& out, const Tensor& x, const Tensor& w,
                                    const Tensor* bias) {
  check_device(op, "out", out);
  check_device(op, "x", x);
  check_device(op, "w", w);
  const auto [M, N, K] = check_linear_shapes(op, out, x, w, bias);
  if (bias) {
    check_device(op, "bias", *bias);
    if (!is_gpu_float(bias->dtype()))
      throw UnsupportedError(std::string(op) + ": bias dtype " + dtype_name(bias->dtype()) +
                             " is not supported on the CUDA backend");
  }
  // F32 x and w run as a plain f32 GEMM (CUBLAS_COMPUTE_32F without TF32: the float32 runs that must
  // match the CPU reference token for token).
  if (!is_gpu_float(x.dtype()) || w.dtype() != x.dtype() || (out.dtype() != x.dtype() && out.dtype() != DType::F32))
    throw UnsupportedError(std::string(op) +
                           ": the CUDA backend needs x and w of one dtype (F16, BF16 or F32) and out of their dtype "
                           "or F32; got x " +
                           x.describe() + ", w " + w.describe() + ", out " + out.describe());
  constexpr int64_t kIntMax = std::numeric_limits<int>::max();
  if (M > kIntMax || N > kIntMax || K > kIntMax)
    throw UnsupportedError(std::string(op) + ": dimensions beyond 2^31 - 1 (M=" + std::to_string(M) +
                           ", N=" + std::to_string(N) + ", K=" + std::to_string(K) + ")");
  return {M, N, K};
}

}  // namespace

void linear(cudaStream_t stream, cublasHandle_t cublas, Workspace& ws, Tensor& out, const Tensor& x, const Tensor& w,
            const Tensor* bias, bool relu) {
  const auto [M, N, K] = check_linear("linear", out, x, w, bias);
  if (M == 0 || N == 0) return;
  if (relu && K > 0 && gemm_lt(stream, cublas, ws, out, x, w, bias, /*relu=*/true, /*accumulate=*/false, M, N, K))
    return;
  linear_bias(stream, cublas, ws, out, x, w, bias, M, N, K);
  if (relu) activation_(stream, out, Act::Relu);
}

bool linear_stacked(cudaStream_t stream, cublasHandle_t cublas, Workspace& ws, Tensor& out, const Tensor& x,
                    const Tensor& w, const Tensor* bias) {
  static constexpr const char* op = "linear_stacked";
  if (out.rank() != 3 || out.dim(0) < 1 || w.rank() != 2 || w.dim(0) != out.dim(0) * out.dim(2) ||
      (bias && bias->numel() != w.dim(0)))
    throw InternalError(std::string(op) + ": out (G, M, N), w (G * N, K), bias (G * N); got out " + out.describe() +
                        ", w " + w.describe() + (bias ? ", bias " + bias->describe() : std::string()));
  const int64_t G = out.dim(0), N = out.dim(2);
  Tensor out0 = out.slice_rows(0, 1).reshape({out.dim(1), N});
  const Tensor bias0 = bias ? bias->slice_rows(0, N) : Tensor();
  const auto [M, N_, K] = check_linear(op, out0, x, w.slice_rows(0, N), bias ? &bias0 : nullptr);
  if (M == 0 || N == 0) return true;
  return G <= std::numeric_limits<int32_t>::max() && K > 0 &&
         gemm_lt(stream, cublas, ws, out, x, w, bias, /*relu=*/false, /*accumulate=*/false, M, N, K,
                 static_cast<int32_t>(G));
}

bool linear_accumulate(cudaStream_t stream, cublasHandle_t cublas, Workspace& ws, Tensor& out, const Tensor& x,
                       const Tensor& w, const Tensor* bias) {
  const auto [M, N, K] = check_linear("linear_add_", out, x, w, bias);
  if (M == 0 || N == 0) return true;
  if (K == 0) return false;
  return gemm_lt(stream, cublas, ws, out, x, w, bias, /*relu=*/false, /*accumulate=*/true, M, N, K);
}

}  // namespace tiergen::kernels::cuda
