#include "launch/request_defaults.h"

namespace tiergen::cli {

SamplingParams resolve_sampling(const GenerationConfig& gc, const SamplingChoice& c) {
  SamplingParams sp;
  sp.do_sample = gc.do_sample.value_or(false);
  if (c.sample) sp.do_sample = true;
  if (c.greedy) sp.do_sample = false;
  sp.temperature = c.temperature.value_or(gc.temperature.value_or(1.0));
  if (sp.temperature == 0.0) {  // temperature 0 means greedy, as most tools read it
    sp.do_sample = false;
    sp.temperature = 1.0;
  }
  sp.top_k = c.top_k.value_or(gc.top_k.value_or(0));
  sp.top_p = c.top_p.value_or(gc.top_p.value_or(1.0));
  sp.repetition_penalty = c.repetition_penalty.value_or(gc.repetition_penalty.value_or(1.0));
  validate(sp);
  return sp;
}

std::vector<int32_t> stop_token_ids(const GenerationConfig& gc, const ModelSpec& spec, bool ignore) {
  std::vector<int32_t> eos;
  if (ignore) return eos;
  const auto& src = gc.eos_token_ids.empty() ? spec.eos_token_ids : gc.eos_token_ids;
  for (int64_t id : src) eos.push_back(static_cast<int32_t>(id));
  return eos;
}

int64_t max_new_tokens(const GenerationConfig& gc, std::optional<int64_t> given) {
  return given.value_or(gc.max_new_tokens.value_or(32));
}

}  // namespace tiergen::cli
