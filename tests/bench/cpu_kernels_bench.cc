// Google Benchmark micro-benchmarks of the CPU kernels that dominate generation: the linear layer
// (both paths, bf16/f16 weights) and decode-step attention. Run: build/tests/tiergen_microbench.
// Bytes and FLOPs are reported so results read as a share of memory bandwidth / peak.
#include <benchmark/benchmark.h>

#include "kernels/backend.h"
#include "kernels/cpu/ops.h"

namespace tiergen {
namespace {

Tensor filled(Shape shape, DType dtype, float v) {
  Tensor t = Tensor::empty(std::move(shape), dtype);
  for (int64_t i = 0; i < t.numel(); ++i)
    convert_from_f32(static_cast<char*>(t.raw()) + i * dtype_size(dtype), dtype, &v, 1);
  return t;
}

// args: M, N, K, dtype (0 f32, 1 f16, 2 bf16)
void BM_Linear(benchmark::State& state) {
  const int64_t M = state.range(0), N = state.range(1), K = state.range(2);
  const DType wt = state.range(3) == 0 ? DType::F32 : state.range(3) == 1 ? DType::F16 : DType::BF16;
  auto be = kernels::make_cpu_backend();
  Tensor x = filled({M, K}, DType::F32, 0.01f), w = filled({N, K}, wt, 0.02f), out = Tensor::empty({M, N});
  for (auto _ : state) {
    be->linear(out, x, w, nullptr);
    benchmark::DoNotOptimize(out.raw());
  }
  state.counters["GFLOP/s"] =
      benchmark::Counter(2.0 * M * N * K, benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
  state.counters["weight GB/s"] = benchmark::Counter(
      static_cast<double>(w.nbytes()), benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
}
BENCHMARK(BM_Linear)
    ->ArgsProduct({{1, 4, 8, 9, 16, 64, 512}, {4096}, {4096}, {1, 2}})
    ->Args({512, 4096, 4096, 0})  // f32 weights: OpenBLAS sgemm alone, the ceiling of the panel path
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// Decode attention: B sequences, one query each, over L cached tokens, H heads of 128 (32: Llama-2-7b;
// 56: OPT-30B), over an f32 cache (CPU runs) or an f16 one (a GPU run's cache in host memory).
void BM_DecodeAttention(benchmark::State& state) {
  const int64_t B = state.range(0), L = state.range(1), H = state.range(2), D = 128;
  const DType dt = state.range(3) ? DType::F16 : DType::F32;
  auto be = kernels::make_cpu_backend();
  Tensor q = filled({B, H * D}, DType::F32, 0.01f), out = Tensor::empty({B, H * D});
  std::vector<kernels::AttentionSeq> seqs;
  for (int64_t b = 0; b < B; ++b) {
    kernels::AttentionSeq s{b, 1, L, Tensor::empty({L, H * D}, dt), Tensor::empty({L, H * D}, dt)};
    kernels::convert_on_host(s.k, filled({L, H * D}, DType::F32, 0.01f));
    kernels::convert_on_host(s.v, filled({L, H * D}, DType::F32, 0.01f));
    seqs.push_back(s);
  }
  kernels::AttentionParams p{static_cast<int>(H), static_cast<int>(H), static_cast<int>(D), 0.088f, nullptr};
  for (auto _ : state) {
    kernels::cpu::attention(out, q, seqs, p);
    benchmark::DoNotOptimize(out.raw());
  }
  state.counters["KV GB/s"] =
      benchmark::Counter(static_cast<double>(2 * B * L * H * D * dtype_size(dt)),
                         benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
}
BENCHMARK(BM_DecodeAttention)
    ->ArgNames({"B", "L", "H", "f16"})
    ->Args({1, 512, 32, 0})
    ->Args({16, 512, 32, 0})
    ->Args({2, 64, 56, 1})    // in the CPU caches: the kernel's own speed, not the memory's
    ->Args({32, 544, 56, 1})  // OPT-30B, a GPU batch of 32 with --cpu-cache-compute
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

}  // namespace
}  // namespace tiergen
