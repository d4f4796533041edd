// Stage: a contiguous range of a model's layer list with its KV cache, run on one backend. The
// single-process engine is a pipeline of one stage covering every layer; the distributed pipeline
// (comm/, later) gives each rank one stage. The cache is a fixed set of slots, each holding one
// sequence's keys and values for up to `capacity` tokens, allocated once per run shape.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "kernels/backend.h"
#include "runtime/engine/kv_cache.h"
#include "runtime/engine/model.h"
#include "stage/gpu_batch.h"
#include "stage/kv_stream.h"
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

  // (Re)allocates the KV cache: `slots` sequences of up to `capacity` tokens each, in blocks of
  // `block_slots` slots (the whole cache by default; a pipeline keeps several blocks in flight),
  // each run in GPU batches of up to `batch_slots` slots (the whole block by default).
  void allocate_cache(int64_t slots, int64_t capacity, int64_t batch_slots = 0, int64_t block_slots = 0);
  // One block's step plan cut into the GPU batches this cache runs it in (split_step): the same
  // cut on every stage of a pipeline, since each allocates the same layout.
  std::vector<GpuBatch> split(const kernels::StepPlan& plan) const;
  // The same block cut as another stage with GPU batches of `batch_slots` cuts it (a pipeline's
  // stages may cut a block differently: the hidden states cross in the sender's batches).
  std::vector<GpuBatch> split(const kernels::StepPlan& plan, int64_t batch_slots) const;
  // The GPU batch allocate_cache settled on (0 before it).
  int64_t batch_slots() const { return batch_slots_; }
  int64_t cache_slots() const { return kv_stream_ ? kv_stream_->slots() : cache_.slots(); }
  int64_t cache_capacity() const { return kv_stream_ ? kv_stream_->capacity() : cache_.capacity(); }
  // K (= V) width of each of the stage's layers, 0 where a layer does not attend.
  const std::vector<int64_t>& kv_widths() const { return cache_.widths(); }
  // Bytes of KV cache that allocate_cache(slots, capacity) would take.
  size_t cache_bytes(int64_t slots, int64_t capacity) const { return cache_.bytes(slots, capacity); }

  // Runs every layer of the stage on ctx, one batch over every slot of the cache: uploads ctx.plan
  // once (ctx.step), builds the step's RoPE table, sets ctx.backend and ctx.act_dtype. The first
  // stage's ctx.hidden is allocated here when undefined.
  void forward(ForwardContext& ctx);
  // Runs the stage's layers over a block's GPU batches in FlexGen's order: layer by layer, and
  // within a layer batch by batch, so each layer's weights are bound once and serve every batch.
  // Each batch's context is prepared as forward() prepares one; the RoPE table is the block's.
  void forward_block(std::span<GpuBatch> batches);

  // Weights streamed from disk (stage/weight_stream.h), or null: forward binds each streamed
  // layer's weights before it runs. The stream must outlive the stage's use of it.
  void set_weight_stream(WeightStream* stream) { stream_ = stream; }
  // A KV cache with its home partly on disk (stage/kv_stream.h), or null: the stage's own cache,
  // all in the backend's tier. Set before allocate_cache; it must outlive the stage's use of it.
  void set_kv_stream(KvStream* stream) { kv_stream_ = stream; }
  // Keeps the KV cache on `host` (a CPU backend) while the stage computes on a GPU: new keys and
  // values cross to it, and decode attention runs there (FlexGen's --cpu-cache-compute), so the
  // cache itself never crosses PCIe. Set before allocate_cache; null: the cache is on the backend.
  void set_cache_backend(kernels::Backend* host);

  kernels::Backend& backend() const { return backend_; }
  const Model& model() const { return model_; }
  const StageDtypes& dtypes() const { return dtypes_; }

 private:
  const Model& model_;
  kernels::Backend& backend_;
  size_t begin_, end_;
  StageDtypes dtypes_;
  KvCache cache_;
  int64_t batch_slots_ = 0, block_slots_ = 0;  // the layout allocate_cache was given
  Tensor alibi_slopes_;                        // (n_heads) in the backend's tier, ALiBi models only
  WeightStream* stream_ = nullptr;
  KvStream* kv_stream_ = nullptr;
  kernels::Backend* cache_backend_ = nullptr;
  Tensor host_alibi_slopes_;                     // (n_heads) on cache_backend_, ALiBi models only
  std::vector<HostAttentionState> host_states_;  // one per GPU batch, with cache_backend_
};

}  // namespace tiergen
