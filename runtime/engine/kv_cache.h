// KvCache: the attention cache of a range of layers, apart from the compute backend's activations:
// its own dtype (the run's activation dtype, or narrower later) and its own memory. One LayerKv per
// layer that attends, each K and V of (slots * capacity, n_kv_heads * head_dim), allocated once for
// the run's shape (RunShape) and reused by every block.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/backend.h"

namespace tiergen {

class KvCache {
 public:
  // `widths[i]`: K (= V) width of layer i of the range, 0 for layers without attention.
  KvCache(std::vector<int64_t> widths, DType dtype) : widths_(std::move(widths)), dtype_(dtype) {}

  // (Re)allocates on `be` for `slots` sequences of up to `capacity` tokens; a no-op when the shape
  // is unchanged. InvalidArgumentError for an empty shape. `host`: in host memory that `be`'s
  // transfer lanes reach without staging (Backend::alloc_host) instead of in be's own tier.
  void allocate(kernels::Backend& be, int64_t slots, int64_t capacity, bool host = false);
  // Bytes allocate(slots, capacity) takes.
  uint64_t bytes(int64_t slots, int64_t capacity) const;

  // Layer i's cache, or null for a layer without attention (or before allocate).
  kernels::LayerKv* layer(size_t i) { return widths_[i] > 0 && slots_ > 0 ? &layers_[i] : nullptr; }
  // Layer i's cache of slots [first_slot, first_slot + num_slots) (a view: slot 0 is first_slot),
  // or null as layer() is.
  kernels::LayerKv* view(size_t i, int64_t first_slot, int64_t num_slots, kernels::LayerKv& out);
  const std::vector<int64_t>& widths() const { return widths_; }
  int64_t slots() const { return slots_; }
  int64_t capacity() const { return capacity_; }
  DType dtype() const { return dtype_; }

 private:
  std::vector<int64_t> widths_;
  DType dtype_;
  int64_t slots_ = 0, capacity_ = 0;
  bool host_ = false;
  std::vector<kernels::LayerKv> layers_;
};

}  // namespace tiergen
