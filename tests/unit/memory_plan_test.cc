// The memory plan of a run with an offloading policy (runtime/generate/run_plan.h): each tier gets
// the policy's share of the decoder layers' weights and of the KV cache, streamed weights get their
// two compute buffers, generated weights are held one layer at a time while a GPU run places them,
// and a plan whose disk share does not fit the offload folder's filesystem is an IoError.
#include <gtest/gtest.h>

#include "runtime/core/error.h"
#include "runtime/generate/run_plan.h"
#include "runtime/model/spec.h"
#include "tests/testutil/testutil.h"

namespace tiergen {
namespace {

uint64_t item(const MemoryPlan& plan, const std::string& what) {
  for (const MemoryItem& i : plan.items())
    if (i.what == what) return i.bytes;
  ADD_FAILURE() << "no item '" << what << "' in " << plan.describe();
  return 0;
}

bool has(const MemoryPlan& plan, const std::string& what) {
  for (const MemoryItem& i : plan.items())
    if (i.what == what) return true;
  return false;
}

struct Opt30b {
  ModelSpec spec = preset_model_spec("opt-30b");
  int64_t embed() const { return spec.vocab_size * spec.hidden_size * (spec.tie_word_embeddings ? 1 : 2); }
  double decoder_bytes() const { return 2.0 * static_cast<double>(spec.num_params() - embed()); }
};

TEST(MemoryPlan, GpuWeightsSplitByThePolicy) {
  const Opt30b m;
  const ComputePlacement gpu{Tier::Gpu, DType::F16, DType::F16, DType::F16};
  const RunShape shape{8, 544, 8 * 512, 8};
  OffloadPolicy p;
  set_percent(p, {20, 80, 100, 0, 100, 0});
  const MemoryPlan plan = plan_generation(m.spec, WeightHome::Generated, DType::F16, gpu, shape, &p);
  const double dec = m.decoder_bytes();
  EXPECT_NEAR(static_cast<double>(item(plan, "weights on the GPU")), 0.2 * dec + 2.0 * m.embed(), 1e6);
  EXPECT_NEAR(static_cast<double>(item(plan, "weights in host memory")), 0.8 * dec, 1e6);
  // Three buffers, each an MLP layer's weights (OPT's fc1 and fc2, the larger half of a layer).
  const double mlp = 2.0 * 2 * m.spec.hidden_size * m.spec.intermediate_size;
  EXPECT_NEAR(static_cast<double>(item(plan, "weight buffers")), kStreamedWeightBuffers * mlp, 1.0);
  // Generated weights are placed as they are made: the host holds about a layer of them, not 60 GB.
  EXPECT_LE(item(plan, "weights"), static_cast<uint64_t>(2.0 * dec / m.spec.num_layers) + 1);
  EXPECT_FALSE(has(plan, "weights on disk"));
  EXPECT_NE(plan.describe().find("pinned"), std::string::npos) << plan.describe();
  // Without a policy every weight is on the GPU.
  const MemoryPlan all = plan_generation(m.spec, WeightHome::Generated, DType::F16, gpu, shape);
  EXPECT_NEAR(static_cast<double>(item(all, "weights on the GPU")), dec + 2.0 * m.embed(), 1e6);
}

TEST(MemoryPlan, CpuDiskSharesOfWeightsAndKvCache) {
  const Opt30b m;
  const ComputePlacement cpu{Tier::Cpu, DType::F16, DType::F32, DType::F32};
  const RunShape shape{4, 544, 4 * 512, 4};
  OffloadPolicy p;
  set_percent(p, {30, 20, 0, 25, 100, 0});
  p.gpu_batch_size = 2;
  const MemoryPlan plan = plan_generation(m.spec, WeightHome::Generated, DType::F16, cpu, shape, &p);
  const double dec = m.decoder_bytes();
  EXPECT_NEAR(static_cast<double>(item(plan, "weights on disk")), 0.5 * dec, 1e6);
  const double kv = static_cast<double>(kv_cache_bytes(m.spec, 4, 544, DType::F32));
  EXPECT_NEAR(static_cast<double>(item(plan, "KV cache on disk")), 0.75 * kv, 1e3);
  EXPECT_NEAR(static_cast<double>(item(plan, "KV cache")), 0.25 * kv, 1e3);
  EXPECT_EQ(item(plan, "KV cache buffers"), 2 * kv_cache_bytes(m.spec, 2, 544, DType::F32));
  EXPECT_NEAR(static_cast<double>(plan.total(Tier::Disk)), 0.5 * dec + 0.75 * kv, 2e6);
}

TEST(MemoryPlan, ADiskShareLargerThanTheFolderIsAnError) {
  testing::TempDir dir;
  MemoryPlan plan;
  plan.add("weights on disk", Tier::Disk, uint64_t{1} << 62);
  EXPECT_THROW_WITH(plan.check_disk(dir.path().string(), "Keep more in memory."), IoError,
                    "of disk in " + dir.path().string());
  MemoryPlan small;
  small.add("weights on disk", Tier::Disk, 4096);
  EXPECT_NO_THROW(small.check_disk(dir.path().string(), ""));
}

}  // namespace
}  // namespace tiergen
