#include "stage/gpu_batch.h"

#include <string>

#include "runtime/core/error.h"

namespace tiergen {

std::vector<GpuBatch> split_block(const kernels::StepPlan& plan, int64_t gpu_batch_size, int64_t cache_slots) {
  TIERGEN_CHECK(gpu_batch_size > 0 && cache_slots > 0, "split_block: empty batch shape");
  const int64_t n_batches = (cache_slots + gpu_batch_size - 1) / gpu_batch_size;
  std::vector<GpuBatch> all(static_cast<size_t>(n_batches));
  for (int64_t b = 0; b < n_batches; ++b) {
    all[b].first_slot = b * gpu_batch_size;
    all[b].num_slots = std::min(gpu_batch_size, cache_slots - b * gpu_batch_size);
  }
  // Each row's sequence, so that logit rows find their batch.
  std::vector<int64_t> row_seq(static_cast<size_t>(plan.num_tokens()), -1);
  std::vector<int64_t> seq_batch(static_cast<size_t>(plan.num_seqs()));
  std::vector<int32_t> seq_new_begin(static_cast<size_t>(plan.num_seqs()));
  for (int64_t s = 0; s < plan.num_seqs(); ++s) {
    const int32_t slot = plan.slot[s];
    if (slot < 0 || slot >= cache_slots)
      throw InternalError("split_block: sequence " + std::to_string(s) + " in slot " + std::to_string(slot) +
                          " of a cache of " + std::to_string(cache_slots));
    GpuBatch& b = all[static_cast<size_t>(slot / gpu_batch_size)];
    kernels::StepPlan& p = b.ctx.plan;
    const auto local = static_cast<int32_t>(slot - b.first_slot);
    seq_batch[s] = slot / gpu_batch_size;
    seq_new_begin[s] = static_cast<int32_t>(p.num_tokens());
    p.q_begin.push_back(static_cast<int32_t>(p.num_tokens()));
    p.q_len.push_back(plan.q_len[s]);
    p.kv_len.push_back(plan.kv_len[s]);
    p.slot.push_back(local);
    for (int32_t r = plan.q_begin[s]; r < plan.q_begin[s] + plan.q_len[s]; ++r) {
      row_seq[static_cast<size_t>(r)] = s;
      b.rows.push_back(r);
      p.token_ids.push_back(plan.token_ids[r]);
      p.positions.push_back(plan.positions[r]);
      p.row_slot.push_back(local);
    }
  }
  for (size_t k = 0; k < plan.logit_rows.size(); ++k) {
    const int32_t r = plan.logit_rows[k];
    const int64_t s = r >= 0 && r < plan.num_tokens() ? row_seq[static_cast<size_t>(r)] : -1;
    if (s < 0) throw InternalError("split_block: logit row " + std::to_string(r) + " is in no sequence");
    GpuBatch& b = all[static_cast<size_t>(seq_batch[s])];
    b.ctx.plan.logit_rows.push_back(seq_new_begin[s] + (r - plan.q_begin[s]));
    b.logit_index.push_back(k);
  }
  std::vector<GpuBatch> out;
  for (GpuBatch& b : all)
    if (b.ctx.plan.num_seqs() > 0) out.push_back(std::move(b));
  return out;
}

std::vector<GpuBatch> split_step(const kernels::StepPlan& plan, int64_t gpu_batch_size, int64_t block_slots,
                                 int64_t cache_slots) {
  TIERGEN_CHECK(block_slots > 0 && cache_slots > 0, "split_step: empty block shape");
  if (plan.slot.empty()) return {};
  const int64_t base = plan.slot.front() / block_slots * block_slots;
  kernels::StepPlan local = plan;  // slots counted from the block's first
  for (auto* slots : {&local.slot, &local.row_slot})
    for (int32_t& s : *slots) {
      if (s < base || s >= base + block_slots)
        throw InternalError("split_step: a step's sequences in slots " + std::to_string(base) + " and " +
                            std::to_string(s) + " are in different blocks of " + std::to_string(block_slots));
      s -= static_cast<int32_t>(base);
    }
  std::vector<GpuBatch> out = split_block(local, gpu_batch_size, std::min(block_slots, cache_slots - base));
  for (GpuBatch& b : out) b.first_slot += base;
  return out;
}

}  // namespace tiergen
