#include "runtime/generate/executor.h"

#include "runtime/core/error.h"

namespace tiergen {

LocalPipeline::LocalPipeline(std::vector<Stage*> stages) : stages_(std::move(stages)) {
  if (stages_.empty()) throw InvalidArgumentError("a pipeline needs at least one stage");
}

void LocalPipeline::allocate_cache(int64_t slots, int64_t capacity) {
  for (Stage* s : stages_) s->allocate_cache(slots, capacity);
}

Tensor LocalPipeline::forward(const kernels::StepPlan& plan) {
  ForwardContext ctx;
  ctx.plan = plan;
  for (size_t i = 0; i < stages_.size(); ++i) {
    if (i > 0 && &stages_[i]->backend() != &stages_[i - 1]->backend()) {
      // Through the host: correct for any pair of backends (NCCL between GPU ranks comes with comm/).
      Tensor host = Tensor::empty(ctx.hidden.shape(), ctx.hidden.dtype());
      stages_[i - 1]->backend().copy(host, ctx.hidden);
      ctx.hidden = stages_[i]->backend().upload(host, stages_[i]->dtypes().activations);
    }
    stages_[i]->forward(ctx);
  }
  Tensor logits = Tensor::empty(ctx.logits.shape(), DType::F32);  // (R, V) on the host
  stages_.back()->backend().copy(logits, ctx.logits);
  return logits;
}

}  // namespace tiergen
