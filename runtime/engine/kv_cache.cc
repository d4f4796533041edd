#include "runtime/engine/kv_cache.h"

#include <string>

#include "runtime/core/error.h"

namespace tiergen {

uint64_t KvCache::bytes(int64_t slots, int64_t capacity) const {
  uint64_t n = 0;
  for (int64_t w : widths_) n += 2 * static_cast<uint64_t>(w) * static_cast<uint64_t>(slots * capacity);
  return n * dtype_size(dtype_);
}

kernels::LayerKv* KvCache::view(size_t i, int64_t first_slot, int64_t num_slots, kernels::LayerKv& out) {
  kernels::LayerKv* all = layer(i);
  if (!all) return nullptr;
  if (first_slot == 0 && num_slots == slots_) return all;
  TIERGEN_CHECK(first_slot >= 0 && num_slots >= 0 && first_slot + num_slots <= slots_, "KvCache::view: slots");
  out.capacity = capacity_;
  out.k = all->k.slice_rows(first_slot * capacity_, (first_slot + num_slots) * capacity_);
  out.v = all->v.slice_rows(first_slot * capacity_, (first_slot + num_slots) * capacity_);
  return &out;
}

void KvCache::allocate(kernels::Backend& be, int64_t slots, int64_t capacity, bool host) {
  if (slots <= 0 || capacity <= 0)
    throw InvalidArgumentError("KV cache needs at least one slot and one token, got " + std::to_string(slots) + " x " +
                               std::to_string(capacity));
  if (slots == slots_ && capacity == capacity_ && host == host_) return;
  layers_.clear();  // release the old cache before taking the new one
  layers_.resize(widths_.size());
  for (size_t i = 0; i < widths_.size(); ++i) {
    if (widths_[i] == 0) continue;
    for (Tensor* t : {&layers_[i].k, &layers_[i].v})
      *t = host ? be.alloc_host({slots * capacity, widths_[i]}, dtype_) : be.alloc({slots * capacity, widths_[i]}, dtype_);
    layers_[i].capacity = capacity;
  }
  slots_ = slots;
  capacity_ = capacity;
  host_ = host;
}

}  // namespace tiergen
