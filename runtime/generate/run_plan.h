// Everything known about a generation run before it starts: whether its requests are valid for the
// model, the KV cache and largest step it needs, and the memory that takes. The command line checks
// these before loading weights; the Generator checks the requests again and sizes its cache from the
// same RunShape, so the plan and the run cannot disagree.
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "runtime/generate/request.h"
#include "runtime/model/spec.h"
#include "runtime/policy/memory_plan.h"
#include "runtime/policy/offload_policy.h"
#include "runtime/tokenizer/tokenizer.h"

namespace tiergen {

// InvalidArgumentError naming the request (by index) and the limit it breaks: no tokens, negative
// max_new_tokens, a token id outside the vocabulary, prompt + new tokens beyond the model's context
// (max_position_embeddings, for every family that has one), stop strings without a tokenizer, or
// sampling parameters out of range.
// InvalidArgumentError when `prompt` + `max_new_tokens` exceed the model's context; `which` names
// the request in the message.
void check_context(const ModelSpec& spec, int64_t prompt, int64_t max_new_tokens, const std::string& which);

void validate_requests(const ModelSpec& spec, std::span<const Request> requests, bool have_tokenizer);

// FormatError naming the tokenizer file when its ids reach past the model's vocabulary: prompts
// would hold ids the embedding table lacks. (A model vocabulary larger than the tokenizer's is
// common, padded to a multiple of 64; ids there decode to nothing, as in Hugging Face tokenizers.)
void check_tokenizer(const Tokenizer& tokenizer, const ModelSpec& spec);

struct RunShape {
  int64_t cache_slots = 0;      // sequences held at once: the largest block, or a wave of blocks
  int64_t cache_capacity = 0;   // tokens per slot: the longest prompt + max_new_tokens of any request
  int64_t max_step_tokens = 0;  // rows of the largest step: a block's prefill, all its prompt tokens
  int64_t max_logit_rows = 0;   // sequences in the largest block
  int64_t block_slots = 0;      // slots of each block of a wave (0: cache_slots, one block)
};

// Requests run in blocks of `max_batch` in order, `micro_batches` blocks in flight at once, each
// in max_batch slots of its own (Generator::generate).
RunShape run_shape(std::span<const Request> requests, int64_t max_batch, int micro_batches = 1);
// Blocks of `sequences` prompts of `prompt_len` tokens, each generating `gen_len`, `micro_batches`
// blocks in flight in slots of their own, as Generator::generate lays them out (bench, plan).
RunShape uniform_run_shape(int64_t sequences, int64_t prompt_len, int64_t gen_len, int micro_batches = 1);

// Bytes of a KV cache of `slots` x `capacity` tokens over all of the model's layers.
uint64_t kv_cache_bytes(const ModelSpec& spec, int64_t slots, int64_t capacity, DType dtype = DType::F32);

// Where the weights come from: generated in host memory (dummy weights) or mapped from a checkpoint.
enum class WeightHome { Generated, Mapped };

// Where a run computes and in which dtypes.
struct ComputePlacement {
  Tier tier = Tier::Cpu;       // Cpu, or Gpu (weights uploaded, cache and activations there)
  DType weights = DType::F32;  // as held by the compute tier (the checkpoint's dtype on the CPU)
  DType activations = DType::F32;
  DType kv_cache = DType::F32;
};

// The memory of a generation run: weights (their host copy, and the GPU copy when computing there),
// KV cache, the largest step's activations and the logits. With an offloading policy, the weights'
// and the KV cache's shares by tier (decoder layers only: the embedding and the head stay on the
// compute tier), the compute buffers they stream through, and the disk they take. A pipeline
// stage's plan is of its decoder layers (spec.num_layers) and its `ends`: the logits are the head's.
MemoryPlan plan_generation(const ModelSpec& spec, WeightHome weights, DType stored_dtype,
                           const ComputePlacement& compute, const RunShape& shape,
                           const OffloadPolicy* policy = nullptr, ModelEnds ends = {});

}  // namespace tiergen
