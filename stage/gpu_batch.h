// A block's GPU batches. FlexGen's schedule runs a block of gpu_batch_size x num_gpu_batches
// sequences layer by layer, and within each layer GPU batch by GPU batch, so that each layer's
// weights are brought to the compute tier once per block and serve every batch. A GPU batch is a
// contiguous range of the block's KV cache slots; its step plan holds the block's sequences in those
// slots, renumbered from 0, so each batch runs against a view of its own slots' cache.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/backend.h"
#include "runtime/engine/layer.h"

namespace tiergen {

struct GpuBatch {
  int64_t first_slot = 0;  // its slots in the block's cache: [first_slot, first_slot + num_slots)
  int64_t num_slots = 0;
  ForwardContext ctx;               // ctx.plan: its sequences, slots counted from first_slot
  std::vector<size_t> logit_index;  // where each of its logit rows is in the block plan's logit_rows
  std::vector<int32_t> rows;        // (T_b) the block plan's row of each of its rows
};

// Cuts `plan`'s sequences by slot into batches of `gpu_batch_size` slots: [0, g), [g, 2g), ...
// over `cache_slots` slots. Batches without a sequence this step (all finished) are left out.
// InternalError for a logit row outside its sequence's rows or a slot outside the cache.
std::vector<GpuBatch> split_block(const kernels::StepPlan& plan, int64_t gpu_batch_size, int64_t cache_slots);

// One block's step, its sequences in the slots of block b: [b * block_slots, (b + 1) * block_slots)
// of a cache of `cache_slots` (the last block may be shorter), cut by split_block within the block,
// so that no GPU batch reaches into another block's slots. InternalError for a plan whose sequences
// are in different blocks.
std::vector<GpuBatch> split_step(const kernels::StepPlan& plan, int64_t gpu_batch_size, int64_t block_slots,
                                 int64_t cache_slots);

}  // namespace tiergen
