// How a request's unset parameters are filled in, one rule for `tiergen generate` and for the
// requests a worker pipeline runs: what the request (or flag) gives, else the model's
// generation_config.json, else the runtime's default. So a batch line and `tiergen generate` with
// the same prompt, parameters and seed give the same output.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "runtime/generate/sampler.h"
#include "runtime/model/spec.h"

namespace tiergen::cli {

struct SamplingChoice {
  std::optional<double> temperature, top_p, repetition_penalty;
  std::optional<int64_t> top_k;
  bool greedy = false, sample = false;  // force one or the other
};

// Checked (validate): InvalidArgumentError for values out of range. Temperature 0 means greedy.
SamplingParams resolve_sampling(const GenerationConfig& gc, const SamplingChoice& c);
// The tokens a sequence stops at: generation_config.json's, else config.json's; none with `ignore`.
std::vector<int32_t> stop_token_ids(const GenerationConfig& gc, const ModelSpec& spec, bool ignore);
// Tokens to generate: `given`, else generation_config.json's max_new_tokens, else 32.
int64_t max_new_tokens(const GenerationConfig& gc, std::optional<int64_t> given);

}  // namespace tiergen::cli
