#include "runtime/generate/sampler.h"

#include <cmath>
#include <map>

#include "runtime/core/error.h"
#include "tests/testutil/testutil.h"

namespace tiergen {
namespace {

int32_t pick(std::vector<float> logits, const SamplingParams& p, std::vector<int32_t> ctx = {}, uint64_t seed = 0) {
  Rng rng(seed);
  return sample_next(logits, ctx, p, rng);
}

TEST(Sampler, GreedyIsArgmaxFirstOnTies) {
  SamplingParams p;
  EXPECT_EQ(pick({0.1f, 3.0f, -1.0f, 3.0f}, p), 1);
}

TEST(Sampler, RepetitionPenaltyAsTransformers) {
  // Positive logits are divided, negative multiplied: token 1 (seen) falls below token 2.
  SamplingParams p;
  p.repetition_penalty = 2.0;
  EXPECT_EQ(pick({0.0f, 3.0f, 2.0f}, p, {1}), 2);
  // A negative seen logit gets more negative: 0 stays the argmax.
  EXPECT_EQ(pick({-0.5f, -0.6f, -3.0f}, p, {2}), 0);
}

TEST(Sampler, TopKOneAndTinyTopPAreGreedy) {
  SamplingParams p;
  p.do_sample = true;
  p.top_k = 1;
  for (uint64_t s = 0; s < 20; ++s) EXPECT_EQ(pick({1.0f, 2.5f, 2.4f, 0.0f}, p, {}, s), 1);
  p.top_k = 0;
  p.top_p = 1e-6;
  for (uint64_t s = 0; s < 20; ++s) EXPECT_EQ(pick({1.0f, 2.5f, 2.4f, 0.0f}, p, {}, s), 1);
}

TEST(Sampler, TopKLimitsTheSupport) {
  SamplingParams p;
  p.do_sample = true;
  p.top_k = 2;
  std::map<int32_t, int> seen;
  for (uint64_t s = 0; s < 400; ++s) ++seen[pick({1.0f, 2.0f, 2.0f, 1.9f}, p, {}, s)];
  EXPECT_EQ(seen.size(), 2u);
  EXPECT_GT(seen[1], 100);
  EXPECT_GT(seen[2], 100);
}

TEST(Sampler, FrequenciesFollowTheDistribution) {
  // logits log(0.5), log(0.3), log(0.2): 4000 draws land within 4 sigma of the expected counts.
  SamplingParams p;
  p.do_sample = true;
  std::vector<int> count(3);
  for (uint64_t s = 0; s < 4000; ++s) ++count[pick({std::log(0.5f), std::log(0.3f), std::log(0.2f)}, p, {}, s)];
  const double expect[] = {2000, 1200, 800};
  for (int i = 0; i < 3; ++i) EXPECT_NEAR(count[i], expect[i], 4 * std::sqrt(expect[i])) << i;
}

TEST(Sampler, SameSeedSameDraws) {
  SamplingParams p;
  p.do_sample = true;
  p.temperature = 0.7;
  std::vector<float> l(100);
  for (int i = 0; i < 100; ++i) l[i] = static_cast<float>(i % 7) * 0.3f;
  Rng a(42), b(42);
  for (int i = 0; i < 50; ++i) {
    auto x = l, y = l;
    EXPECT_EQ(sample_next(x, {}, p, a), sample_next(y, {}, p, b));
  }
}

TEST(Sampler, InvalidParametersAreNamed) {
  SamplingParams p;
  p.temperature = -1;
  EXPECT_THROW_WITH(validate(p), InvalidArgumentError, "temperature");
  p = {};
  p.top_p = 1.5;
  EXPECT_THROW_WITH(validate(p), InvalidArgumentError, "top-p");
  p = {};
  p.top_k = -3;
  EXPECT_THROW_WITH(validate(p), InvalidArgumentError, "top-k");
  p = {};
  p.repetition_penalty = 0;
  EXPECT_THROW_WITH(validate(p), InvalidArgumentError, "repetition penalty");
}

}  // namespace
}  // namespace tiergen
