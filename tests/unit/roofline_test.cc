// The roofline bound (runtime/policy/roofline.h) against figures worked out by hand for OPT-6.7B
// and a Llama shape, and the rates it is computed from (runtime/generate/rates.h) on the CPU.
#include "runtime/policy/roofline.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>

#include "kernels/backend.h"
#include "runtime/core/error.h"
#include "runtime/generate/rates.h"
#include "tests/testutil/testutil.h"

namespace tiergen {
namespace {

TEST(Roofline, CountsOpt67bByHand) {
  const ModelSpec s = preset_model_spec("opt-6.7b");
  // 32 layers of q, k, v, o (4 x 4096^2) and fc1, fc2 (2 x 4096 x 16384), plus the LM head 50272 x 4096.
  const int64_t layers = 32LL * (4 * 4096 * 4096 + 2 * 4096 * 16384);
  EXPECT_EQ(gemm_params_per_token(s), layers + 50272LL * 4096);
  // K and V, 4096 wide, per layer, in f16.
  EXPECT_DOUBLE_EQ(kv_bytes_per_token(s, DType::F16), 2.0 * 32 * 4096 * 2);
  // Everything but the learned position table (2050 x 4096); the tied table counts once, as the head.
  EXPECT_DOUBLE_EQ(decode_weight_bytes(s, DType::F16), 2.0 * static_cast<double>(s.num_params() - 2050LL * 4096));

  const DeviceRates rates{1e15, 3e12};  // 1 PFLOP/s, 3 TB/s
  const RooflineBound b = roofline_bound(s, Workload{32, 512, 32, DType::F16, DType::F16}, rates);
  const double attention = 2.0 * 512 * 513 * 4096 * 32;  // per sequence, causal
  const double prefill = 32 * (2.0 * static_cast<double>(layers) * 512 + attention + 2.0 * 50272 * 4096);
  EXPECT_DOUBLE_EQ(b.prefill_flops, prefill);
  double decode = 0;
  for (int step = 1; step < 32; ++step)
    decode += decode_weight_bytes(s, DType::F16) + 32.0 * (512 + step) * 2 * 32 * 4096 * 2;
  EXPECT_DOUBLE_EQ(b.decode_bytes, decode);
  EXPECT_DOUBLE_EQ(b.prefill_seconds, prefill / 1e15);
  EXPECT_DOUBLE_EQ(b.decode_seconds, decode / 3e12);
  EXPECT_DOUBLE_EQ(b.total_throughput, 32.0 * 32 / (b.prefill_seconds + b.decode_seconds));
  EXPECT_DOUBLE_EQ(b.prefill_throughput, 32.0 * 512 / b.prefill_seconds);
  EXPECT_DOUBLE_EQ(b.decode_throughput, 32.0 * 31 / b.decode_seconds);
  // About 2,100 tokens/s on an H100-class device at batch 32: the figure the benchmarks quote.
  EXPECT_GT(b.total_throughput, 1500);
  EXPECT_LT(b.total_throughput, 3000);
}

// OPT-30B with 48 GB of its weights streamed over a 50 GB/s link and the KV cache in host memory
// read at 100 GB/s: each phase is bounded by its slowest engine.
TEST(Roofline, OffloadedWeightsAndAHostCacheBoundEachStep) {
  const ModelSpec s = preset_model_spec("opt-30b");
  const DeviceRates rates{7.5e14, 3e12, 5e10, 1e11};
  Workload w{64, 512, 32, DType::F16, DType::F16};
  w.streamed_weight_bytes = 48e9;
  w.cache_on_host = true;
  const RooflineBound b = roofline_bound(s, w, rates);
  const double link = 48e9 / 5e10;  // 0.96 s per pass over the layers
  const double per_token = kv_bytes_per_token(s, DType::F16);
  double decode = 0, device = 0;
  for (int step = 1; step < 32; ++step) {
    const double cache = 64.0 * (512 + step) * per_token;
    device += decode_weight_bytes(s, DType::F16);  // the cache is read on the host, not the GPU
    decode += std::max({decode_weight_bytes(s, DType::F16) / 3e12, link, cache / 1e11});
  }
  EXPECT_DOUBLE_EQ(b.decode_bytes, device);
  EXPECT_DOUBLE_EQ(b.decode_seconds, decode);
  EXPECT_DOUBLE_EQ(b.prefill_seconds, std::max(b.prefill_flops / 7.5e14, link));
  // 64 x 544 tokens of 1.4 MB: 48 GB read on the host per step, the slowest engine here.
  EXPECT_GT(decode, 31 * link);
  // Without the link's or the host's rate the bound cannot be had.
  EXPECT_THROW_WITH(roofline_bound(s, w, DeviceRates{7.5e14, 3e12, 0, 1e11}), InvalidArgumentError, "host link");
  EXPECT_THROW_WITH(roofline_bound(s, w, DeviceRates{7.5e14, 3e12, 5e10, 0}), InvalidArgumentError, "host's read");
}

// A pipeline stage's decode step per layer (OPT-30B: 12 x 7168^2 weights a layer, K and V 7168
// wide): the slowest of the device's reads, the streamed share over the link, the host's cache reads.
TEST(Roofline, DecodeStepCostPerLayer) {
  const ModelSpec s = preset_model_spec("opt-30b");
  const double layer = 12.0 * 7168 * 7168 * 2, cache = 64.0 * 544 * 2 * 7168 * 2;
  const DeviceRates rates{7.5e14, 3e12, 5e10, 1e11};
  // All on the device: weights and cache read there.
  StepCost c = decode_step_cost(s, 64, 544, DType::F16, DType::F16, 0.0, false, rates);
  EXPECT_NEAR(c.per_layer, (layer + cache) / 3e12, 1e-9);
  EXPECT_NEAR(c.head, 50272.0 * 7168 * 2 / 3e12, 1e-12);
  // 75% streamed, the cache on the host: the link (13.9 ms) is slower than the host (9.0 ms).
  c = decode_step_cost(s, 64, 544, DType::F16, DType::F16, 0.75, true, rates);
  EXPECT_NEAR(c.per_layer, 0.75 * layer / 5e10, 1e-9);
  // Twice the batch: the host's reads of the cache (18.0 ms) set the pace.
  c = decode_step_cost(s, 128, 544, DType::F16, DType::F16, 0.75, true, rates);
  EXPECT_NEAR(c.per_layer, 2 * cache / 1e11, 1e-9);
  EXPECT_THROW_WITH(decode_step_cost(s, 64, 544, DType::F16, DType::F16, 0.5, false, DeviceRates{1e12, 1e11}),
                    InvalidArgumentError, "rates");
}

// A pipeline of OPT-6.7B in two stages of 16 layers, the head on the second: each phase takes the
// slower stage's time; a stage without the head neither computes nor reads it.
TEST(Roofline, PipelineRunsAtItsSlowestStagesPace) {
  ModelSpec half = preset_model_spec("opt-6.7b");
  half.num_layers = 16;
  const Workload w{32, 512, 32, DType::F16, DType::F16};
  Workload first = w;
  first.head = false;
  const DeviceRates fast{1e15, 3e12}, slow{5e14, 1.5e12};
  const RooflineBound a = roofline_bound(half, first, fast), b = roofline_bound(half, w, slow);
  const double head = 50272.0 * 4096;
  EXPECT_DOUBLE_EQ(b.prefill_flops - a.prefill_flops, 32 * 2.0 * head);
  EXPECT_DOUBLE_EQ(b.decode_bytes - a.decode_bytes, 31 * head * 2);
  const RooflineBound p = pipeline_bound({a, b}, w);
  EXPECT_DOUBLE_EQ(p.prefill_seconds, b.prefill_seconds);  // the slow stage, with the head
  EXPECT_DOUBLE_EQ(p.decode_seconds, b.decode_seconds);
  EXPECT_DOUBLE_EQ(p.prefill_flops, a.prefill_flops + b.prefill_flops);
  EXPECT_DOUBLE_EQ(p.total_throughput, 32.0 * 32 / (b.prefill_seconds + b.decode_seconds));
  EXPECT_DOUBLE_EQ(p.decode_throughput, 32.0 * 31 / b.decode_seconds);
  // Equal stages on equal devices: about twice the one-device bound of the whole model.
  ModelSpec whole = preset_model_spec("opt-6.7b");
  const RooflineBound one = roofline_bound(whole, w, fast);
  const RooflineBound two = pipeline_bound({a, roofline_bound(half, w, fast)}, w);
  EXPECT_GT(two.decode_throughput, 1.8 * one.decode_throughput);
  EXPECT_LT(two.decode_throughput, 2.2 * one.decode_throughput);
  EXPECT_THROW_WITH(pipeline_bound({}, w), InvalidArgumentError, "without stages");
}

// OPT-30B with 29.6 GB of its weights on disk read at 2 GB/s: each pass over the layers takes the
// disk's 14.8 s, slower than the link and the device; without the disk's rate there is no bound.
TEST(Roofline, WeightsOnDiskBoundEachPassByTheDisk) {
  const ModelSpec s = preset_model_spec("opt-30b");
  DeviceRates rates{7.5e14, 3e12, 5e10, 1e11};
  rates.disk_read_bytes = 2e9;
  Workload w{8, 512, 8, DType::F16, DType::F16};
  w.streamed_weight_bytes = 44.4e9;  // host and disk shares cross the link
  w.disk_weight_bytes = 29.6e9;
  const RooflineBound b = roofline_bound(s, w, rates);
  EXPECT_DOUBLE_EQ(b.prefill_seconds, 29.6e9 / 2e9);
  EXPECT_DOUBLE_EQ(b.decode_seconds, 7 * 29.6e9 / 2e9);
  EXPECT_NEAR(b.total_throughput, 8.0 * 8 / (8 * 14.8), 1e-9);
  // A fast disk leaves the link as the slowest engine.
  rates.disk_read_bytes = 1e11;
  EXPECT_DOUBLE_EQ(roofline_bound(s, w, rates).prefill_seconds, std::max(b.prefill_flops / 7.5e14, 44.4e9 / 5e10));
  rates.disk_read_bytes = 0;
  EXPECT_THROW_WITH(roofline_bound(s, w, rates), InvalidArgumentError, "disk's read rate");
}

TEST(Roofline, GqaAndUntiedHeadCountOnce) {
  const ModelSpec s = preset_model_spec("llama-2-70b");  // 8 kv heads of 64, untied head, SwiGLU
  EXPECT_DOUBLE_EQ(kv_bytes_per_token(s, DType::F16), 2.0 * 80 * 8 * 128 * 2);
  // The input table is not read whole in decode; the separate LM head is.
  EXPECT_DOUBLE_EQ(decode_weight_bytes(s, DType::BF16),
                   2.0 * static_cast<double>(s.num_params() - s.vocab_size * s.hidden_size));
}

TEST(Roofline, OneTokenDecodesNothingAndBadRatesThrow) {
  const ModelSpec s = preset_model_spec("opt-125m");
  const RooflineBound b = roofline_bound(s, Workload{4, 16, 1, DType::F32, DType::F32}, DeviceRates{1e12, 1e11});
  EXPECT_EQ(b.decode_bytes, 0);
  EXPECT_EQ(b.decode_throughput, 0);
  EXPECT_GT(b.total_throughput, 0);
  EXPECT_THROW_WITH(roofline_bound(s, Workload{4, 16, 8}, DeviceRates{0, 1e11}), InvalidArgumentError, "rates");
  EXPECT_THROW_WITH(roofline_bound(s, Workload{4, 16, 8}, DeviceRates{1e12, NAN}), InvalidArgumentError, "rates");
  EXPECT_THROW_WITH(roofline_bound(s, Workload{0, 16, 8}, DeviceRates{1e12, 1e11}), InvalidArgumentError, "empty");
}

TEST(Rates, MeasuredOnTheCpuArePlausible) {
  auto be = kernels::make_cpu_backend();
  const DeviceRates r = measure_rates(*be, DType::F32, DType::F32);
  // Any CPU this runs on does more than 1 GFLOP/s and reads more than 1 GB/s, and none does 1 PFLOP/s
  // or reads 10 TB/s: a probe that timed nothing, or the wrong units, lands outside.
  EXPECT_GT(r.gemm_flops, 1e9);
  EXPECT_LT(r.gemm_flops, 1e15);
  EXPECT_GT(r.read_bytes, 1e9);
  EXPECT_LT(r.read_bytes, 1e13);
  EXPECT_EQ(r.disk_read_bytes, 0);  // no offload folder given
}

// The disk probe writes a file in the folder, reads it back, and removes it; a folder that is not
// there is an IoError naming it.
TEST(Rates, DiskReadProbeLeavesNothingBehind) {
  testing::TempDir dir;
  const double rate = measure_disk_read(dir.path().string(), 8 << 20, 1 << 20, 2);
  EXPECT_GT(rate, 1e6);   // any disk reads more than 1 MB/s
  EXPECT_LT(rate, 1e12);  // and none (nor the page cache) 1 TB/s
  EXPECT_TRUE(std::filesystem::is_empty(dir.path()));
  // Three readers at once over 5 blocks (an uneven share each), and fewer blocks than readers.
  for (const uint64_t bytes : {uint64_t{5} << 20, uint64_t{1} << 20}) {
    const double parallel = measure_disk_read(dir.path().string(), bytes, 1 << 20, 2, 3);
    EXPECT_GT(parallel, 1e6);
    EXPECT_LT(parallel, 1e12);
    EXPECT_TRUE(std::filesystem::is_empty(dir.path()));
  }
  EXPECT_THROW_WITH(measure_disk_read((dir / "missing").string(), 1 << 20, 1 << 20, 1), IoError, "missing");
}

}  // namespace
}  // namespace tiergen
