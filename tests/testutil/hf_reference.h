// The Hugging Face reference data (tests/data/hf-reference, see its README) and a ragged prefill that
// returns what it is compared with: every hidden state and the last logits of each prompt, as host
// f32 tensors, whatever backend and dtype the stage computes in. Shared by the CPU oracle test and
// the GPU engine test.
#pragma once

#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "runtime/generate/request.h"
#include "runtime/model/safetensors.h"
#include "stage/stage.h"

namespace tiergen::testing {

struct HfCase {
  std::vector<int32_t> ids;
  std::vector<int32_t> greedy;  // 12 tokens of argmax decoding, one prompt at a time
};

struct HfReferenceModel {
  std::filesystem::path dir;
  std::vector<HfCase> cases;
  std::shared_ptr<SafetensorsFile> expected;
  // expected.safetensors' tensor `name` widened to f32.
  Tensor tensor(const std::string& name) const { return expected->tensor(name).to_f32(); }
};

HfReferenceModel load_hf_reference(const std::string& name);
// The model folders under tests/data/hf-reference/models, sorted.
std::vector<std::string> hf_reference_models();
// A gtest-safe version of a model name ("llama-tiny-gqa" -> "llama_tiny_gqa").
std::string test_name(std::string name);

// ||out - ref|| / ||ref||; infinity when out has a non-finite value or the shapes differ.
double rel_error(const Tensor& out, const Tensor& ref);

// Requests that decode each chosen case greedily for as many tokens as the reference did.
std::vector<Request> greedy_requests(const HfReferenceModel& ref, const std::vector<size_t>& which);
// 0 .. cases - 1.
std::vector<size_t> all_cases(const HfReferenceModel& ref);

struct PrefillOut {
  std::map<int64_t, Tensor> hidden;  // index -> (seq, C) f32: 0 the embedding, k after layer k
  Tensor logits;                     // (min(last, seq), V) f32: the last positions' logits
};
// One ragged prefill of all `prompts` through `stage` (slots 0..n-1, cache sized for them).
std::vector<PrefillOut> prefill(Stage& stage, const std::vector<std::vector<int32_t>>& prompts, int64_t last = 4);

}  // namespace tiergen::testing
