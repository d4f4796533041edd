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
#pragma once

#include <cstdint>

#include "runtime/core/dtype.h"
#include "runtime/model/spec.h"

namespace tiergen {

// What the device can do, measured: dense GEMM FLOP/s in the run's dtype, memory read bytes/s.
struct DeviceRates {
  double gemm_flops = 0;
  double read_bytes = 0;
};

struct Workload {
  int64_t batch = 0;
  int64_t prompt_len = 0;
  int64_t gen_len = 0;
  DType weights = DType::F16;  // as read by the compute device
  DType kv_cache = DType::F16;
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

// InvalidArgumentError for a non-positive rate or an empty workload.
RooflineBound roofline_bound(const ModelSpec& spec, const Workload& w, const DeviceRates& rates);

}  // namespace tiergen
