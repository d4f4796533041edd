#include "runtime/generate/executor.h"

#include <algorithm>
#include <string>

#include "runtime/core/error.h"
#include "runtime/core/trace.h"

namespace tiergen {

LocalPipeline::LocalPipeline(std::vector<Stage*> stages, int64_t gpu_batch_size)
    : stages_(std::move(stages)), gpu_batch_size_(gpu_batch_size) {
  if (stages_.empty()) throw InvalidArgumentError("a pipeline needs at least one stage");
  if (gpu_batch_size < 0)
    throw InvalidArgumentError("GPU batch size must be positive, got " + std::to_string(gpu_batch_size));
}

void LocalPipeline::allocate_cache(int64_t slots, int64_t capacity) {
  const int64_t batch = gpu_batch_size_ > 0 ? std::min(gpu_batch_size_, slots) : slots;
  for (Stage* s : stages_) s->allocate_cache(slots, capacity, batch);
}

std::vector<GpuBatch> LocalPipeline::run(const kernels::StepPlan& plan) {
  const int64_t slots = stages_.front()->cache_slots();
  const trace::Span span(trace::kSteps, "step of " + std::to_string(plan.num_tokens()) + " tokens");
  std::vector<GpuBatch> batches = split_block(plan, gpu_batch_size_ > 0 ? gpu_batch_size_ : slots, slots);
  for (size_t i = 0; i < stages_.size(); ++i) {
    if (i > 0 && &stages_[i]->backend() != &stages_[i - 1]->backend())
      for (GpuBatch& b : batches) {
        // Through the host: correct for any pair of backends (NCCL between GPU ranks comes with comm/).
        Tensor host = Tensor::empty(b.ctx.hidden.shape(), b.ctx.hidden.dtype());
        stages_[i - 1]->backend().copy(host, b.ctx.hidden);
        b.ctx.hidden = stages_[i]->backend().upload(host, stages_[i]->dtypes().activations);
      }
    stages_[i]->forward_block(batches);
  }
  return batches;
}

Tensor LocalPipeline::forward(const kernels::StepPlan& plan) {
  const std::vector<GpuBatch> batches = run(plan);
  const int64_t V = spec().vocab_size;
  Tensor logits = Tensor::empty({static_cast<int64_t>(plan.logit_rows.size()), V}, DType::F32);  // (R, V) on the host
  for (const GpuBatch& b : batches) {
    Tensor part = Tensor::empty(b.ctx.logits.shape(), DType::F32);  // (R_b, V)
    stages_.back()->backend().copy(part, b.ctx.logits);
    for (size_t r = 0; r < b.logit_index.size(); ++r)
      std::copy_n(part.data<float>() + static_cast<int64_t>(r) * V, V,
                  logits.data<float>() + static_cast<int64_t>(b.logit_index[r]) * V);
  }
  return logits;
}

std::vector<int32_t> LocalPipeline::forward_greedy(const kernels::StepPlan& plan) {
  const std::vector<GpuBatch> batches = run(plan);
  kernels::Backend& be = stages_.back()->backend();
  std::vector<int32_t> out(plan.logit_rows.size());
  for (const GpuBatch& b : batches) {
    const int64_t R = b.ctx.logits.dim(0);
    Tensor ids = be.scratch({R}, DType::I32);
    be.argmax_rows(ids, b.ctx.logits);
    Tensor host = Tensor::empty({R}, DType::I32);  // (R) on the host
    be.copy(host, ids);
    for (int64_t r = 0; r < R; ++r) out[b.logit_index[static_cast<size_t>(r)]] = host.data<int32_t>()[r];
  }
  return out;
}

}  // namespace tiergen
