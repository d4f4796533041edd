// The correctness oracle: every model in tests/data/hf-reference/models against what Hugging Face
// transformers computed in f32 (see tests/data/README.md): last-4-position logits and every
// per-layer hidden state within 1e-4 relative error, greedy tokens identical, alone and batched.
#include <fmt/format.h>

#include "kernels/backend.h"
#include "runtime/engine/model.h"
#include "runtime/generate/generator.h"
#include "stage/stage.h"
#include "tests/testutil/hf_reference.h"
#include "tests/testutil/testutil.h"

namespace tiergen {
namespace {

using testing::PrefillOut;
using testing::rel_error;

constexpr double kRelTol = 1e-4;  // tests/data/README.md: f32 CPU implementation

class HfReference : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    ref_ = testing::load_hf_reference(GetParam());
    model_ = Model::load(ref_.dir);
    backend_ = kernels::make_cpu_backend();
  }

  std::vector<PrefillOut> forward(const std::vector<size_t>& which) {
    Stage stage(*model_, *backend_);
    std::vector<std::vector<int32_t>> prompts;
    for (size_t w : which) prompts.push_back(ref_.cases[w].ids);
    return testing::prefill(stage, prompts);
  }

  void check(const PrefillOut& out, size_t i) {
    // fmt rather than `"p" + std::to_string(i)`: GCC 12 reports a bogus -Wrestrict inside the
    // inlined operator+(const char*, std::string&&) (GCC bugs 105329 / 105651).
    const std::string p = fmt::format("p{}.", i);
    EXPECT_LT(rel_error(out.logits, ref_.tensor(p + "logits")), kRelTol) << "prompt " << i << " logits";
    EXPECT_EQ(static_cast<int64_t>(out.hidden.size()), model_->spec().num_layers + 1);
    for (const auto& [index, h] : out.hidden)
      EXPECT_LT(rel_error(h, ref_.tensor(p + "hidden." + std::to_string(index))), kRelTol)
          << "prompt " << i << " hidden state " << index;
  }

  std::vector<Result> greedy(const std::vector<size_t>& which) {
    Stage stage(*model_, *backend_);
    Generator gen(stage, nullptr);
    return gen.generate(testing::greedy_requests(ref_, which));
  }

  std::vector<size_t> all() const { return testing::all_cases(ref_); }

  testing::HfReferenceModel ref_;
  std::unique_ptr<Model> model_;
  std::unique_ptr<kernels::Backend> backend_;
};

TEST_P(HfReference, InputIdsMatchExpected) {
  for (size_t i = 0; i < ref_.cases.size(); ++i) {
    Tensor ids = ref_.expected->tensor(fmt::format("p{}.input_ids", i));  // see check(): GCC -Wrestrict
    ASSERT_EQ(ids.numel(), static_cast<int64_t>(ref_.cases[i].ids.size()));
    for (int64_t t = 0; t < ids.numel(); ++t) EXPECT_EQ(ids.data<int64_t>()[t], ref_.cases[i].ids[t]);
  }
}

TEST_P(HfReference, LogitsAndHiddenStatesOnePromptAtATime) {
  for (size_t i = 0; i < ref_.cases.size(); ++i) check(forward({i})[0], i);
}

TEST_P(HfReference, LogitsAndHiddenStatesAllPromptsBatched) {
  const auto outs = forward(all());
  for (size_t i = 0; i < ref_.cases.size(); ++i) check(outs[i], i);
}

TEST_P(HfReference, GreedyTokensOnePromptAtATime) {
  for (size_t i = 0; i < ref_.cases.size(); ++i)
    EXPECT_EQ(greedy({i})[0].output_ids, ref_.cases[i].greedy) << "prompt " << i;
}

TEST_P(HfReference, GreedyTokensAllPromptsBatched) {
  const auto res = greedy(all());
  for (size_t i = 0; i < ref_.cases.size(); ++i) EXPECT_EQ(res[i].output_ids, ref_.cases[i].greedy) << "prompt " << i;
}

INSTANTIATE_TEST_SUITE_P(Models, HfReference, ::testing::ValuesIn(testing::hf_reference_models()),
                         [](const auto& info) { return testing::test_name(info.param); });

TEST(HfReferenceData, AllFiveFamiliesPresent) {
  const auto names = testing::hf_reference_models();
  for (const char* family : {"opt", "llama", "mistral", "qwen2", "bloom"})
    EXPECT_TRUE(std::any_of(names.begin(), names.end(), [&](const std::string& n) { return n.rfind(family, 0) == 0; }))
        << family;
}

}  // namespace
}  // namespace tiergen
