// Next-token choice from logits, with transformers' processors in its order: repetition penalty,
// then temperature, top-k, top-p, then a draw (or argmax when not sampling).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace tiergen {

struct SamplingParams {
  bool do_sample = false;           // false: greedy (argmax, lowest id on ties)
  double temperature = 1.0;         // > 0; applies when sampling
  int64_t top_k = 0;                // 0: off
  double top_p = 1.0;               // (0, 1]; 1: off
  double repetition_penalty = 1.0;  // > 0; 1: off (applied in greedy mode too, as HF does)
  uint64_t seed = 0;
};

// Throws InvalidArgumentError naming the parameter when out of range.
void validate(const SamplingParams& p);

// A small, portable PRNG (SplitMix64): the same seed gives the same draws on every platform.
class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}
  uint64_t next();
  double uniform();  // [0, 1)

 private:
  uint64_t state_;
};

// Picks the next token. `logits` (V) is modified in place (penalties, scaling). `context` is every
// token id so far (prompt + generated), for the repetition penalty.
int32_t sample_next(std::span<float> logits, std::span<const int32_t> context, const SamplingParams& p, Rng& rng);

}  // namespace tiergen
