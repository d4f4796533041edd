#include "runtime/policy/roofline.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "runtime/core/error.h"

namespace tiergen {

int64_t gemm_params_per_token(const ModelSpec& spec) {
  const int64_t h = spec.hidden_size, q = spec.num_heads * spec.head_dim, kv = spec.num_kv_heads * spec.head_dim;
  const int64_t mlp = (spec.gated_mlp ? 3 : 2) * h * spec.intermediate_size;
  int64_t n = spec.num_layers * (h * q + 2 * h * kv + q * h + mlp);
  n += spec.vocab_size * spec.word_embed_proj_dim;                           // LM head
  if (spec.word_embed_proj_dim != h) n += 2 * h * spec.word_embed_proj_dim;  // OPT project_in/out
  return n;
}

double kv_bytes_per_token(const ModelSpec& spec, DType kv_cache) {
  return 2.0 * static_cast<double>(spec.num_layers * spec.num_kv_heads * spec.head_dim) *
         static_cast<double>(dtype_size(kv_cache));
}

double decode_weight_bytes(const ModelSpec& spec, DType weights) {
  // Everything but the input embedding tables, which a step reads one row per sequence of; the LM
  // head is a separate table only when untied, and read whole either way.
  int64_t n = spec.num_params() - spec.vocab_size * spec.word_embed_proj_dim;
  if (!spec.tie_word_embeddings) n -= spec.vocab_size * spec.word_embed_proj_dim;
  if (spec.position == PositionKind::Learned)
    n -= (spec.max_position_embeddings + spec.position_offset) * spec.hidden_size;
  n += spec.vocab_size * spec.word_embed_proj_dim;  // the LM head
  return static_cast<double>(n) * static_cast<double>(dtype_size(weights));
}

namespace {

// The bound's throughputs from its phase times.
void set_throughputs(RooflineBound& b, const Workload& w) {
  const auto B = static_cast<double>(w.batch), P = static_cast<double>(w.prompt_len);
  b.total_throughput = B * static_cast<double>(w.gen_len) / b.seconds();
  b.prefill_throughput = B * P / b.prefill_seconds;
  b.decode_throughput = b.decode_seconds > 0 ? B * static_cast<double>(w.gen_len - 1) / b.decode_seconds : 0;
}

}  // namespace

StepCost decode_step_cost(const ModelSpec& spec, int64_t batch, int64_t context, DType weights, DType kv_cache,
                          double streamed_share, bool cache_on_host, const DeviceRates& rates) {
  auto positive = [](double r) { return r > 0 && std::isfinite(r); };
  if (!positive(rates.read_bytes) || (streamed_share > 0 && !positive(rates.link_bytes)) ||
      (cache_on_host && !positive(rates.host_read_bytes)))
    throw InvalidArgumentError("decode step cost: the rates it needs must be positive (read " +
                               std::to_string(rates.read_bytes) + ", link " + std::to_string(rates.link_bytes) +
                               ", host read " + std::to_string(rates.host_read_bytes) + " B/s)");
  if (spec.num_layers <= 0) throw InvalidArgumentError("decode step cost: a model without decoder layers");
  const auto L = static_cast<double>(spec.num_layers);
  const double head = static_cast<double>(spec.vocab_size * spec.word_embed_proj_dim);
  const double layer = (static_cast<double>(gemm_params_per_token(spec)) - head) / L * dtype_size(weights);
  const double cache =
      static_cast<double>(batch) * static_cast<double>(context) * kv_bytes_per_token(spec, kv_cache) / L;
  StepCost c;
  c.per_layer = (layer + (cache_on_host ? 0.0 : cache)) / rates.read_bytes;
  if (streamed_share > 0) c.per_layer = std::max(c.per_layer, streamed_share * layer / rates.link_bytes);
  if (cache_on_host) c.per_layer = std::max(c.per_layer, cache / rates.host_read_bytes);
  c.head = head * dtype_size(weights) / rates.read_bytes;
  return c;
}

RooflineBound roofline_bound(const ModelSpec& spec, const Workload& w, const DeviceRates& rates) {
  if (!(rates.gemm_flops > 0) || !(rates.read_bytes > 0) || !std::isfinite(rates.gemm_flops) ||
      !std::isfinite(rates.read_bytes))
    throw InvalidArgumentError("roofline: rates must be positive (GEMM " + std::to_string(rates.gemm_flops) +
                               " FLOP/s, read " + std::to_string(rates.read_bytes) + " B/s)");
  if (w.batch <= 0 || w.prompt_len <= 0 || w.gen_len <= 0)
    throw InvalidArgumentError("roofline: an empty workload (batch " + std::to_string(w.batch) + ", prompt " +
                               std::to_string(w.prompt_len) + ", gen " + std::to_string(w.gen_len) + ")");
  auto positive = [](double r) { return r > 0 && std::isfinite(r); };
  if (w.streamed_weight_bytes > 0 && !positive(rates.link_bytes))
    throw InvalidArgumentError("roofline: streamed weights need the host link's rate");
  if (w.cache_on_host && !positive(rates.host_read_bytes))
    throw InvalidArgumentError("roofline: a KV cache in host memory needs the host's read rate");
  if (w.disk_weight_bytes > 0 && !positive(rates.disk_read_bytes))
    throw InvalidArgumentError("roofline: weights on disk need the disk's read rate");
  const auto B = static_cast<double>(w.batch), P = static_cast<double>(w.prompt_len);
  const double head = static_cast<double>(spec.vocab_size * spec.word_embed_proj_dim);
  const double body = static_cast<double>(gemm_params_per_token(spec)) - head;
  // Causal attention: query i meets i + 1 keys, for q·k and for p·v, 2 FLOPs per multiply-add.
  const double attention =
      2.0 * P * (P + 1) * static_cast<double>(spec.num_heads * spec.head_dim) * static_cast<double>(spec.num_layers);
  RooflineBound b;
  b.prefill_flops = B * (2.0 * body * P + attention + (w.head ? 2.0 * head : 0.0));
  const double weights = decode_weight_bytes(spec, w.weights) - (w.head ? 0.0 : head * dtype_size(w.weights));
  const double per_token = kv_bytes_per_token(spec, w.kv_cache);
  // Per pass over the layers: the host link's share and the disk's, each on its own engine.
  const double link = std::max(w.streamed_weight_bytes > 0 ? w.streamed_weight_bytes / rates.link_bytes : 0.0,
                               w.disk_weight_bytes > 0 ? w.disk_weight_bytes / rates.disk_read_bytes : 0.0);
  for (int64_t s = 1; s < w.gen_len; ++s) {  // step s: the cache holds prompt + s tokens once written
    const double cache = B * (P + static_cast<double>(s)) * per_token;
    const double device = weights + (w.cache_on_host ? 0.0 : cache);
    b.decode_bytes += device;
    double t = std::max(device / rates.read_bytes, link);
    if (w.cache_on_host) t = std::max(t, cache / rates.host_read_bytes);
    b.decode_seconds += t;
  }
  b.prefill_seconds = std::max(b.prefill_flops / rates.gemm_flops, link);
  set_throughputs(b, w);
  return b;
}

RooflineBound pipeline_bound(const std::vector<RooflineBound>& stages, const Workload& w) {
  if (stages.empty()) throw InvalidArgumentError("roofline: a pipeline without stages");
  RooflineBound b;
  for (const RooflineBound& s : stages) {
    b.prefill_flops += s.prefill_flops;
    b.decode_bytes += s.decode_bytes;
    b.prefill_seconds = std::max(b.prefill_seconds, s.prefill_seconds);
    b.decode_seconds = std::max(b.decode_seconds, s.decode_seconds);
  }
  set_throughputs(b, w);
  return b;
}

}  // namespace tiergen
