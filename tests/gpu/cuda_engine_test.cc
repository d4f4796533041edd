// The GPU engine against the Hugging Face reference (tests/data/hf-reference), every model, in each
// dtype a run can choose (--dtype):
//  - float32: the CPU oracle's own bounds: logits and every hidden state within 1e-4 relative error,
//    greedy tokens identical, one prompt at a time and batched.
//  - float16 / bfloat16: teacher-forced logits (the prompt's last positions) within the tolerance
//    derived below, and greedy tokens identical up to the first step where the f32 reference's
//    top-2 margin is within that tolerance (a near-tie may flip; the test reports where it did).
// Skips where no GPU is visible.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <iostream>

#include "kernels/backend.h"
#include "runtime/engine/model.h"
#include "runtime/generate/generator.h"
#include "stage/stage.h"
#include "tests/testutil/hf_reference.h"
#include "tests/testutil/testutil.h"

namespace tiergen {
namespace {

using testing::rel_error;

struct EngineCase {
  std::string model;
  DType dtype;
};

void PrintTo(const EngineCase& c, std::ostream* os) { *os << "{" << c.model << ", " << dtype_name(c.dtype) << "}"; }

std::string case_name(const ::testing::TestParamInfo<EngineCase>& info) {
  return testing::test_name(info.param.model) + "_" + dtype_name(info.param.dtype);
}

// Unit roundoff of the compute dtype.
double unit_roundoff(DType t) { return t == DType::F16 ? 0x1p-11 : t == DType::BF16 ? 0x1p-8 : 0x1p-24; }

// Error model for 16-bit runs. Every activation the engine stores is rounded once to the compute
// dtype (relative error <= u), as are the weights when the checkpoint's 16-bit type differs. A
// decoder layer stores about 12 such tensors on the residual path (normed input, q, k, v, attention
// output, projection, the residual sum, normed input, gate, up, product, down projection), plus
// the embedding and the final norm. Roundings are independent, so their relative errors add in
// quadrature: sqrt(12 L + 4) u. The attention softmax and the norms are Lipschitz with constants of
// order one on these inputs, but they can amplify a relative error by the ratio of a vector's norm
// to its smallest entries; the factor 8 bounds that amplification on the reference models (each
// run prints the measured error against it). Relative, in ||.||_2 over the logits of a position.
double logit_tolerance(DType dt, int64_t layers) {
  if (dt == DType::F32) return 1e-4;  // tests/data/README.md: f32 implementation
  return 8.0 * std::sqrt(12.0 * static_cast<double>(layers) + 4.0) * unit_roundoff(dt);
}

class CudaEngine : public ::testing::TestWithParam<EngineCase> {
 protected:
  void SetUp() override {
    if (!kernels::cuda_available()) GTEST_SKIP() << "no CUDA device is visible (or this build has no CUDA backend)";
    ref_ = testing::load_hf_reference(GetParam().model);
    gpu_ = kernels::make_cuda_backend(0);
    model_ = Model::load(ref_.dir);
    model_->place(*gpu_, GetParam().dtype);
    tol_ = logit_tolerance(GetParam().dtype, model_->spec().num_layers);
  }
  StageDtypes dtypes() const { return {GetParam().dtype, GetParam().dtype}; }

  std::vector<Result> greedy(const std::vector<size_t>& which) {
    Stage stage(*model_, *gpu_, dtypes());
    Generator gen(stage, nullptr);
    return gen.generate(testing::greedy_requests(ref_, which));
  }

  std::vector<size_t> all() const { return testing::all_cases(ref_); }

