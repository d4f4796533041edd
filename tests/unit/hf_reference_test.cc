// The correctness oracle: every model in tests/data/hf-reference/models against what Hugging Face
// transformers computed in f32 (see tests/data/README.md): last-4-position logits and every
// per-layer hidden state within 1e-4 relative error, greedy tokens identical, alone and batched.
#include <cmath>
#include <fstream>
#include <map>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "kernels/backend.h"
#include "runtime/engine/model.h"
#include "runtime/generate/generator.h"
#include "runtime/model/safetensors.h"
#include "stage/stage.h"
#include "tests/testutil/testutil.h"

namespace tiergen {
namespace {

constexpr double kRelTol = 1e-4;  // tests/data/README.md: f32 CPU implementation

double rel_error(const Tensor& out, const Tensor& ref) {
  EXPECT_EQ(out.shape(), ref.shape());
  if (out.shape() != ref.shape()) return INFINITY;
  const float* a = out.data<float>();
  const float* b = ref.data<float>();
  double num = 0, den = 0;
  for (int64_t i = 0; i < ref.numel(); ++i) {
    if (!std::isfinite(a[i])) return INFINITY;
    num += (static_cast<double>(a[i]) - b[i]) * (static_cast<double>(a[i]) - b[i]);
    den += static_cast<double>(b[i]) * b[i];
  }
  return std::sqrt(num) / std::sqrt(den);
}

struct Case {
  std::vector<int32_t> ids;
  std::vector<int32_t> greedy;
};

class HfReference : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    dir_ = testing::hf_model_dir(GetParam());
    model_ = Model::load(dir_);
    expected_ = SafetensorsFile::open(dir_ / "expected.safetensors");
    std::ifstream f(dir_ / "expected.json");
    const nlohmann::json j = nlohmann::json::parse(f);
    for (const auto& c : j.at("cases"))
      cases_.push_back({c.at("input_ids").get<std::vector<int32_t>>(), c.at("greedy").get<std::vector<int32_t>>()});
    backend_ = kernels::make_cpu_backend();
  }

  Tensor expected(const std::string& name) { return expected_->tensor(name).to_f32(); }

  // One ragged forward over `which` prompts; returns per prompt its hidden states and last-4 logits.
  struct Out {
    std::map<int64_t, Tensor> hidden;  // index -> (seq, C)
    Tensor logits;                     // (4, V)
  };
  std::vector<Out> forward(const std::vector<size_t>& which) {
    Stage stage(*model_, *backend_);
    int64_t cap = 1;
    for (size_t w : which) cap = std::max<int64_t>(cap, static_cast<int64_t>(cases_[w].ids.size()));
    stage.allocate_cache(static_cast<int64_t>(which.size()), cap);
    ForwardContext ctx;
    for (size_t s = 0; s < which.size(); ++s) {
      const auto& ids = cases_[which[s]].ids;
      const int64_t row = ctx.num_tokens(), n = static_cast<int64_t>(ids.size());
      ctx.seqs.push_back({row, n, 0, static_cast<int64_t>(s)});
      for (int64_t t = 0; t < n; ++t) {
        ctx.token_ids.push_back(ids[t]);
        ctx.positions.push_back(t);
      }
      for (int64_t t = std::max<int64_t>(0, n - 4); t < n; ++t) ctx.logit_rows.push_back(row + t);
    }
    ctx.hidden = backend_->alloc({ctx.num_tokens(), model_->spec().hidden_size}, DType::F32);
    std::vector<Out> outs(which.size());
    ctx.observer = [&](int64_t index, const Tensor& h) {
      for (size_t s = 0; s < which.size(); ++s) {
        const SeqStep& q = ctx.seqs[s];
        Tensor copy = Tensor::empty({q.n_new, h.dim(1)});
        backend_->copy(copy, h.slice_rows(q.row_begin, q.row_begin + q.n_new));
        outs[s].hidden[index] = copy;
      }
    };
    stage.forward(ctx);
    int64_t r = 0;
    for (size_t s = 0; s < which.size(); ++s) {
      const int64_t k = std::min<int64_t>(4, ctx.seqs[s].n_new);
      outs[s].logits = Tensor::empty({k, model_->spec().vocab_size});
      backend_->copy(outs[s].logits, ctx.logits.slice_rows(r, r + k));
      r += k;
    }
    return outs;
  }

