#include "runtime/generate/executor.h"

#include <algorithm>
#include <string>

#include "runtime/core/error.h"
#include "runtime/core/trace.h"

namespace tiergen {

Tensor Executor::forward(const kernels::StepPlan& plan) {
  submit(plan, /*greedy=*/false);
  return collect().logits;
}

std::vector<int32_t> Executor::forward_greedy(const kernels::StepPlan& plan) {
  submit(plan, /*greedy=*/true);
  return collect().ids;
}

StepOutput step_output(kernels::Backend& be, const std::vector<GpuBatch>& batches, size_t rows, int64_t vocab,
                       bool greedy) {
  StepOutput out;
  if (greedy) {
    out.ids.resize(rows);
    for (const GpuBatch& b : batches) {
      const int64_t R = b.ctx.logits.dim(0);
      Tensor ids = be.scratch({R}, DType::I32);
      be.argmax_rows(ids, b.ctx.logits);
      Tensor host = Tensor::empty({R}, DType::I32);  // (R) on the host
      be.copy(host, ids);
      for (int64_t r = 0; r < R; ++r) out.ids[b.logit_index[static_cast<size_t>(r)]] = host.data<int32_t>()[r];
    }
    return out;
  }
  out.logits = Tensor::empty({static_cast<int64_t>(rows), vocab}, DType::F32);  // (R, V) on the host
  for (const GpuBatch& b : batches) {
    Tensor part = Tensor::empty(b.ctx.logits.shape(), DType::F32);  // (R_b, V)
    be.copy(part, b.ctx.logits);
    for (size_t r = 0; r < b.logit_index.size(); ++r)
      std::copy_n(part.data<float>() + static_cast<int64_t>(r) * vocab, vocab,
                  out.logits.data<float>() + static_cast<int64_t>(b.logit_index[r]) * vocab);
  }
  return out;
}

LocalPipeline::LocalPipeline(std::vector<Stage*> stages, int64_t gpu_batch_size, int micro_batches)
    : stages_(std::move(stages)), gpu_batch_size_(gpu_batch_size), micro_batches_(micro_batches) {
  if (stages_.empty()) throw InvalidArgumentError("a pipeline needs at least one stage");
  if (gpu_batch_size < 0)
    throw InvalidArgumentError("GPU batch size must be positive, got " + std::to_string(gpu_batch_size));
  if (micro_batches < 1)
    throw InvalidArgumentError("micro-batch count must be positive, got " + std::to_string(micro_batches));
}

void LocalPipeline::allocate_cache(int64_t slots, int64_t capacity, int64_t block_slots) {
  for (Stage* s : stages_) s->allocate_cache(slots, capacity, gpu_batch_size_, block_slots);
}

void LocalPipeline::submit(const kernels::StepPlan& plan, bool greedy) {
  const trace::Span span(trace::kSteps, "step of " + std::to_string(plan.num_tokens()) + " tokens");
  std::vector<GpuBatch> batches = stages_.front()->split(plan);
  for (size_t i = 0; i < stages_.size(); ++i) {
    if (i > 0 && &stages_[i]->backend() != &stages_[i - 1]->backend())
      for (GpuBatch& b : batches) {
        // Through the host: correct for any pair of backends (ranks pass it with comm/).
        Tensor host = Tensor::empty(b.ctx.hidden.shape(), b.ctx.hidden.dtype());
        stages_[i - 1]->backend().copy(host, b.ctx.hidden);
        b.ctx.hidden = stages_[i]->backend().upload(host, stages_[i]->dtypes().activations);
      }
    stages_[i]->forward_block(batches);
  }
  done_.push_back(step_output(stages_.back()->backend(), batches, plan.logit_rows.size(), spec().vocab_size, greedy));
}

StepOutput LocalPipeline::collect() {
  TIERGEN_CHECK(!done_.empty(), "collect() without a submitted step");
  StepOutput out = std::move(done_.front());
  done_.pop_front();
  return out;
}

}  // namespace tiergen
