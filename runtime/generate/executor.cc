#include "runtime/generate/executor.h"

#include "runtime/core/error.h"

namespace tiergen {

LocalPipeline::LocalPipeline(std::vector<Stage*> stages) : stages_(std::move(stages)) {
  if (stages_.empty()) throw InvalidArgumentError("a pipeline needs at least one stage");
}

void LocalPipeline::allocate_cache(int64_t slots, int64_t capacity) {
  for (Stage* s : stages_) s->allocate_cache(slots, capacity);
}

ForwardContext LocalPipeline::run(const kernels::StepPlan& plan) {
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
  return ctx;
}

Tensor LocalPipeline::forward(const kernels::StepPlan& plan) {
  const ForwardContext ctx = run(plan);
  Tensor logits = Tensor::empty(ctx.logits.shape(), DType::F32);  // (R, V) on the host
  stages_.back()->backend().copy(logits, ctx.logits);
  return logits;
}

std::vector<int32_t> LocalPipeline::forward_greedy(const kernels::StepPlan& plan) {
  const ForwardContext ctx = run(plan);
  kernels::Backend& be = stages_.back()->backend();
  const int64_t R = ctx.logits.dim(0);
  Tensor ids = be.scratch({R}, DType::I32);
  be.argmax_rows(ids, ctx.logits);
  Tensor host = Tensor::empty({R}, DType::I32);  // (R) on the host
  be.copy(host, ids);
  return {host.data<int32_t>(), host.data<int32_t>() + R};
}

}  // namespace tiergen
