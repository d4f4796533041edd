#include "stage/stage.h"

#include "runtime/core/error.h"

namespace tiergen {

Stage::Stage(const Model& model, kernels::Backend& backend, size_t begin, size_t end)
    : model_(model), backend_(backend), begin_(begin), end_(end) {
  if (begin > end || end > model.layers().size())
    throw InvalidArgumentError("stage layer range [" + std::to_string(begin) + ", " + std::to_string(end) +
                               ") is outside the model's " + std::to_string(model.layers().size()) + " layers");
  caches_.resize(end - begin);
}

Stage::Stage(const Model& model, kernels::Backend& backend) : Stage(model, backend, 0, model.layers().size()) {}

size_t Stage::cache_bytes(int64_t slots, int64_t capacity) const {
  size_t n = 0;
  for (size_t i = begin_; i < end_; ++i)
    n += static_cast<size_t>(model_.layers()[i]->kv_elems_per_token()) * static_cast<size_t>(slots * capacity) * 4;
  return n;
}

void Stage::allocate_cache(int64_t slots, int64_t capacity) {
  if (slots <= 0 || capacity <= 0)
    throw InvalidArgumentError("KV cache needs at least one slot and one token, got " + std::to_string(slots) + " x " +
                               std::to_string(capacity));
  if (slots == slots_ && capacity == capacity_) return;
  for (size_t i = begin_; i < end_; ++i) {
    const int64_t per_token = model_.layers()[i]->kv_elems_per_token();
    LayerKvCache& c = caches_[i - begin_];
    c.k.clear();
    c.v.clear();
    if (per_token == 0) continue;
    for (int64_t s = 0; s < slots; ++s) {
      c.k.push_back(backend_.alloc({capacity, per_token / 2}, DType::F32));
      c.v.push_back(backend_.alloc({capacity, per_token / 2}, DType::F32));
    }
  }
  slots_ = slots;
  capacity_ = capacity;
}

void Stage::forward(ForwardContext& ctx) {
  ctx.backend = &backend_;
  for (const SeqStep& s : ctx.seqs)
    if (s.slot < 0 || s.slot >= slots_)
      throw InternalError("sequence slot " + std::to_string(s.slot) + " outside the cache's " + std::to_string(slots_));
  for (size_t i = begin_; i < end_; ++i) {
    Layer& layer = *model_.layers()[i];
    LayerKvCache* kv = layer.kv_elems_per_token() > 0 ? &caches_[i - begin_] : nullptr;
    layer.forward(ctx, kv);
  }
}

}  // namespace tiergen
