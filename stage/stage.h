// Stage: a contiguous range of a model's layer list with its KV cache, run on one backend. The
// single-process engine is a pipeline of one stage covering every layer; the distributed pipeline
// (comm/, later) gives each rank one stage. The cache is a fixed set of slots, each holding one
// sequence's keys and values for up to `capacity` tokens, allocated once.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/backend.h"
#include "runtime/engine/model.h"

namespace tiergen {

class Stage {
 public:
  // Layers [begin, end) of `model`'s layer list.
  Stage(const Model& model, kernels::Backend& backend, size_t begin, size_t end);
  // The whole model.
  Stage(const Model& model, kernels::Backend& backend);

  // (Re)allocates the KV cache: `slots` sequences of up to `capacity` tokens each.
  void allocate_cache(int64_t slots, int64_t capacity);
  int64_t cache_slots() const { return slots_; }
  int64_t cache_capacity() const { return capacity_; }
  // Bytes of KV cache that allocate_cache(slots, capacity) would take.
  size_t cache_bytes(int64_t slots, int64_t capacity) const;

  // Runs every layer of the stage on ctx (ctx.backend is set to this stage's backend).
  void forward(ForwardContext& ctx);

  kernels::Backend& backend() const { return backend_; }
  const Model& model() const { return model_; }

 private:
  const Model& model_;
  kernels::Backend& backend_;
  size_t begin_, end_;
  int64_t slots_ = 0, capacity_ = 0;
  std::vector<LayerKvCache> caches_;  // one per layer in [begin, end); empty for layers without KV
};

}  // namespace tiergen
