// Weights with a home on disk, streamed into compute buffers (stage/weight_stream.h): on every
// reference model, every placement (all in memory, all on disk, split within tensors) with overlap
// on and off gives the same greedy tokens as the run with every weight in memory, and the bytes on
// disk are the policy's share.
#include "stage/weight_stream.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "kernels/backend.h"
#include "runtime/core/error.h"
#include "runtime/generate/generator.h"
#include "stage/stage.h"
#include "tests/testutil/hf_reference.h"
#include "tests/testutil/testutil.h"

namespace tiergen {
namespace {

class WeightStreamTest : public ::testing::TestWithParam<std::string> {};

std::vector<std::vector<int32_t>> greedy_ids(const testing::HfReferenceModel& ref, const TierShares* shares,
                                             bool overlap, uint64_t* disk_bytes = nullptr,
                                             uint64_t* decoder_bytes = nullptr) {
  auto model = Model::load(ref.dir);
  if (decoder_bytes) {
    *decoder_bytes = 0;
    for (const auto& l : model->layers())
      if (l->decoder_index() >= 0) *decoder_bytes += l->weight_bytes();
  }
  auto be = kernels::make_cpu_backend();
  Stage stage(*model, *be);
  testing::TempDir parent;
  std::unique_ptr<io::OffloadDir> dir;
  std::unique_ptr<WeightStream> stream;
  if (shares) {
    dir = std::make_unique<io::OffloadDir>(parent.path().string());
    stream = std::make_unique<WeightStream>(*be, *model, 0, model->layers().size(), *shares, dir.get(), overlap);
    stage.set_weight_stream(stream.get());
    if (disk_bytes) *disk_bytes = stream->disk_bytes();
  }
  Generator gen(stage, nullptr);
  std::vector<std::vector<int32_t>> out;
  for (const Result& r : gen.generate(testing::greedy_requests(ref, testing::all_cases(ref))))
    out.push_back(r.output_ids);
  return out;
}

TEST_P(WeightStreamTest, EveryPlacementGivesTheInMemoryTokens) {
  const testing::HfReferenceModel ref = testing::load_hf_reference(GetParam());
  const auto expected = greedy_ids(ref, nullptr, false);
  ASSERT_FALSE(expected.empty());
  struct Case {
    TierShares shares;
    double disk_share;  // percent
  };
  for (const Case& c : {Case{{100, 0}, 0}, Case{{0, 0}, 100}, Case{{30, 20}, 50}, Case{{0, 37.5}, 62.5}})
    for (const bool overlap : {true, false}) {
      SCOPED_TRACE("weights on GPU/CPU " + std::to_string(c.shares.gpu) + "/" + std::to_string(c.shares.cpu) +
                   (overlap ? ", overlap" : ", no overlap"));
      uint64_t disk = 0, decoder = 0;
      EXPECT_EQ(greedy_ids(ref, &c.shares, overlap, &disk, &decoder), expected);
      // Each layer's cuts fall within half a row of their place: the total within a row per layer.
      EXPECT_NEAR(static_cast<double>(disk), static_cast<double>(decoder) * c.disk_share / 100.0,
                  0.02 * static_cast<double>(decoder) + 1.0);
    }
}

INSTANTIATE_TEST_SUITE_P(Models, WeightStreamTest, ::testing::ValuesIn(testing::hf_reference_models()),
                         [](const auto& info) { return testing::test_name(info.param); });

TEST(WeightStream, AReadFailureIsAnError) {
  const testing::HfReferenceModel ref = testing::load_hf_reference("opt-tiny");
  auto model = Model::load(ref.dir);
  auto be = kernels::make_cpu_backend();
  Stage stage(*model, *be);
  testing::TempDir parent;
  io::OffloadDir dir(parent.path().string());
  WeightStream stream(*be, *model, 0, model->layers().size(), TierShares{0, 0}, &dir, /*overlap=*/false);
  stage.set_weight_stream(&stream);
  // Someone truncates the offloaded weights under the running job: a short read, named.
  for (const auto& e : std::filesystem::directory_iterator(dir.path())) std::filesystem::resize_file(e.path(), 0);
  Generator gen(stage, nullptr);
  EXPECT_THROW_WITH(gen.generate(testing::greedy_requests(ref, {0})), IoError, "short read");
}

}  // namespace
}  // namespace tiergen
