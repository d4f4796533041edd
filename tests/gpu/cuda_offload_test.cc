// Weights streamed to the GPU (stage/weight_stream.h) on every reference model: resident, in pinned
// host memory, on disk, split between all three within tensors, with overlap on and off, one batch
// per block or GPU batches run layer by layer (stage/gpu_batch.h), give the greedy tokens of the
// plain GPU run with every weight uploaded, bit for bit (the same GEMMs over the same bytes), in
// float16; and in float32 those tokens are the Hugging Face reference's. Placement happens as the
// model loads, layer by layer. Skips where no GPU is visible.
#include <gtest/gtest.h>

#include <iostream>
#include <optional>

#include "kernels/backend.h"
#include "runtime/engine/model.h"
#include "runtime/generate/generator.h"
#include "stage/stage.h"
#include "stage/weight_stream.h"
#include "tests/testutil/hf_reference.h"
#include "tests/testutil/testutil.h"

namespace tiergen {
namespace {

struct Offload {
  std::optional<TierShares> weights;  // none: every weight uploaded (Model::place)
  bool overlap = true;
  int64_t gpu_batch = 0, num_batches = 1;  // 0: one batch per block of 64
  bool cache_on_host = false;              // --cpu-cache-compute
  bool pin = true;                         // --pin-weight
};

std::vector<std::vector<int32_t>> greedy_ids(kernels::Backend& gpu, const testing::HfReferenceModel& ref, DType dtype,
                                             const Offload& o, uint64_t* host_bytes = nullptr) {
  testing::TempDir parent;
  io::OffloadDir dir(parent.path().string());
  std::unique_ptr<WeightStream> stream;
  std::unique_ptr<Model> model;
  if (o.weights) {
    stream = std::make_unique<WeightStream>(gpu, dtype, *o.weights, &dir, o.overlap);
    stream->pin_host_weights(o.pin);
    model = Model::load(ref.dir, [&](size_t i, Layer& l) { stream->adopt(i, l); });
    stream->finish();
    if (host_bytes) *host_bytes = stream->host_bytes() + stream->disk_bytes();
  } else {
    model = Model::load(ref.dir);
    model->place(gpu, dtype);
  }
  Stage stage(*model, gpu, StageDtypes{dtype, dtype});
  stage.set_weight_stream(stream.get());
  const auto host = kernels::make_cpu_backend();
  if (o.cache_on_host) stage.set_cache_backend(host.get());
  const int64_t block = o.gpu_batch > 0 ? o.gpu_batch * o.num_batches : 64;
  Generator gen(stage, nullptr, block, o.gpu_batch);
  std::vector<std::vector<int32_t>> out;
  for (const Result& r : gen.generate(testing::greedy_requests(ref, testing::all_cases(ref))))
    out.push_back(r.output_ids);
  return out;
}

class CudaOffload : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (!kernels::cuda_available()) GTEST_SKIP() << "no CUDA device is visible (or this build has no CUDA backend)";
    ref_ = testing::load_hf_reference(GetParam());
    gpu_ = kernels::make_cuda_backend(0);
  }
  testing::HfReferenceModel ref_;
  std::unique_ptr<kernels::Backend> gpu_;
};

TEST_P(CudaOffload, EveryWeightPlacementGivesThePlainTokens) {
  const auto plain = greedy_ids(*gpu_, ref_, DType::F16, Offload{});
  ASSERT_FALSE(plain.empty());
  const std::vector<TierShares> placements{{0, 100}, {30, 40}, {0, 0}, {50, 50}, {10, 0}};
  for (const TierShares& w : placements)
    for (const bool overlap : {true, false})
      for (const auto& [g, n] : std::vector<std::pair<int64_t, int64_t>>{{0, 1}, {2, 2}, {1, 3}}) {
        SCOPED_TRACE("weights " + std::to_string(w.gpu) + "/" + std::to_string(w.cpu) + "/" + std::to_string(w.disk()) +
                     (overlap ? ", overlap, " : ", ") + std::to_string(g) + " x " + std::to_string(n));
        uint64_t away = 0;
        EXPECT_EQ(greedy_ids(*gpu_, ref_, DType::F16, Offload{w, overlap, g, n}, &away), plain);
        EXPECT_GT(away, 0u);
      }
}

// --pin-weight 0: the host share in pageable memory, copied through the driver's staging.
TEST_P(CudaOffload, PageableHostWeightsGiveThePlainTokens) {
  const auto plain = greedy_ids(*gpu_, ref_, DType::F16, Offload{});
  Offload o{TierShares{20, 60}, true, 2, 2};
  o.pin = false;
  EXPECT_EQ(greedy_ids(*gpu_, ref_, DType::F16, o), plain);
}

TEST_P(CudaOffload, Float32StreamedWeightsGiveTheReferenceTokens) {
  const auto got = greedy_ids(*gpu_, ref_, DType::F32, Offload{TierShares{20, 50}, true, 2, 2});
  ASSERT_EQ(got.size(), ref_.cases.size());
  for (size_t i = 0; i < got.size(); ++i) EXPECT_EQ(got[i], ref_.cases[i].greedy) << "prompt " << i;
}

// The KV cache in host memory, decode attention on the CPU (--cpu-cache-compute), weights streamed:
// float32 gives the reference's tokens; float16 the plain run's wherever the reference is not a
// near-tie (the CPU attends in f32 over the f16 cache, the GPU in f16 with f32 sums).
TEST_P(CudaOffload, CpuCacheComputeGivesTheReferenceTokens) {
  for (const auto& [g, n] : std::vector<std::pair<int64_t, int64_t>>{{0, 1}, {2, 2}}) {
    const auto got = greedy_ids(*gpu_, ref_, DType::F32, Offload{TierShares{20, 80}, true, g, n, true});
    ASSERT_EQ(got.size(), ref_.cases.size());
    for (size_t i = 0; i < got.size(); ++i) EXPECT_EQ(got[i], ref_.cases[i].greedy) << "prompt " << i << ", " << g;
  }
  const auto half = greedy_ids(*gpu_, ref_, DType::F16, Offload{TierShares{0, 100}, true, 2, 2, true});
  const auto plain = greedy_ids(*gpu_, ref_, DType::F16, Offload{});
  size_t same = 0;
  for (size_t i = 0; i < half.size(); ++i) same += half[i] == plain[i];
  std::cout << "[ offload  ] " << GetParam() << " f16 --cpu-cache-compute: " << same << " of " << half.size()
            << " prompts give the plain run's tokens\n";
  EXPECT_GE(2 * same, half.size());
}

INSTANTIATE_TEST_SUITE_P(Models, CudaOffload, ::testing::ValuesIn(testing::hf_reference_models()),
                         [](const auto& info) { return testing::test_name(info.param); });

}  // namespace
}  // namespace tiergen
