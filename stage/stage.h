// Stage: a contiguous range of a model's layer list with its KV cache, run on one backend. The
// single-process engine is a pipeline of one stage covering every layer; the distributed pipeline
// (comm/, later) gives each rank one stage. The cache is a fixed set of slots, each holding one
// sequence's keys and values for up to `capacity` tokens, allocated once per run shape.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/backend.h"
#include "runtime/engine/kv_cache.h"
#include "runtime/engine/model.h"
#include "stage/weight_stream.h"

namespace tiergen {

// The dtypes a stage computes and caches in: F32 on the CPU; the run's 16-bit type on the GPU.
struct StageDtypes {
  DType activations = DType::F32;
  DType kv_cache = DType::F32;
};

class Stage {
 public:
  // Layers [begin, end) of `model`'s layer list.
  Stage(const Model& model, kernels::Backend& backend, size_t begin, size_t end, StageDtypes dtypes = {});
  // The whole model.
  explicit Stage(const Model& model, kernels::Backend& backend, StageDtypes dtypes = {});

  // (Re)allocates the KV cache: `slots` sequences of up to `capacity` tokens each.
  void allocate_cache(int64_t slots, int64_t capacity);
  int64_t cache_slots() const { return cache_.slots(); }
  int64_t cache_capacity() const { return cache_.capacity(); }
  // Bytes of KV cache that allocate_cache(slots, capacity) would take.
  size_t cache_bytes(int64_t slots, int64_t capacity) const { return cache_.bytes(slots, capacity); }

  // Runs every layer of the stage on ctx: uploads ctx.plan once (ctx.step), builds the step's
  // RoPE table, sets ctx.backend and ctx.act_dtype. The first stage's ctx.hidden is allocated
  // here when undefined.
  void forward(ForwardContext& ctx);

  // Weights streamed from disk (stage/weight_stream.h), or null: forward binds each streamed
  // layer's weights before it runs. The stream must outlive the stage's use of it.
  void set_weight_stream(WeightStream* stream) { stream_ = stream; }

  kernels::Backend& backend() const { return backend_; }
  const Model& model() const { return model_; }
  const StageDtypes& dtypes() const { return dtypes_; }

 private:
  const Model& model_;
  kernels::Backend& backend_;
  size_t begin_, end_;
  StageDtypes dtypes_;
  KvCache cache_;
  Tensor alibi_slopes_;  // (n_heads) in the backend's tier, ALiBi models only
  WeightStream* stream_ = nullptr;
};

}  // namespace tiergen