  testing::HfReferenceModel ref_;
  std::unique_ptr<kernels::Backend> gpu_;
  std::unique_ptr<Model> model_;
  double tol_ = 0;
};

TEST_P(CudaEngine, TeacherForcedLogitsAndHiddenStates) {
  Stage stage(*model_, *gpu_, dtypes());
  std::vector<std::vector<int32_t>> prompts;
  for (const auto& c : ref_.cases) prompts.push_back(c.ids);
  // Alone and all batched together: a sequence's result must not depend on its batch-mates.
  for (bool batched : {false, true}) {
    std::vector<testing::PrefillOut> outs;
    if (batched) {
      outs = testing::prefill(stage, prompts);
    } else {
      for (const auto& p : prompts) outs.push_back(testing::prefill(stage, {p})[0]);
    }
    double worst = 0;
    for (size_t i = 0; i < outs.size(); ++i) {
      const std::string p = fmt::format("p{}.", i);
      const double err = rel_error(outs[i].logits, ref_.tensor(p + "logits"));
      worst = std::max(worst, err);
      EXPECT_LT(err, tol_) << "prompt " << i << " logits" << (batched ? " (batched)" : "");
      if (GetParam().dtype == DType::F32) {
        for (const auto& [index, h] : outs[i].hidden) {
          EXPECT_LT(rel_error(h, ref_.tensor(p + "hidden." + std::to_string(index))), tol_)
              << "prompt " << i << " hidden state " << index;
        }
      }
    }
    std::cout << "[ engine   ] " << GetParam().model << " " << dtype_name(GetParam().dtype)
              << (batched ? " batched" : " alone") << ": logits rel error " << worst << " (tolerance " << tol_ << ", "
              << worst / tol_ << " of it)\n";
  }
}

// The f32 reference's top-2 margin of the logits at every generated position of the reference's
// greedy continuation, teacher-forced through the CPU engine (which equals transformers within 1e-4).
std::vector<double> reference_margins(const Model& cpu_model, const testing::HfCase& c) {
  auto cpu = kernels::make_cpu_backend();
  Stage stage(cpu_model, *cpu);
  std::vector<int32_t> seq = c.ids;
  seq.insert(seq.end(), c.greedy.begin(), c.greedy.end() - 1);
  const auto out = testing::prefill(stage, {seq}, static_cast<int64_t>(c.greedy.size()));
  std::vector<double> margins;
  const int64_t V = out[0].logits.dim(1);
  for (int64_t r = 0; r < out[0].logits.dim(0); ++r) {
    std::vector<float> row(out[0].logits.data<float>() + r * V, out[0].logits.data<float>() + (r + 1) * V);
    std::partial_sort(row.begin(), row.begin() + 2, row.end(), std::greater<>());
    double norm = 0;
    for (int64_t v = 0; v < V; ++v) norm += std::pow(out[0].logits.data<float>()[r * V + v], 2.0);
    // Relative to the row's rms, as the tolerance is: a flip needs |err| to reach the margin.
    margins.push_back((row[0] - row[1]) / std::sqrt(norm / static_cast<double>(V)));
  }
  return margins;
}

TEST_P(CudaEngine, GreedyTokensAgreeWhereTheReferenceIsDecided) {
  const auto cpu_model = Model::load(ref_.dir);
  for (bool batched : {false, true}) {
    std::vector<Result> res;
    if (batched) {
      res = greedy(all());
    } else {
      for (size_t i = 0; i < ref_.cases.size(); ++i) res.push_back(greedy({i})[0]);
    }
    for (size_t i = 0; i < ref_.cases.size(); ++i) {
      const auto& want = ref_.cases[i].greedy;
      const auto& got = res[i].output_ids;
      ASSERT_EQ(got.size(), want.size());
      if (GetParam().dtype == DType::F32) {
        EXPECT_EQ(got, want) << "prompt " << i;
        continue;
      }
      const auto first_diff = std::mismatch(got.begin(), got.end(), want.begin()).first - got.begin();
      if (first_diff == static_cast<int64_t>(got.size())) continue;
      // A flip is allowed only where the reference's margin (in units of the logits' rms) is within
      // what the tolerance lets the logits move: tol * sqrt(V) rms-units bounds any one logit's error
      // only loosely, so use the per-element bound 2 * tol * sqrt(V) on the difference of two logits.
      const double margin = reference_margins(*cpu_model, ref_.cases[i])[static_cast<size_t>(first_diff)];
      const double V = static_cast<double>(model_->spec().vocab_size);
      std::cout << "[ engine   ] " << GetParam().model << " " << dtype_name(GetParam().dtype) << " prompt " << i
                << (batched ? " batched" : " alone") << ": greedy diverges at step " << first_diff
                << " where the reference margin is " << margin << " rms\n";
      EXPECT_LT(margin, 2.0 * tol_ * std::sqrt(V)) << "prompt " << i << ": token " << first_diff << " flipped";
    }
  }
}

std::vector<EngineCase> engine_cases() {
  std::vector<EngineCase> cases;
  for (const auto& m : testing::hf_reference_models())
    for (DType dt : {DType::F32, DType::F16, DType::BF16}) cases.push_back({m, dt});
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Cuda, CudaEngine, ::testing::ValuesIn(engine_cases()), case_name);

}  // namespace
}  // namespace tiergen
