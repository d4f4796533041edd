// The generation API: requests in (token ids, sampling, stop conditions), outputs out. Requests
// are run in blocks of up to `max_batch` sequences: one ragged prefill of all their prompts, then
// decode steps with one new token per unfinished sequence. Each sequence's result equals running it
// alone (same seed): sequences share only the GEMMs, never state.
// Blocks run in waves of the executor's max_in_flight(): each block of a wave owns its own KV cache
// slots and steps on its own, so a pipeline works on one block's step while the host samples
// another's tokens (the micro-batches circulate); results do not depend on the wave size.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "runtime/generate/executor.h"
#include "runtime/generate/request.h"
#include "runtime/tokenizer/tokenizer.h"
#include "stage/stage.h"

namespace tiergen {

class Generator {
 public:
  // `tokenizer` may be null: then no text, and stop strings are rejected.
  Generator(Executor& executor, const Tokenizer* tokenizer, int64_t max_batch = 64);
  // A one-stage pipeline over `stage`; each block of up to `max_batch` sequences runs as GPU batches
  // of `gpu_batch_size` (0: one batch), layer by layer (stage/gpu_batch.h).
  Generator(Stage& stage, const Tokenizer* tokenizer, int64_t max_batch = 64, int64_t gpu_batch_size = 0);

  std::vector<Result> generate(const std::vector<Request>& requests, GenerateStats* stats = nullptr);

  // Called after each decode step with (request index, its result so far); for streaming output.
  std::function<void(size_t, const Result&)> on_token;
  // Called after each step (prefill or decode) with the stats of the generate call so far; for a
  // progress line.
  std::function<void(const GenerateStats&)> on_step;

 private:
  // Runs requests [begin, end) as blocks of max_batch_, all in flight together.
  void run_wave(const std::vector<Request>& requests, size_t begin, size_t end, std::vector<Result>& out,
                GenerateStats& stats);
  std::unique_ptr<Executor> owned_;  // the one-stage pipeline of the Stage constructor
  Executor& exec_;
  const Tokenizer* tokenizer_;
  int64_t max_batch_;
};

}  // namespace tiergen