  void check(const Out& out, size_t i) {
    // fmt rather than `"p" + std::to_string(i)`: GCC 12 reports a bogus -Wrestrict inside the
    // inlined operator+(const char*, std::string&&) (GCC bugs 105329 / 105651).
    const std::string p = fmt::format("p{}.", i);
    EXPECT_LT(rel_error(out.logits, expected(p + "logits")), kRelTol) << "prompt " << i << " logits";
    EXPECT_EQ(static_cast<int64_t>(out.hidden.size()), model_->spec().num_layers + 1);
    for (const auto& [index, h] : out.hidden)
      EXPECT_LT(rel_error(h, expected(p + "hidden." + std::to_string(index))), kRelTol)
          << "prompt " << i << " hidden state " << index;
  }

  std::vector<Result> greedy(const std::vector<size_t>& which) {
    Stage stage(*model_, *backend_);
    Generator gen(stage, nullptr);
    std::vector<Request> reqs;
    for (size_t w : which) {
      Request r;
      r.input_ids = cases_[w].ids;
      r.max_new_tokens = static_cast<int64_t>(cases_[w].greedy.size());
      reqs.push_back(r);
    }
    return gen.generate(reqs);
  }

  std::filesystem::path dir_;
  std::unique_ptr<Model> model_;
  std::shared_ptr<SafetensorsFile> expected_;
  std::vector<Case> cases_;
  std::unique_ptr<kernels::Backend> backend_;
};

TEST_P(HfReference, InputIdsMatchExpected) {
  for (size_t i = 0; i < cases_.size(); ++i) {
    Tensor ids = expected_->tensor(fmt::format("p{}.input_ids", i));  // see check(): GCC -Wrestrict
    ASSERT_EQ(ids.numel(), static_cast<int64_t>(cases_[i].ids.size()));
    for (int64_t t = 0; t < ids.numel(); ++t) EXPECT_EQ(ids.data<int64_t>()[t], cases_[i].ids[t]);
  }
}

TEST_P(HfReference, LogitsAndHiddenStatesOnePromptAtATime) {
  for (size_t i = 0; i < cases_.size(); ++i) check(forward({i})[0], i);
}

TEST_P(HfReference, LogitsAndHiddenStatesAllPromptsBatched) {
  std::vector<size_t> all;
  for (size_t i = 0; i < cases_.size(); ++i) all.push_back(i);
  const auto outs = forward(all);
  for (size_t i = 0; i < cases_.size(); ++i) check(outs[i], i);
}

TEST_P(HfReference, GreedyTokensOnePromptAtATime) {
  for (size_t i = 0; i < cases_.size(); ++i) EXPECT_EQ(greedy({i})[0].output_ids, cases_[i].greedy) << "prompt " << i;
}

TEST_P(HfReference, GreedyTokensAllPromptsBatched) {
  std::vector<size_t> all;
  for (size_t i = 0; i < cases_.size(); ++i) all.push_back(i);
  const auto res = greedy(all);
  for (size_t i = 0; i < cases_.size(); ++i) EXPECT_EQ(res[i].output_ids, cases_[i].greedy) << "prompt " << i;
}

std::vector<std::string> reference_models() {
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(testing::data_dir() / "hf-reference" / "models"))
    if (e.is_directory()) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

INSTANTIATE_TEST_SUITE_P(Models, HfReference, ::testing::ValuesIn(reference_models()), [](const auto& info) {
  std::string n = info.param;
  for (char& c : n)
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  return n;
});

TEST(HfReferenceData, AllFiveFamiliesPresent) {
  const auto names = reference_models();
  for (const char* family : {"opt", "llama", "mistral", "qwen2", "bloom"})
    EXPECT_TRUE(std::any_of(names.begin(), names.end(), [&](const std::string& n) { return n.rfind(family, 0) == 0; }))
        << family;
}

}  // namespace
}  // namespace tiergen
