#include "stage/stage.h"

#include <algorithm>

#include "runtime/core/error.h"

namespace tiergen {
namespace {

std::vector<int64_t> kv_widths(const Model& model, size_t begin, size_t end) {
  if (begin > end || end > model.layers().size())
    throw InvalidArgumentError("stage layer range [" + std::to_string(begin) + ", " + std::to_string(end) +
                               ") is outside the model's " + std::to_string(model.layers().size()) + " layers");
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
      cache_(kv_widths(model, begin, end), dtypes.kv_cache) {
  if (model.spec().position == PositionKind::Alibi)
    alibi_slopes_ = upload_f32(backend_, alibi_slopes(model.spec().num_heads));
}

Stage::Stage(const Model& model, kernels::Backend& backend, StageDtypes dtypes)
    : Stage(model, backend, 0, model.layers().size(), dtypes) {}

void Stage::allocate_cache(int64_t slots, int64_t capacity) { cache_.allocate(backend_, slots, capacity); }

void Stage::forward(ForwardContext& ctx) {
  ctx.backend = &backend_;
  ctx.act_dtype = dtypes_.activations;
  const kernels::StepPlan& plan = ctx.plan;
  for (size_t s = 0; s < plan.slot.size(); ++s)
    if (plan.slot[s] < 0 || plan.slot[s] >= cache_.slots() || plan.kv_len[s] > cache_.capacity())
      throw InternalError("sequence in slot " + std::to_string(plan.slot[s]) + " with " +
                          std::to_string(plan.kv_len[s]) + " tokens does not fit the cache's " +
                          std::to_string(cache_.slots()) + " x " + std::to_string(cache_.capacity()));
  // Per-step metadata, built and uploaded once; every layer reads it.
  ctx.step = backend_.upload_step(plan);
  const ModelSpec& spec = model_.spec();
  if (spec.position == PositionKind::Rope)
    ctx.rope_inv_freq = upload_f32(backend_, rope_inv_freq(spec, plan.max_kv_len()));
  ctx.alibi_slopes = alibi_slopes_;
  if (!ctx.hidden.defined()) ctx.hidden = backend_.scratch({plan.num_tokens(), spec.hidden_size}, ctx.act_dtype);
  if (stream_) stream_->begin_step();
  for (size_t i = begin_; i < end_; ++i) {
    if (stream_) stream_->before_layer(i);
    model_.layers()[i]->forward(ctx, cache_.layer(i - begin_));
  }
}

}  // namespace tiergen
