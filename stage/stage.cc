#include "stage/stage.h"

#include <algorithm>

#include "kernels/lane_span.h"
#include "runtime/core/error.h"

namespace tiergen {
namespace {

std::vector<int64_t> layer_kv_widths(const Model& model, size_t begin, size_t end) {
  if (begin > end || end > model.layers().size())
    throw InvalidArgumentError("stage layer range [" + std::to_string(begin) + ", " + std::to_string(end) +
                               ") is outside the model's " + std::to_string(model.layers().size()) + " layers");
  if (begin < end && (!model.loaded().contains(begin) || !model.loaded().contains(end - 1)))
    throw InternalError("stage layers [" + std::to_string(begin) + ", " + std::to_string(end) +
                        ") were not all loaded (this process loaded [" + std::to_string(model.loaded().begin) + ", " +
                        std::to_string(model.loaded().end) + "))");
  std::vector<int64_t> w;
  for (size_t i = begin; i < end; ++i) w.push_back(model.layers()[i]->kv_elems_per_token() / 2);
  return w;
}

// A host F32 vector in the backend's tier.
Tensor upload_f32(kernels::Backend& be, const std::vector<float>& v) {
  Tensor host = Tensor::empty({static_cast<int64_t>(v.size())}, DType::F32);
  std::copy(v.begin(), v.end(), host.data<float>());
  return be.upload(host, DType::F32);
}

}  // namespace

Stage::Stage(const Model& model, kernels::Backend& backend, size_t begin, size_t end, StageDtypes dtypes)
    : model_(model),
      backend_(backend),
      begin_(begin),
      end_(end),
      dtypes_(dtypes),
      cache_(layer_kv_widths(model, begin, end), dtypes.kv_cache) {
  if (model.spec().position == PositionKind::Alibi)
    alibi_slopes_ = upload_f32(backend_, alibi_slopes(model.spec().num_heads));
}

Stage::Stage(const Model& model, kernels::Backend& backend, StageDtypes dtypes)
    : Stage(model, backend, 0, model.layers().size(), dtypes) {}

void Stage::set_cache_backend(kernels::Backend* host) {
  TIERGEN_CHECK(!host || host->kind() == kernels::DeviceKind::Cpu, "the KV cache's backend must be the host's");
  TIERGEN_CHECK(!kv_stream_ || !host, "a KV cache on disk is streamed to the compute tier, not computed on the host");
  cache_backend_ = host == &backend_ ? nullptr : host;
  host_alibi_slopes_ = cache_backend_ && model_.spec().position == PositionKind::Alibi
                           ? upload_f32(*cache_backend_, alibi_slopes(model_.spec().num_heads))
                           : Tensor();
}

void Stage::allocate_cache(int64_t slots, int64_t capacity, int64_t batch_slots, int64_t block_slots) {
  block_slots_ = block_slots > 0 ? std::min(block_slots, slots) : slots;
  batch_slots_ = batch_slots > 0 ? std::min(batch_slots, block_slots_) : block_slots_;
  if (kv_stream_)
    kv_stream_->allocate(slots, capacity, batch_slots_);
  else if (cache_backend_)  // pinned by the compute backend, so its rows cross by DMA on the lanes
    cache_.allocate(backend_, slots, capacity, /*host=*/true);
  else
    cache_.allocate(backend_, slots, capacity);
}

std::vector<GpuBatch> Stage::split(const kernels::StepPlan& plan) const { return split(plan, batch_slots_); }

std::vector<GpuBatch> Stage::split(const kernels::StepPlan& plan, int64_t batch_slots) const {
  TIERGEN_CHECK(block_slots_ > 0 && batch_slots > 0, "split() before allocate_cache()");
  return split_step(plan, std::min(batch_slots, block_slots_), block_slots_, cache_slots());
}

void Stage::forward(ForwardContext& ctx) {
  // A copy, not a move: ctx stays whole while the layers run (an observer may read its plan).
  GpuBatch one;
  one.num_slots = cache_slots();
  one.ctx = ctx;
  forward_block(std::span<GpuBatch>(&one, 1));
  ctx = std::move(one.ctx);
  ctx.step.plan = ctx.cache_step.plan = &ctx.plan;  // they pointed into `one`
}

void Stage::forward_block(std::span<GpuBatch> batches) {
  const ModelSpec& spec = model_.spec();
  int max_kv = 0;
  for (const GpuBatch& b : batches) {
    const kernels::StepPlan& plan = b.ctx.plan;
    max_kv = std::max(max_kv, plan.max_kv_len());
    if (b.first_slot < 0 || b.first_slot + b.num_slots > cache_slots())
      throw InternalError("GPU batch of slots [" + std::to_string(b.first_slot) + ", " +
                          std::to_string(b.first_slot + b.num_slots) + ") outside the cache's " +
                          std::to_string(cache_slots()));
    for (size_t s = 0; s < plan.slot.size(); ++s)
      if (plan.slot[s] < 0 || plan.slot[s] >= b.num_slots || plan.kv_len[s] > cache_capacity())
        throw InternalError("sequence in slot " + std::to_string(b.first_slot + plan.slot[s]) + " with " +
                            std::to_string(plan.kv_len[s]) + " tokens does not fit the cache's " +
                            std::to_string(cache_slots()) + " x " + std::to_string(cache_capacity()));
  }
  // The RoPE table depends on the longest sequence ("dynamic" scaling): the block's, so that a
  // sequence's result does not depend on how the block was cut into batches.
  Tensor rope;
  if (spec.position == PositionKind::Rope) rope = upload_f32(backend_, rope_inv_freq(spec, max_kv));
  if (cache_backend_ && host_states_.size() < batches.size()) host_states_.resize(batches.size());
  for (size_t j = 0; j < batches.size(); ++j) {
    ForwardContext& ctx = batches[j].ctx;
    ctx.backend = &backend_;
    ctx.act_dtype = dtypes_.activations;
    // Per-step metadata, built and uploaded once; every layer reads it.
    ctx.step = backend_.upload_step(ctx.plan);
    ctx.rope_inv_freq = rope;
    ctx.alibi_slopes = alibi_slopes_;
    if (cache_backend_) {
      ctx.cache_backend = cache_backend_;
      ctx.cache_step = cache_backend_->upload_step(ctx.plan);
      ctx.cache_alibi_slopes = host_alibi_slopes_;
      ctx.host = &host_states_[j];
    }
    if (!ctx.hidden.defined()) ctx.hidden = backend_.scratch({ctx.plan.num_tokens(), spec.hidden_size}, ctx.act_dtype);
  }
  if (stream_) stream_->begin_step();
  if (kv_stream_) kv_stream_->begin_block(batches);
  // With the cache in host memory a layer runs in two passes over the batches (Layer::finish): the
  // host attends to batch j while the GPU computes batch j + 1's projections.
  const bool two_pass = cache_backend_ != nullptr;
  std::vector<kernels::LayerKv> views(batches.size());
  std::vector<kernels::LayerKv*> kvs(batches.size());
  for (size_t i = begin_; i < end_; ++i) {
    if (stream_) stream_->before_layer(i);
    const size_t local = i - begin_;
    Layer& layer = *model_.layers()[i];
    const kernels::LaneSpan span(backend_, kernels::Lane::Compute, trace::kCompute, layer.name());
    auto kv_of = [&](size_t j) -> kernels::LayerKv* {
      if (kv_widths()[local] == 0) return nullptr;
      if (kv_stream_) return kv_stream_->acquire(local, j);
      return cache_.view(local, batches[j].first_slot, batches[j].num_slots, views[j]);
    };
    for (size_t j = 0; j < batches.size(); ++j) {
      kernels::LayerKv* kv = kvs[j] = kv_of(j);
      layer.forward(batches[j].ctx, kv);
      if (two_pass) continue;
      layer.finish(batches[j].ctx, kv);
      if (kv && kv_stream_) kv_stream_->release(local, j);
    }
    if (two_pass)
      for (size_t j = 0; j < batches.size(); ++j) layer.finish(batches[j].ctx, kvs[j]);
    if (stream_) stream_->after_layer(i);
  }
  for (size_t j = 0; j < batches.size() && two_pass; ++j) release_host_rows(backend_, host_states_[j]);
  if (kv_stream_) kv_stream_->finish_block();
}

}  // namespace tiergen
