// FlexGen's block schedule on the CPU (stage/gpu_batch.h, stage/kv_stream.h): a block cut into GPU
// batches and run layer by layer, with the KV cache at home in memory, on disk or split between
// them, and the weights in memory, on disk or split, with overlap on and off: every reference model
// gives the greedy tokens of the plain run (one batch, everything in memory).
#include <gtest/gtest.h>

#include <filesystem>

#include "kernels/backend.h"
#include "runtime/core/error.h"
#include "runtime/generate/generator.h"
#include "stage/gpu_batch.h"
#include "stage/kv_stream.h"
#include "stage/stage.h"
#include "stage/weight_stream.h"
#include "tests/testutil/hf_reference.h"
#include "tests/testutil/testutil.h"

namespace tiergen {
namespace {

// ---- split_block ----

kernels::StepPlan three_sequences() {
  kernels::StepPlan p;
  const std::vector<int32_t> a{5, 6, 7}, b{8}, c{9, 10};
  p.logit_rows.push_back(static_cast<int32_t>(p.add_sequence(a, 0, 0) + 2));
  p.logit_rows.push_back(static_cast<int32_t>(p.add_sequence(b, 4, 2)));
  p.logit_rows.push_back(static_cast<int32_t>(p.add_sequence(c, 0, 3) + 1));
  return p;
}

TEST(SplitBlock, BatchesHoldTheirSlotsSequencesRenumbered) {
  const std::vector<GpuBatch> bs = split_block(three_sequences(), 2, 4);
  ASSERT_EQ(bs.size(), 2u);
  EXPECT_EQ(bs[0].first_slot, 0);
  EXPECT_EQ(bs[0].num_slots, 2);
  EXPECT_EQ(bs[0].ctx.plan.token_ids, (std::vector<int32_t>{5, 6, 7}));
  EXPECT_EQ(bs[0].ctx.plan.slot, (std::vector<int32_t>{0}));
  EXPECT_EQ(bs[0].ctx.plan.logit_rows, (std::vector<int32_t>{2}));
  EXPECT_EQ(bs[0].logit_index, (std::vector<size_t>{0}));
  // Slots 2 and 3 become 0 and 1; rows restart at 0; positions are kept.
  EXPECT_EQ(bs[1].first_slot, 2);
  EXPECT_EQ(bs[1].ctx.plan.token_ids, (std::vector<int32_t>{8, 9, 10}));
  EXPECT_EQ(bs[1].ctx.plan.positions, (std::vector<int32_t>{4, 0, 1}));
  EXPECT_EQ(bs[1].ctx.plan.slot, (std::vector<int32_t>{0, 1}));
  EXPECT_EQ(bs[1].ctx.plan.row_slot, (std::vector<int32_t>{0, 1, 1}));
  EXPECT_EQ(bs[1].ctx.plan.q_begin, (std::vector<int32_t>{0, 1}));
  EXPECT_EQ(bs[1].ctx.plan.kv_len, (std::vector<int32_t>{5, 2}));
  EXPECT_EQ(bs[1].ctx.plan.logit_rows, (std::vector<int32_t>{0, 2}));
  EXPECT_EQ(bs[1].logit_index, (std::vector<size_t>{1, 2}));
}

TEST(SplitBlock, BatchesWithoutSequencesAreLeftOutAndTheLastMayBeShort) {
  const std::vector<GpuBatch> bs = split_block(three_sequences(), 3, 5);
  ASSERT_EQ(bs.size(), 2u);
  EXPECT_EQ(bs[1].first_slot, 3);
  EXPECT_EQ(bs[1].num_slots, 2);
  EXPECT_EQ(bs[1].ctx.plan.slot, (std::vector<int32_t>{0}));
  // One batch per slot: slot 1 has no sequence.
  EXPECT_EQ(split_block(three_sequences(), 1, 4).size(), 3u);
}

TEST(SplitBlock, ASlotOutsideTheCacheIsAnError) {
  EXPECT_THROW_WITH(split_block(three_sequences(), 2, 3), InternalError, "slot 3");
}

// ---- the schedule on every reference model ----

struct Placement {
  std::optional<TierShares> weights;  // none: all in memory, no stream
  std::optional<TierShares> cache;    // none: the stage's own cache
  bool overlap = true;
  int64_t gpu_batch = 0, num_batches = 1;  // 0: one batch per block of 64
  std::string describe() const {
    auto shares = [](const std::optional<TierShares>& s) {
      return s ? std::to_string(static_cast<int>(s->gpu + s->cpu)) + "% in memory" : std::string("plain");
    };
    return "weights " + shares(weights) + ", KV cache " + shares(cache) + (overlap ? ", overlap" : "") + ", " +
           std::to_string(gpu_batch) + " x " + std::to_string(num_batches);
  }
};

std::vector<std::vector<int32_t>> greedy_ids(const testing::HfReferenceModel& ref, const Placement& p,
                                             uint64_t* kv_disk = nullptr) {
  auto model = Model::load(ref.dir);
  auto be = kernels::make_cpu_backend();
  Stage stage(*model, *be);
  testing::TempDir parent;
  std::unique_ptr<io::OffloadDir> dir;
  if (p.weights || p.cache) dir = std::make_unique<io::OffloadDir>(parent.path().string());
  std::unique_ptr<WeightStream> weights;
  std::unique_ptr<KvStream> cache;
  if (p.weights) {
    weights = std::make_unique<WeightStream>(*be, *model, 0, model->layers().size(), *p.weights, dir.get(), p.overlap);
    stage.set_weight_stream(weights.get());
  }
  if (p.cache) {
    cache = std::make_unique<KvStream>(stage.kv_widths(), stage.dtypes().kv_cache, *p.cache, *dir, p.overlap);
    stage.set_kv_stream(cache.get());
  }
  const int64_t block = p.gpu_batch > 0 ? p.gpu_batch * p.num_batches : 64;
  Generator gen(stage, nullptr, block, p.gpu_batch);
  std::vector<std::vector<int32_t>> out;
  for (const Result& r : gen.generate(testing::greedy_requests(ref, testing::all_cases(ref))))
    out.push_back(r.output_ids);
  if (kv_disk && cache) *kv_disk = cache->disk_bytes();
  return out;
}

class BlockScheduleTest : public ::testing::TestWithParam<std::string> {};

TEST_P(BlockScheduleTest, EveryPlacementAndBatchShapeGivesThePlainTokens) {
  const testing::HfReferenceModel ref = testing::load_hf_reference(GetParam());
  const auto expected = greedy_ids(ref, Placement{});
  ASSERT_FALSE(expected.empty());
  const std::vector<std::optional<TierShares>> caches{std::nullopt, TierShares{100, 0}, TierShares{0, 0},
                                                      TierShares{20, 17.5}};
  const std::vector<std::optional<TierShares>> weights{std::nullopt, TierShares{0, 0}, TierShares{30, 20}};
  const std::vector<std::pair<int64_t, int64_t>> shapes{{0, 1}, {1, 3}, {2, 2}, {3, 1}};
  for (const auto& cache : caches)
    for (const auto& w : weights)
      for (const auto& [g, n] : shapes)
        for (const bool overlap : {true, false}) {
          if (!cache && !w && !overlap) continue;  // overlap changes nothing without a stream
          const Placement p{w, cache, overlap, g, n};
          SCOPED_TRACE(p.describe());
          EXPECT_EQ(greedy_ids(ref, p), expected);
        }
}

INSTANTIATE_TEST_SUITE_P(Models, BlockScheduleTest, ::testing::ValuesIn(testing::hf_reference_models()),
                         [](const auto& info) { return testing::test_name(info.param); });

// The KV cache on another backend (as a GPU run keeps it in host memory with --cpu-cache-compute):
// new keys and values cross to it, prefills attend on the compute backend, decode steps where the
// cache is; with GPU batches too, every reference model gives the plain tokens.
TEST_P(BlockScheduleTest, ACacheOnAnotherBackendGivesThePlainTokens) {
  const testing::HfReferenceModel ref = testing::load_hf_reference(GetParam());
  const auto expected = greedy_ids(ref, Placement{});
  auto model = Model::load(ref.dir);
  auto be = kernels::make_cpu_backend(), host = kernels::make_cpu_backend();
  for (const auto& [g, n] : std::vector<std::pair<int64_t, int64_t>>{{0, 1}, {2, 2}}) {
    Stage stage(*model, *be);
    stage.set_cache_backend(host.get());
    Generator gen(stage, nullptr, g > 0 ? g * n : 64, g);
    std::vector<std::vector<int32_t>> got;
    for (const Result& r : gen.generate(testing::greedy_requests(ref, testing::all_cases(ref))))
      got.push_back(r.output_ids);
    EXPECT_EQ(got, expected) << g << " x " << n;
  }
}

TEST(KvStream, TheDiskShareIsThePolicys) {
  const testing::HfReferenceModel ref = testing::load_hf_reference("llama-tiny-gqa");
  uint64_t all_disk = 0, split = 0;
  greedy_ids(ref, Placement{std::nullopt, TierShares{0, 0}, true, 2, 2}, &all_disk);
  greedy_ids(ref, Placement{std::nullopt, TierShares{25, 0}, true, 2, 2}, &split);
  ASSERT_GT(all_disk, 0u);
  // A share of rows, cut at the nearest row: within one row per layer of 75%.
  EXPECT_NEAR(static_cast<double>(split), 0.75 * static_cast<double>(all_disk), 0.01 * static_cast<double>(all_disk));
}

TEST(KvStream, AReadFailureIsAnError) {
  const testing::HfReferenceModel ref = testing::load_hf_reference("opt-tiny");
  auto model = Model::load(ref.dir);
  auto be = kernels::make_cpu_backend();
  Stage stage(*model, *be);
  testing::TempDir parent;
  io::OffloadDir dir(parent.path().string());
  for (const bool overlap : {false, true}) {
    KvStream cache(stage.kv_widths(), stage.dtypes().kv_cache, TierShares{0, 0}, dir, overlap);
    stage.set_kv_stream(&cache);
    Generator gen(stage, nullptr, 4, 2);
    const std::vector<Request> reqs = testing::greedy_requests(ref, {0, 1});
    gen.on_token = [&](size_t, const Result&) {
      // Someone truncates the offloaded cache under the running job: a short read, named.
      for (const auto& e : std::filesystem::directory_iterator(dir.path())) std::filesystem::resize_file(e.path(), 0);
    };
    EXPECT_THROW_WITH(gen.generate(reqs), IoError, "short read");
    stage.set_kv_stream(nullptr);
  }
}

}  // namespace
}  // namespace tiergen
