// The default layer assignment of unequal stages (comm/layer_balance.h): the slowest stage as fast
// as it can be, each stage within what its memory holds.
#include "comm/layer_balance.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <limits>

#include "runtime/core/error.h"

namespace tiergen::comm {
namespace {

// The largest stage cost of a split, as balance_layers sees it.
double worst(const std::vector<int64_t>& first, int64_t layers, const std::vector<StageCost>& c) {
  double w = 0;
  for (size_t s = 0; s < c.size(); ++s) {
    const int64_t a = s == 0 ? 0 : first[s - 1], b = s < first.size() ? first[s] : layers;
    EXPECT_GE(b - a, 1) << "stage " << s;
    EXPECT_LE(b - a, c[s].max_layers) << "stage " << s;
    w = std::max(w, c[s].fixed_seconds + static_cast<double>(b - a) * c[s].seconds_per_layer);
  }
  return w;
}

// Every split of `layers` over the stages, the best worst cost (brute force, for small cases).
double best_worst(int64_t layers, const std::vector<StageCost>& c) {
  double best = std::numeric_limits<double>::infinity();
  std::vector<int64_t> first(c.size() - 1);
  auto rec = [&](auto& self, size_t s, int64_t at) -> void {
    if (s + 1 == c.size()) {
      const int64_t n = layers - at;
      if (n < 1 || n > c[s].max_layers) return;
      double w = 0;
      for (size_t k = 0; k < c.size(); ++k) {
        const int64_t a = k == 0 ? 0 : first[k - 1], b = k < first.size() ? first[k] : layers;
        w = std::max(w, c[k].fixed_seconds + static_cast<double>(b - a) * c[k].seconds_per_layer);
      }
      best = std::min(best, w);
      return;
    }
    for (int64_t n = 1; n <= c[s].max_layers && at + n < layers; ++n) {
      first[s] = at + n;
      self(self, s + 1, at + n);
    }
  };
  rec(rec, 0, 0);
  return best;
}

TEST(LayerBalance, EqualStagesShareEvenly) {
  const std::vector<StageCost> c(4, StageCost{1.0, 0.0, 100});
  EXPECT_EQ(balance_layers(32, c), (std::vector<int64_t>{8, 16, 24}));
  // 10 over 3: the earlier stages take the extra layers, as the equal split does.
  EXPECT_EQ(balance_layers(10, std::vector<StageCost>(3, StageCost{1.0, 0.0, 100})), (std::vector<int64_t>{4, 7}));
}

TEST(LayerBalance, AFasterStageTakesMore) {
  // Stage 1 is three times as fast per layer: 48 layers split 12 / 36, both 12 s.
  const std::vector<StageCost> c = {{1.0, 0.0, 48}, {1.0 / 3, 0.0, 48}};
  EXPECT_EQ(balance_layers(48, c), (std::vector<int64_t>{12}));
}

TEST(LayerBalance, TheHeadWeighsOnTheLastStage) {
  const std::vector<StageCost> c = {{1.0, 0.0, 48}, {1.0, 4.0, 48}};
  EXPECT_EQ(balance_layers(48, c), (std::vector<int64_t>{26}));  // 26 s and 4 + 22 = 26 s
}

TEST(LayerBalance, MemoryCapsWin) {
  // Stage 0 is fastest but holds only 5 layers; the rest go where they are slower.
  const std::vector<StageCost> c = {{0.1, 0.0, 5}, {1.0, 0.0, 40}, {1.0, 0.0, 40}};
  const std::vector<int64_t> f = balance_layers(40, c);
  EXPECT_EQ(f.front(), 5);
  EXPECT_DOUBLE_EQ(worst(f, 40, c), 18.0);  // 35 layers over two equal stages: 18 + 17
}

TEST(LayerBalance, MatchesBruteForce) {
  uint64_t seed = 12345;
  auto next = [&] { return (seed = seed * 6364136223846793005ULL + 1442695040888963407ULL) >> 33; };
  for (int trial = 0; trial < 300; ++trial) {
    const int64_t stages = 2 + static_cast<int64_t>(next() % 3), layers = stages + static_cast<int64_t>(next() % 14);
    std::vector<StageCost> c;
    for (int64_t s = 0; s < stages; ++s)
      c.push_back({0.5 + static_cast<double>(next() % 40) / 10, static_cast<double>(next() % 3),
                   1 + static_cast<int64_t>(next() % static_cast<uint64_t>(layers))});
    int64_t room = 0;
    for (const StageCost& k : c) room += k.max_layers;
    if (room < layers) {
      EXPECT_THROW(balance_layers(layers, c), InvalidArgumentError);
      continue;
    }
    const std::vector<int64_t> f = balance_layers(layers, c);
    ASSERT_EQ(f.size(), static_cast<size_t>(stages - 1));
    EXPECT_NEAR(worst(f, layers, c), best_worst(layers, c), 1e-9) << "trial " << trial;
  }
}

TEST(LayerBalance, BudgetsThatCannotHoldTheModel) {
  const std::vector<StageCost> c = {{1.0, 0.0, 10}, {1.0, 0.0, 12}};
  EXPECT_FALSE(can_hold(32, c));
  EXPECT_TRUE(can_hold(22, c));
  EXPECT_FALSE(can_hold(8, {{1.0, 0.0, 0}, {1.0, 0.0, 8}}));  // a stage that holds no layer
  try {
    balance_layers(32, c);
    FAIL() << "expected an error";
  } catch (const InvalidArgumentError& e) {
    EXPECT_NE(std::string(e.what()).find("hold at most stage 0 10, stage 1 12 of the model's 32 decoder layers"),
              std::string::npos)
        << e.what();
  }
  EXPECT_THROW(balance_layers(2, std::vector<StageCost>(3, StageCost{1.0, 0.0, 5})), InvalidArgumentError);
  EXPECT_THROW(balance_layers(8, {{1.0, 0.0, 0}, {1.0, 0.0, 8}}), InvalidArgumentError);
}

TEST(LayerBalance, DescribesEachStage) {
  const std::vector<StageCost> c = {{0.001, 0.0, 48}, {0.002, 0.001, 48}};
  EXPECT_EQ(describe_balance({30}, 45, c), "stage 0: 30 layers, 30.0 ms; stage 1: 15 layers, 31.0 ms");
}

}  // namespace
}  // namespace tiergen::comm
