#include "runtime/generate/run_plan.h"

#include <algorithm>
#include <limits>

#include "runtime/core/error.h"
#include "runtime/core/units.h"

namespace tiergen {

void check_context(const ModelSpec& spec, int64_t prompt, int64_t max_new_tokens, const std::string& which) {
  // Past the trained context a learned position table ends and RoPE extrapolates into garbage:
  // refuse up front rather than fail (or degrade) halfway through a batch.
  if (spec.max_position_embeddings <= 0 || max_new_tokens <= spec.max_position_embeddings - prompt) return;
  const int64_t room = spec.max_position_embeddings - prompt;
  throw InvalidArgumentError(
      which + ": " + std::to_string(prompt) + " prompt tokens + " + std::to_string(max_new_tokens) +
      " new tokens exceed the model's context of " + std::to_string(spec.max_position_embeddings) + " tokens" +
      (room > 0 ? " (at most " + std::to_string(room) + " new tokens fit: lower --max-new-tokens)"
                : " (the prompt alone fills it: shorten the prompt)"));
}

void validate_requests(const ModelSpec& spec, std::span<const Request> requests, bool have_tokenizer) {
  for (size_t i = 0; i < requests.size(); ++i) {
    const Request& r = requests[i];
    const std::string which = "prompt " + std::to_string(i);
    if (r.input_ids.empty()) throw InvalidArgumentError(which + " has no tokens");
    if (r.max_new_tokens < 0)
      throw InvalidArgumentError(which + ": max new tokens must be >= 0, got " + std::to_string(r.max_new_tokens));
    check_context(spec, static_cast<int64_t>(r.input_ids.size()), r.max_new_tokens, which);
    for (int32_t id : r.input_ids)
      if (id < 0 || id >= spec.vocab_size)
        throw InvalidArgumentError(which + ": token id " + std::to_string(id) +
                                   " is outside the model's vocabulary [0, " + std::to_string(spec.vocab_size) + ")");
    if (!r.stop_strings.empty() && !have_tokenizer)
      throw InvalidArgumentError(which + ": stop strings need a tokenizer to decode the output");
    validate(r.sampling);
  }
}

void check_tokenizer(const Tokenizer& tokenizer, const ModelSpec& spec) {
  if (tokenizer.vocab_size() > spec.vocab_size)
    throw FormatError(tokenizer.origin() + ": token ids go up to " + std::to_string(tokenizer.vocab_size() - 1) +
                      ", beyond the model's vocabulary of " + std::to_string(spec.vocab_size) +
                      " (config.json vocab_size): this tokenizer is not the model's");
}

RunShape run_shape(std::span<const Request> requests, int64_t max_batch, int micro_batches) {
  if (max_batch <= 0) throw InvalidArgumentError("batch size must be positive, got " + std::to_string(max_batch));
  if (micro_batches <= 0)
    throw InvalidArgumentError("micro-batch count must be positive, got " + std::to_string(micro_batches));
  RunShape s;
  const size_t step = static_cast<size_t>(max_batch);
  for (size_t b = 0; b < requests.size(); b += step) {
    const size_t e = std::min(requests.size(), b + step);
    int64_t prompt_tokens = 0;
    for (size_t i = b; i < e; ++i) {
      const int64_t prompt = static_cast<int64_t>(requests[i].input_ids.size());
      prompt_tokens += prompt;
      // Saturating: an absurd max_new_tokens must reach the memory check as "too much", not wrap.
      const int64_t room = std::numeric_limits<int64_t>::max() - prompt;
      s.cache_capacity = std::max(s.cache_capacity, prompt + std::min(requests[i].max_new_tokens, room));
    }
    s.cache_slots = std::max<int64_t>(s.cache_slots, static_cast<int64_t>(e - b));
    s.max_step_tokens = std::max(s.max_step_tokens, prompt_tokens);
    s.max_logit_rows = std::max<int64_t>(s.max_logit_rows, static_cast<int64_t>(e - b));
  }
  // Several blocks in flight: each owns max_batch slots, as Generator::run_wave lays them out.
  const int64_t blocks = (static_cast<int64_t>(requests.size()) + max_batch - 1) / max_batch;
  const int64_t in_flight = std::min<int64_t>(blocks, micro_batches);
  s.block_slots = in_flight > 1 ? max_batch : s.cache_slots;
  if (in_flight > 1) s.cache_slots = in_flight * max_batch;
  return s;
}

RunShape uniform_run_shape(int64_t sequences, int64_t prompt_len, int64_t gen_len, int micro_batches) {
  return RunShape{sequences * micro_batches, prompt_len + gen_len, sequences * prompt_len, sequences, sequences};
}

namespace {

// a * b * c in 64 bits, saturating instead of wrapping.
uint64_t mul_sat(uint64_t a, uint64_t b, uint64_t c = 1) {
  uint64_t ab = 0, abc = 0;
  if (__builtin_mul_overflow(a, b, &ab) || __builtin_mul_overflow(ab, c, &abc))
    return std::numeric_limits<uint64_t>::max();
  return abc;
}

std::string count(int64_t n, const char* noun) { return std::to_string(n) + " " + noun + (n == 1 ? "" : "s"); }

// "37.5%", "20%".
std::string format_percent(double p) {
  std::string s = std::to_string(p);
  s.erase(s.find_last_not_of('0') + 1);
  if (!s.empty() && s.back() == '.') s.pop_back();
  return s + "%";
}

uint64_t u(int64_t v) { return static_cast<uint64_t>(std::max<int64_t>(v, 0)); }

}  // namespace

uint64_t kv_cache_bytes(const ModelSpec& spec, int64_t slots, int64_t capacity, DType dtype) {
  const uint64_t per_token =
      mul_sat(2 * u(spec.num_kv_heads) * u(spec.head_dim), u(spec.num_layers), dtype_size(dtype));
  return mul_sat(per_token, u(slots), u(capacity));
}

MemoryPlan plan_generation(const ModelSpec& spec, WeightHome weights, DType stored_dtype,
                           const ComputePlacement& compute, const RunShape& shape, const OffloadPolicy* policy,
                           ModelEnds ends) {
  MemoryPlan plan;
  const bool gpu = compute.tier == Tier::Gpu;
  const int64_t decoder = spec.num_layers * spec.layer_params();
  const int64_t held = decoder + spec.end_params(ends);  // the parameters this run (or stage) holds
  const std::string params = std::to_string(held) + " parameters";
  const Tier loaded = weights == WeightHome::Generated ? Tier::Cpu : Tier::Mmap;
  const uint64_t stored = mul_sat(u(held), dtype_size(stored_dtype));
  const uint64_t on_compute = mul_sat(u(held), dtype_size(compute.weights));
  if (!policy) {
    plan.add("weights", loaded, stored, std::string(dtype_name(stored_dtype)) + ", " + params);
    if (gpu)
      plan.add("weights on the GPU", Tier::Gpu, on_compute, std::string(dtype_name(compute.weights)) + ", " + params);
  } else {
    // Decoder layers are placed by the shares; the embedding and the head stay where compute is.
    const uint64_t layer = mul_sat(u(spec.layer_params()), dtype_size(compute.weights));
    // A streamed buffer holds the larger half of a decoder layer: its attention or its MLP.
    const uint64_t mlp = mul_sat(u((spec.gated_mlp ? 3 : 2) * spec.hidden_size) * u(spec.intermediate_size),
                                 dtype_size(compute.weights));
    const uint64_t buffers = mul_sat(std::max(mlp, layer - std::min(layer, mlp)), kStreamedWeightBuffers);
    const std::string buffers_why =
        std::to_string(kStreamedWeightBuffers) + " attention or MLP layers streamed through";
    const uint64_t dec = mul_sat(u(decoder), dtype_size(compute.weights));
    auto share = [](uint64_t bytes, double pct) {
      return static_cast<uint64_t>(static_cast<double>(bytes) * pct / 100.0);
    };
    const TierShares& w = policy->weights;
    const uint64_t rest = on_compute - std::min(on_compute, dec);
    const std::string ends_held = ends.embedding && ends.head ? "embeddings and head, and "
                                  : ends.embedding            ? "embeddings, and "
                                  : ends.head                 ? "head, and "
                                                              : "";
    if (gpu) {
      plan.add("weights on the GPU", Tier::Gpu, rest + share(dec, w.gpu),
               ends_held + format_percent(w.gpu) + " of the decoder layers");
      if (w.gpu < 100) plan.add("weight buffers", Tier::Gpu, buffers, buffers_why);
      if (w.cpu > 0)
        plan.add("weights in host memory", policy->pin_weight ? Tier::PinnedCpu : Tier::Cpu, share(dec, w.cpu),
                 format_percent(w.cpu) + " of the decoder layers");
      // Generated weights are placed layer by layer as they are made; mapped ones stay mapped.
      plan.add("weights", loaded, weights == WeightHome::Generated ? std::min(stored, 2 * layer) : stored,
               weights == WeightHome::Generated ? "one layer at a time while loading"
                                                : std::string(dtype_name(stored_dtype)) + ", " + params);
    } else {
      const double memory = w.gpu + w.cpu;
      plan.add("weights", loaded, weights == WeightHome::Generated ? rest + share(dec, memory) + layer : stored,
               weights == WeightHome::Generated
                   ? ends_held + format_percent(memory) + " of the decoder layers, and one layer while loading"
                   : std::string(dtype_name(stored_dtype)) + ", " + params);
      if (w.disk() > 0) plan.add("weight buffers", Tier::Cpu, buffers, buffers_why);
    }
    if (w.disk() > 0)
      plan.add("weights on disk", Tier::Disk, share(dec, w.disk()),
               format_percent(w.disk()) + " of the decoder layers");
  }
  const uint64_t per_token = kv_cache_bytes(spec, 1, 1, compute.kv_cache);
  const uint64_t kv_bytes = kv_cache_bytes(spec, shape.cache_slots, shape.cache_capacity, compute.kv_cache);
  const std::string kv_shape = count(shape.cache_slots, "sequence") + " x " + count(shape.cache_capacity, "token") +
                               " x " + format_bytes(per_token);
  // By the policy: the GPU's share where compute is (on a CPU, the GPU's and the CPU's), a GPU
  // run's CPU share in host memory (--cpu-cache-compute), the rest on disk.
  const double kv_disk = policy ? policy->cache.disk() : 0.0;
  const double kv_host = policy && gpu ? policy->cache.cpu : 0.0;
  auto part = [&](double pct) { return static_cast<uint64_t>(static_cast<double>(kv_bytes) * pct / 100.0); };
  if (kv_disk <= 0 && kv_host <= 0) {
    plan.add("KV cache", compute.tier, kv_bytes, kv_shape);
  } else {
    const double on_compute = 100.0 - kv_disk - kv_host;
    if (on_compute > 0)
      plan.add("KV cache", compute.tier, part(on_compute), format_percent(on_compute) + " of " + kv_shape);
    if (kv_host > 0)
      plan.add("KV cache in host memory", Tier::Cpu, part(kv_host), format_percent(kv_host) + " of " + kv_shape);
    if (kv_disk > 0) {
      plan.add("KV cache on disk", Tier::Disk, part(kv_disk), format_percent(kv_disk) + " of " + kv_shape);
      const int64_t batch = std::min(shape.cache_slots, policy->gpu_batch_size);
      plan.add("KV cache buffers", compute.tier,
               mul_sat(2, kv_cache_bytes(spec, batch, shape.cache_capacity, compute.kv_cache)),
               "2 GPU batches of " + count(batch, "sequence"));
    }
  }
  // One decoder layer's activations at the largest step (earlier layers' are released): attention's
  // normed input, q, k, v, its output and projection, the MLP's normed input, gate, up and output,
  // and the hidden state itself.
  const int64_t C = spec.hidden_size, q = spec.num_heads * spec.head_dim, kv = spec.num_kv_heads * spec.head_dim;
  const uint64_t per_row =
      dtype_size(compute.activations) * (5 * u(C) + 2 * u(q) + 2 * u(kv) + 2 * u(spec.intermediate_size));
  // A block of several GPU batches keeps every batch's hidden state between layers but the
  // temporaries of one batch at a time; with the KV cache in host memory (--cpu-cache-compute) also
  // every batch's new keys and values, which the Store lane copies out until the next layer.
  // A step is one block's (a wave of several blocks in flight steps them one at a time).
  const int64_t block = shape.block_slots > 0 ? shape.block_slots : shape.cache_slots;
  const int64_t batch = policy ? std::min(block, policy->gpu_batch_size) : block;
  if (policy && batch < block && block > 0) {
    const int64_t batch_rows = (shape.max_step_tokens * batch + block - 1) / block;
    const uint64_t held = dtype_size(compute.activations) * (u(C) + (gpu && policy->cpu_cache_compute ? 2 * u(kv) : 0));
    plan.add("activations", compute.tier,
             mul_sat(held, u(shape.max_step_tokens)) +
                 mul_sat(per_row - dtype_size(compute.activations) * u(C), u(batch_rows)),
             "hidden states of " + count(shape.max_step_tokens, "token") + ", and one GPU batch's " +
                 std::to_string(batch_rows) + " in the largest step");
  } else {
    plan.add("activations", compute.tier, mul_sat(per_row, u(shape.max_step_tokens)),
             count(shape.max_step_tokens, "token") + " in the largest step");
  }
  // f32 logits where they are computed, and their host copy for the sampler (the head's stage).
  if (!ends.head) return plan;
  const uint64_t logits = mul_sat(u(shape.max_logit_rows), u(spec.vocab_size), 4);
  plan.add("logits", compute.tier, logits,
           count(shape.max_logit_rows, "row") + " x " + std::to_string(spec.vocab_size));
  plan.add("logits on the host", Tier::Cpu, logits);
  return plan;
}

}  // namespace tiergen
