// A model cut into stages: running the stages one after another (as the pipeline's ranks will)
// gives the same logits and greedy tokens as one stage over every layer; dummy weights for presets.
#include "stage/stage.h"

#include <algorithm>
#include <cmath>

#include "runtime/core/error.h"
#include "runtime/generate/executor.h"
#include "runtime/generate/generator.h"
#include "tests/testutil/testutil.h"

namespace tiergen {
namespace {

// Prefill of one prompt through `stages` in order; returns the last-token logits.
std::vector<float> prefill(std::vector<Stage*> stages, const std::vector<int32_t>& ids, int64_t hidden) {
  ForwardContext ctx;
  const int64_t n = static_cast<int64_t>(ids.size());
  ctx.plan.add_sequence(ids, 0, 0);
  ctx.plan.logit_rows = {static_cast<int32_t>(n - 1)};
  for (Stage* s : stages) {
    s->allocate_cache(1, n);
    s->forward(ctx);
  }
  return std::vector<float>(ctx.logits.data<float>(), ctx.logits.data<float>() + ctx.logits.numel());
}

TEST(Stage, TwoStagesEqualOne) {
  for (const char* name : {"llama-tiny-gqa", "opt-tiny-postln-proj", "bloom-tiny"}) {
    auto model = Model::load(testing::hf_model_dir(name));
    auto be = kernels::make_cpu_backend();
    const std::vector<int32_t> ids = {5, 17, 3, 99, 42, 7};
    Stage whole(*model, *be);
    const auto ref = prefill({&whole}, ids, model->spec().hidden_size);
    const size_t n_layers = model->layers().size();
    for (size_t cut : {size_t{1}, n_layers / 2, n_layers - 1}) {
      Stage first(*model, *be, 0, cut), second(*model, *be, cut, n_layers);
      EXPECT_EQ(prefill({&first, &second}, ids, model->spec().hidden_size), ref) << name << " cut at " << cut;
    }
  }
}

// The greedy path (argmax where the logits are) picks what the host sampler picks from the logits.
TEST(LocalPipeline, GreedyIdsAreTheArgmaxOfTheLogits) {
  for (const char* name : {"llama-tiny-gqa", "opt-tiny-postln-proj"}) {
    auto model = Model::load(testing::hf_model_dir(name));
    auto be = kernels::make_cpu_backend();
    Stage whole(*model, *be);
    LocalPipeline pipe({&whole});
    pipe.allocate_cache(2, 8, 2);
    kernels::StepPlan plan;
    const std::vector<int32_t> a = {5, 17, 3}, b = {99, 42};
    plan.add_sequence(a, 0, 0);
    plan.add_sequence(b, 0, 1);
    plan.logit_rows = {2, 4};
    const Tensor logits = pipe.forward(plan);  // (2, V)
    const std::vector<int32_t> ids = pipe.forward_greedy(plan);
    ASSERT_EQ(ids.size(), 2u);
    const int64_t V = logits.dim(1);
    for (int64_t r = 0; r < 2; ++r) {
      const float* row = logits.data<float>() + r * V;
      EXPECT_EQ(ids[static_cast<size_t>(r)], std::max_element(row, row + V) - row) << name << " row " << r;
    }
  }
}

TEST(CpuBackend, ArgmaxRowsTiesAndNaN) {
  auto be = kernels::make_cpu_backend();
  const float nan = std::nanf("");
  // (4, 4): a tie (first wins), NaN first (answers 0), NaN later (skipped), all equal.
  Tensor logits = Tensor::empty({4, 4}, DType::F32);
  const float rows[16] = {1, 3, 3, 2, nan, 9, 1, 0, 1, nan, 5, 4, 7, 7, 7, 7};
  std::copy(rows, rows + 16, logits.data<float>());
  Tensor ids = Tensor::empty({4}, DType::I32);
  be->argmax_rows(ids, logits);
  EXPECT_EQ(std::vector<int32_t>(ids.data<int32_t>(), ids.data<int32_t>() + 4), (std::vector<int32_t>{1, 0, 2, 0}));
  Tensor short_ids = Tensor::empty({3}, DType::I32);
  EXPECT_THROW(be->argmax_rows(short_ids, logits), InternalError);
}

TEST(Stage, RejectsBadRangesAndSlots) {
  auto model = Model::load(testing::hf_model_dir("qwen2-tiny"));
  auto be = kernels::make_cpu_backend();
  EXPECT_THROW_WITH(Stage(*model, *be, 3, 2), InvalidArgumentError, "outside the model");
  EXPECT_THROW_WITH(Stage(*model, *be, 0, 999), InvalidArgumentError, "outside the model");
  Stage s(*model, *be);
  EXPECT_THROW_WITH(s.allocate_cache(0, 4), InvalidArgumentError, "KV cache");
}

TEST(DummyWeights, PresetModelRunsAndIsDeterministic) {
  ModelSpec spec = preset_model_spec("opt-125m");
  spec.num_layers = 2;  // the shape of opt-125m's layers, fewer of them: fast enough for a unit test
  auto a = Model::dummy(spec, DType::F16, 7);
  auto b = Model::dummy(spec, DType::F16, 7);
  auto c = Model::dummy(spec, DType::F16, 8);
  auto be = kernels::make_cpu_backend();
  Stage sa(*a, *be), sb(*b, *be), sc(*c, *be);
  const std::vector<int32_t> ids = {2, 100, 2000, 30000};
  const auto la = prefill({&sa}, ids, spec.hidden_size);
  EXPECT_EQ(la, prefill({&sb}, ids, spec.hidden_size));
  EXPECT_NE(la, prefill({&sc}, ids, spec.hidden_size));
  for (float v : la) ASSERT_TRUE(std::isfinite(v));
  EXPECT_EQ(a->weight_bytes(), static_cast<size_t>(spec.num_params()) * 2);
}

}  // namespace
}  // namespace tiergen
