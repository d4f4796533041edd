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
  int64_t embed() const { return spec.num_params() - spec.num_layers * spec.layer_params(); }  // tied table, positions
  double decoder_bytes() const { return 2.0 * static_cast<double>(spec.num_layers * spec.layer_params()); }
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
  EXPECT_EQ(plan.total(Tier::PinnedCpu), item(plan, "weights in host memory"));
  // --pin-weight 0: the same bytes, pageable.
  p.pin_weight = false;
  const MemoryPlan pageable = plan_generation(m.spec, WeightHome::Generated, DType::F16, gpu, shape, &p);
  EXPECT_EQ(pageable.total(Tier::PinnedCpu), 0u);
  EXPECT_EQ(pageable.host_total(), plan.host_total());
  // Without a policy every weight is on the GPU.
  const MemoryPlan all = plan_generation(m.spec, WeightHome::Generated, DType::F16, gpu, shape);
  EXPECT_NEAR(static_cast<double>(item(all, "weights on the GPU")), dec + 2.0 * m.embed(), 1e6);
}

// A pipeline stage's plan holds its decoder layers and only the ends of the model it holds: a tied
// token table on the first stage (the embedding) and on the last (the head), neither on a middle
// one; the logits only on the last.
TEST(MemoryPlan, StagesCountTheEndsTheyHold) {
  const ModelSpec llama = preset_model_spec("llama-2-70b");  // untied: a table per end
  ModelSpec opt = preset_model_spec("opt-66b");              // tied: one table serves both ends
  for (ModelSpec spec : {llama, opt}) {
    spec.num_layers = 16;  // a stage's share
    const ComputePlacement gpu{Tier::Gpu, DType::F16, DType::F16, DType::F16};
    const RunShape shape{8, 544, 8 * 512, 8};
    OffloadPolicy p;
    set_percent(p, {25, 75, 100, 0, 100, 0});
    auto on_gpu = [&](ModelEnds ends) {
      return item(plan_generation(spec, WeightHome::Generated, DType::F16, gpu, shape, &p, ends), "weights on the GPU");
    };
    const uint64_t middle = on_gpu({false, false}), first = on_gpu({true, false}), last = on_gpu({false, true});
    const double decoder = 2.0 * static_cast<double>(spec.num_layers * spec.layer_params());
    EXPECT_NEAR(static_cast<double>(middle), 0.25 * decoder, 1.0) << spec.model_type;
    const auto table = static_cast<uint64_t>(2 * spec.vocab_size * spec.word_embed_proj_dim);
    EXPECT_GE(first - middle, table) << spec.model_type;  // the token table, positions, norms
    EXPECT_GE(last - middle, table) << spec.model_type;   // the LM head (the same table where tied), final norm
    // Alone, a tied table is held once; untied, both.
    const uint64_t alone = on_gpu({});
    EXPECT_EQ(alone - middle, (first - middle) + (last - middle) - (spec.tie_word_embeddings ? table : 0))
        << spec.model_type;
    const MemoryPlan mid = plan_generation(spec, WeightHome::Generated, DType::F16, gpu, shape, &p, {false, false});
    EXPECT_FALSE(has(mid, "logits"));
    EXPECT_FALSE(has(mid, "logits on the host"));
    EXPECT_TRUE(has(plan_generation(spec, WeightHome::Generated, DType::F16, gpu, shape, &p, {false, true}), "logits"));
  }
  EXPECT_EQ(opt.end_params({true, false}) + opt.end_params({false, true}) - opt.end_params(),
            opt.vocab_size * opt.word_embed_proj_dim);
  EXPECT_EQ(llama.end_params({true, false}) + llama.end_params({false, true}), llama.end_params());
  EXPECT_EQ(opt.end_params({false, false}), 0);
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

// A block of GPU batches holds every batch's hidden state between layers, but the temporaries of one
// batch at a time; with --cpu-cache-compute also every batch's new keys and values, in flight.
TEST(MemoryPlan, ActivationsAreOneGpuBatchsTemporaries) {
  const Opt30b m;
  const ComputePlacement gpu{Tier::Gpu, DType::F16, DType::F16, DType::F16};
  const RunShape shape = uniform_run_shape(64, 512, 32);
  OffloadPolicy p;
  set_percent(p, {20, 80, 100, 0, 100, 0});
  p.gpu_batch_size = 64;
  const MemoryPlan whole = plan_generation(m.spec, WeightHome::Generated, DType::F16, gpu, shape, &p);
  p.gpu_batch_size = 16;
  const MemoryPlan quarter = plan_generation(m.spec, WeightHome::Generated, DType::F16, gpu, shape, &p);
  const uint64_t hidden = 2 * static_cast<uint64_t>(m.spec.hidden_size) * 64 * 512;
  const uint64_t temps = item(whole, "activations") - hidden;
  EXPECT_EQ(item(quarter, "activations"), hidden + temps / 4);
  p.cpu_cache_compute = true;
  set_percent(p, {20, 80, 0, 100, 100, 0});
  const MemoryPlan host_cache = plan_generation(m.spec, WeightHome::Generated, DType::F16, gpu, shape, &p);
  const uint64_t keys_values = 2 * 2 * static_cast<uint64_t>(m.spec.num_kv_heads * m.spec.head_dim) * 64 * 512;
  EXPECT_EQ(item(host_cache, "activations"), hidden + keys_values + temps / 4);
  // A wave of 3 blocks of 64 in flight (a pipeline's micro-batches): each step is still one block's,
  // so the activations are those of one block, while the KV cache holds all three.
  set_percent(p, {20, 80, 100, 0, 100, 0});
  p.cpu_cache_compute = false;
  p.gpu_batch_size = 64;
  RunShape wave = shape;
  wave.cache_slots = 3 * 64;
  wave.block_slots = 64;
  const MemoryPlan waves = plan_generation(m.spec, WeightHome::Generated, DType::F16, gpu, wave, &p);
  EXPECT_EQ(item(waves, "activations"), item(whole, "activations"));
  EXPECT_EQ(item(waves, "KV cache"), 3 * item(whole, "KV cache"));
}

// The table `tiergen plan` prints: each tier's total against its capacity, a misfit marked.
TEST(MemoryPlan, TheTableShowsEachTierAgainstItsCapacity) {
  MemoryPlan plan;
  plan.add("weights on the GPU", Tier::Gpu, 3000000000, "embeddings and head");
  plan.add("KV cache", Tier::PinnedCpu, 2000000000);
  plan.add("weights on disk", Tier::Disk, 1000000);
  Capacities c;
  c.device = device_memory_limit(uint64_t{80} << 30, "a GPU", uint64_t{2} << 30);
  c.host = host_memory_limit(uint64_t{8} << 30);
  const std::string t = plan.table(c);
  for (const char* part : {"GPU memory: 3.00 GB of 2.15 GB (the --gpu-mem budget): DOES NOT FIT\n",
                           "  weights on the GPU  3.00 GB  embeddings and head\n",
                           "host memory: 2.00 GB of 8.59 GB (the --cpu-mem budget)\n", "  KV cache (pinned)",
                           "disk: 1.00 MB (capacity unknown"})
    EXPECT_NE(t.find(part), std::string::npos) << part << " in\n" << t;
  EXPECT_THROW_WITH(plan.check(c, "/tmp", "Use less."), OutOfMemoryError, "2.15 GB is the --gpu-mem budget");
}

TEST(MemoryPlan, ADiskShareLargerThanTheFolderIsAnError) {
  testing::TempDir dir;
  MemoryPlan plan;
  plan.add("weights on disk", Tier::Disk, uint64_t{1} << 62);
  EXPECT_THROW_WITH(
      plan.check_disk(disk_limit(dir.path().string(), std::nullopt), dir.path().string(), "Keep more in memory."),
      IoError, "of disk in " + dir.path().string());
  MemoryPlan small;
  small.add("weights on disk", Tier::Disk, 4096);
  EXPECT_NO_THROW(small.check_disk(disk_limit(dir.path().string(), std::nullopt), dir.path().string(), ""));
}

}  // namespace
}  // namespace tiergen
