#include "tests/testutil/hf_reference.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "tests/testutil/testutil.h"

namespace tiergen::testing {

HfReferenceModel load_hf_reference(const std::string& name) {
  HfReferenceModel m;
  m.dir = hf_model_dir(name);
  m.expected = SafetensorsFile::open(m.dir / "expected.safetensors");
  std::ifstream f(m.dir / "expected.json");
  const nlohmann::json j = nlohmann::json::parse(f);
  for (const auto& c : j.at("cases"))
    m.cases.push_back({c.at("input_ids").get<std::vector<int32_t>>(), c.at("greedy").get<std::vector<int32_t>>()});
  return m;
}

std::vector<std::string> hf_reference_models() {
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(data_dir() / "hf-reference" / "models"))
    if (e.is_directory()) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

std::string test_name(std::string name) {
  for (char& c : name)
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  return name;
}

std::vector<Request> greedy_requests(const HfReferenceModel& ref, const std::vector<size_t>& which) {
  std::vector<Request> reqs;
  for (size_t w : which) {
    Request r;
    r.input_ids = ref.cases[w].ids;
    r.max_new_tokens = static_cast<int64_t>(ref.cases[w].greedy.size());
    reqs.push_back(r);
  }
  return reqs;
}

std::vector<size_t> all_cases(const HfReferenceModel& ref) {
  std::vector<size_t> v;
  for (size_t i = 0; i < ref.cases.size(); ++i) v.push_back(i);
  return v;
}

double rel_error(const Tensor& out, const Tensor& ref) {
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

namespace {

// Rows [begin, end) of a backend tensor as a host f32 tensor.
Tensor host_rows(kernels::Backend& be, const Tensor& t, int64_t begin, int64_t end) {
  Tensor host = Tensor::empty({end - begin, t.dim(1)}, t.dtype());
  be.copy(host, t.slice_rows(begin, end));
  return host.to_f32();
}

}  // namespace

std::vector<PrefillOut> prefill(Stage& stage, const std::vector<std::vector<int32_t>>& prompts, int64_t last) {
  kernels::Backend& be = stage.backend();
  int64_t cap = 1;
  for (const auto& ids : prompts) cap = std::max<int64_t>(cap, static_cast<int64_t>(ids.size()));
  stage.allocate_cache(static_cast<int64_t>(prompts.size()), cap);
  ForwardContext ctx;
  for (size_t s = 0; s < prompts.size(); ++s) {
    const int64_t n = static_cast<int64_t>(prompts[s].size());
    const int64_t row = ctx.plan.add_sequence(prompts[s], 0, static_cast<int64_t>(s));
    for (int64_t t = std::max<int64_t>(0, n - last); t < n; ++t)
      ctx.plan.logit_rows.push_back(static_cast<int32_t>(row + t));
  }
  std::vector<PrefillOut> outs(prompts.size());
  ctx.observer = [&](int64_t index, const Tensor& h) {
    for (size_t s = 0; s < prompts.size(); ++s) {
      const int64_t begin = ctx.plan.q_begin[s];
      outs[s].hidden[index] = host_rows(be, h, begin, begin + ctx.plan.q_len[s]);
    }
  };
  stage.forward(ctx);
  int64_t r = 0;
  for (size_t s = 0; s < prompts.size(); ++s) {
    const int64_t k = std::min<int64_t>(last, ctx.plan.q_len[s]);
    outs[s].logits = host_rows(be, ctx.logits, r, r + k);
    r += k;
  }
  return outs;
}

}  // namespace tiergen::testing
