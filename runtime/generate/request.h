// What a caller asks of the Generator and what it gets back.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/generate/sampler.h"

namespace tiergen {

struct Request {
  std::vector<int32_t> input_ids;
  SamplingParams sampling;
  int64_t max_new_tokens = 32;
  std::vector<int32_t> eos_ids;           // stop after emitting any of these (kept in output_ids)
  std::vector<std::string> stop_strings;  // stop once the decoded output contains one (text is cut before it)
};

enum class FinishReason { Length, Eos, Stop };
const char* finish_reason_name(FinishReason r);

struct Result {
  std::vector<int32_t> input_ids;
  std::vector<int32_t> output_ids;
  std::string text;  // decoded output (special tokens skipped), cut at a stop string; empty without a tokenizer
  FinishReason finish = FinishReason::Length;
};

struct GenerateStats {
  int64_t prompt_tokens = 0;
  int64_t generated_tokens = 0;
  // Wall time of the prefill step and of the decode steps, each from building the step's plan to
  // its last token chosen (sampling and bookkeeping included, as a user waits for them).
  double prefill_seconds = 0;
  double decode_seconds = 0;
};

}  // namespace tiergen
