// The offloading policy (runtime/policy/offload_policy.h): --percent's checks and the byte-accurate
// placement of a layer's weights, against splits worked out by hand.
#include "runtime/policy/offload_policy.h"

#include <gtest/gtest.h>

#include <cmath>

#include "runtime/core/error.h"
#include "tests/testutil/testutil.h"

namespace tiergen {
namespace {

TEST(OffloadPolicy, PercentSetsTheThreeShares) {
  OffloadPolicy p;
  set_percent(p, {20, 80, 0, 100, 100, 0});
  EXPECT_DOUBLE_EQ(p.weights.gpu, 20);
  EXPECT_DOUBLE_EQ(p.weights.cpu, 80);
  EXPECT_DOUBLE_EQ(p.weights.disk(), 0);
  EXPECT_DOUBLE_EQ(p.cache.disk(), 0);
  EXPECT_DOUBLE_EQ(p.activations.gpu, 100);
  set_percent(p, {33.3, 33.3, 0, 0, 100, 0});  // decimals: the rest, 33.4, on disk
  EXPECT_NEAR(p.weights.disk(), 33.4, 1e-9);
  EXPECT_DOUBLE_EQ(p.cache.disk(), 100);
  EXPECT_EQ(p.describe().substr(0, 30), "weights 33.3/33.3/33.4, KV cac");
}

TEST(OffloadPolicy, BadPercentagesNameTheProblem) {
  OffloadPolicy p;
  EXPECT_THROW_WITH(set_percent(p, {100, 0, 100, 0}), InvalidArgumentError, "takes six numbers");
  EXPECT_THROW_WITH(set_percent(p, {60, 50, 100, 0, 100, 0}), InvalidArgumentError,
                    "weights on the GPU (60) and the CPU (50) add up to 110%");
  EXPECT_THROW_WITH(set_percent(p, {100, 0, 70, 40, 100, 0}), InvalidArgumentError, "the KV cache on the GPU (70)");
  EXPECT_THROW_WITH(set_percent(p, {100, 0, 100, 0, -5, 0}), InvalidArgumentError,
                    "hg (activations on GPU) is -5; a share is a percentage from 0 to 100");
  EXPECT_THROW_WITH(set_percent(p, {100, 0, 100, 0, 100, 101}), InvalidArgumentError, "hc (activations on CPU) is 101");
  EXPECT_THROW_WITH(set_percent(p, {NAN, 0, 100, 0, 100, 0}), InvalidArgumentError, "wg (weights on GPU) is nan");
}

TEST(OffloadPolicy, BatchShapesAreAtLeastOne) {
  OffloadPolicy p;
  p.gpu_batch_size = 0;
  EXPECT_THROW_WITH(validate(p), InvalidArgumentError, "--gpu-batch-size is 0");
  p.gpu_batch_size = 32;
  p.num_gpu_batches = -1;
  EXPECT_THROW_WITH(validate(p), InvalidArgumentError, "--num-gpu-batches is -1");
  p.num_gpu_batches = 2;
  EXPECT_NO_THROW(validate(p));
  EXPECT_EQ(p.block_size(), 64);
}

// A layer of a norm (1 row of 8 KB), a 1024-row matrix of 8 KB rows and a 4096-row one of 2 KB rows:
// 8 KB + 8 MB + 8 MB.
std::vector<WeightRows> layer() { return {{"norm", 1, 8192}, {"q", 1024, 8192}, {"fc", 4096, 2048}}; }

uint64_t bytes_on(const std::vector<WeightRows>& l, const std::vector<RowSplit>& s, int tier) {
  uint64_t b = 0;
  for (size_t i = 0; i < l.size(); ++i)
    b += static_cast<uint64_t>(tier == 0 ? s[i].gpu_rows : tier == 1 ? s[i].cpu_rows : s[i].disk_rows) * l[i].row_bytes;
  return b;
}

TEST(OffloadPolicy, PlacementCutsWithinTensorsAtRowBoundaries) {
  const auto l = layer();
  const uint64_t total = 8192 + 2 * (uint64_t{8} << 20);
  // 20% on the GPU: 3,357,082 bytes = the norm (8192) + 408.8 of q's rows -> 409 rows. 80% on the
  // CPU: the rest of q (615 rows) and all of fc.
  auto s = place_rows(l, {20, 80});
  EXPECT_EQ(s[0].gpu_rows, 1);
  EXPECT_EQ(s[1].gpu_rows, 409);
  EXPECT_EQ(s[1].cpu_rows, 615);
  EXPECT_EQ(s[2].gpu_rows, 0);
  EXPECT_EQ(s[2].cpu_rows, 4096);
  EXPECT_EQ(s[2].disk_rows, 0);
  // Each tier within half a row (of the tensor it is cut in) of its share.
  EXPECT_NEAR(static_cast<double>(bytes_on(l, s, 0)), 0.2 * total, 4096);
  // 50 / 25 / 25 (8,392,704 bytes each way of the middle): the GPU's cut falls 1023.5 rows into q
  // and rounds to 1024; the CPU's, at 12,589,056, falls exactly 2047 rows into fc.
  s = place_rows(l, {50, 25});
  EXPECT_EQ(s[1].gpu_rows, 1024);
  EXPECT_EQ(s[1].cpu_rows, 0);
  EXPECT_EQ(s[2].gpu_rows, 0);
  EXPECT_EQ(s[2].cpu_rows, 2047);
  EXPECT_EQ(s[2].disk_rows, 2049);
  // Each cut within half a row of its place; the CPU's share between two cuts.
  EXPECT_NEAR(static_cast<double>(bytes_on(l, s, 0)), 0.5 * total, 4096);
  EXPECT_NEAR(static_cast<double>(bytes_on(l, s, 1)), 0.25 * total, 4096 + 1024);
  EXPECT_NEAR(static_cast<double>(bytes_on(l, s, 2)), 0.25 * total, 1024);
}

TEST(OffloadPolicy, PlacementAtTheExtremes) {
  const auto l = layer();
  for (const TierShares sh : {TierShares{100, 0}, TierShares{0, 100}, TierShares{0, 0}}) {
    const auto s = place_rows(l, sh);
    for (size_t i = 0; i < l.size(); ++i) {
      EXPECT_EQ(s[i].gpu_rows, sh.gpu == 100 ? l[i].rows : 0);
      EXPECT_EQ(s[i].cpu_rows, sh.cpu == 100 ? l[i].rows : 0);
      EXPECT_EQ(s[i].disk_rows, sh.disk() == 100 ? l[i].rows : 0);
    }
  }
  EXPECT_TRUE(place_rows({}, {50, 50}).empty());
}

}  // namespace
}  // namespace tiergen
