// The roofline bound of a generation workload: the least time its arithmetic and its memory traffic
// allow on a device whose rates were measured. A benchmark reports measured / bound, so that a
// figure says how close to the hardware it came, not only how fast it was on one machine.
//
// The bound of a block of `batch` sequences, `prompt_len` prompt tokens each, `gen_len` generated:
//   prefill: every GEMM FLOP of the prompt tokens (weights x tokens, the attention scores and their
//            products, the LM head on one row per sequence) at the measured GEMM rate;
//   decode:  for each of the gen_len - 1 steps after the first token, the bytes every step must
//            read (all weights used per token, and each sequence's KV cache up to that step) at
//            the measured memory read rate.
// Each phase is bounded alone (prefill by compute, decode by memory): the bound is their sum, and
// tokens per second over it is the most throughput the workload can have.
//
// An offloading run adds what it moves, each on its own engine and so overlappable with the rest:
// the weights not resident on the GPU cross the host link once per pass over the layers (once in
// the prefill and once per decode step, for the whole block), and a KV cache kept in host memory
// is read there by the decode attention (at the host's read rate, and no longer by the GPU).
// Weights at home on disk are read from it once per pass too, at the disk's measured read rate.
// A phase's bound is then the largest of its terms.
#pragma once

#include <cstdint>
#include <vector>

#include "runtime/core/dtype.h"
#include "runtime/model/spec.h"

namespace tiergen {

// What the device can do, measured: dense GEMM FLOP/s in the run's dtype, memory read bytes/s.
struct DeviceRates {
  double gemm_flops = 0;
  double read_bytes = 0;
  double link_bytes = 0;       // host-to-device copies from pinned memory, B/s (offloading runs)
  double host_read_bytes = 0;  // the host's memory read rate, B/s (a KV cache in host memory)
  double disk_read_bytes = 0;  // the offload folder's disk, O_DIRECT reads, B/s (weights on disk)
};

struct Workload {
  int64_t batch = 0;
  int64_t prompt_len = 0;
  int64_t gen_len = 0;
  DType weights = DType::F16;  // as read by the compute device
  DType kv_cache = DType::F16;
  double streamed_weight_bytes = 0;  // weight bytes not resident on the device, per pass over the layers
  bool cache_on_host = false;        // the KV cache in host memory, decode attention there
  bool head = true;                  // the LM head is this device's work (a pipeline's last stage)
  double disk_weight_bytes = 0;      // weight bytes read from disk per pass over the layers
};

struct RooflineBound {
  double prefill_flops = 0;
  double decode_bytes = 0;     // over every decode step
  double prefill_seconds = 0;  // prefill_flops / gemm rate
  double decode_seconds = 0;   // decode_bytes / read rate
  double seconds() const { return prefill_seconds + decode_seconds; }
  // Generated tokens (batch x gen_len, FlexGen's "total throughput" numerator) per bound second.
  double total_throughput = 0;
  double prefill_throughput = 0;  // prompt tokens per prefill second
  double decode_throughput = 0;   // batch x (gen_len - 1) per decode second
};

// Weights used as GEMM operands for one token: every decoder layer's projections and the LM head
// (embedding lookups and norms are not GEMMs).
int64_t gemm_params_per_token(const ModelSpec& spec);
// Bytes of keys and values one token holds in the cache, over every layer.
double kv_bytes_per_token(const ModelSpec& spec, DType kv_cache);
// Bytes of weights a decode step reads: every weight except the embedding tables' unused rows (the
// LM head is read whole, so a tied table counts once).
double decode_weight_bytes(const ModelSpec& spec, DType weights);

// A stage's share of one decode step's bound, for a pipeline's layer assignment: each decoder
// layer's (its weights read by the device, the `streamed_share` of them not resident crossing the
// host link, its KV cache for `batch` sequences of `context` tokens read where it lives, on the
// device or in host memory, these overlapping) and the LM head's (read by the device). Disk reads
// are not in it, as in the bound. InvalidArgumentError for rates the terms need that are not
// positive.
struct StepCost {
  double per_layer = 0, head = 0;  // seconds
};
StepCost decode_step_cost(const ModelSpec& spec, int64_t batch, int64_t context, DType weights, DType kv_cache,
                          double streamed_share, bool cache_on_host, const DeviceRates& rates);

// InvalidArgumentError for a non-positive rate (the link's and the host's where the workload needs
// them) or an empty workload.
RooflineBound roofline_bound(const ModelSpec& spec, const Workload& w, const DeviceRates& rates);
// A pipeline's bound from its stages' (each for its own layers, device and rates, on the same
// workload `w`): a full pipeline runs at its slowest stage's pace, so each phase takes the longest
// stage's time (the fill and drain of the pipeline are not in it: a bound). InvalidArgumentError
// for no stages.
RooflineBound pipeline_bound(const std::vector<RooflineBound>& stages, const Workload& w);

}  // namespace tiergen
