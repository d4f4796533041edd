// Executor: what the Generator drives. It takes one step's batch layout (kernels::StepPlan) and
// returns the logits of the rows that need them; how the layers run (one stage, a pipeline of
// stages, FlexGen's layer-outer loop with prefetch) is its business, so every such schedule drives
// the same layers and the Generator never changes with them.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/backend.h"
#include "runtime/model/spec.h"
#include "stage/gpu_batch.h"
#include "stage/stage.h"

namespace tiergen {

class Executor {
 public:
  virtual ~Executor() = default;
  virtual const ModelSpec& spec() const = 0;
  // Sizes every KV cache for the run: `slots` sequences of up to `capacity` tokens.
  virtual void allocate_cache(int64_t slots, int64_t capacity) = 0;
  // One forward step of `plan`; the logits of plan.logit_rows, (R, V) f32 on the host.
  virtual Tensor forward(const kernels::StepPlan& plan) = 0;
  // One forward step of `plan`; the argmax of each logit row (R), chosen where the logits were
  // computed: greedy decoding moves R ids to the host instead of R x V floats.
  virtual std::vector<int32_t> forward_greedy(const kernels::StepPlan& plan) = 0;
};

// The stages of one process run one after another, each on its own backend; the hidden state moves
// between backends where two neighbours differ. One stage over every layer is the single-device
// engine: a pipeline of one, not a second code path.
class LocalPipeline final : public Executor {
 public:
  // Stages in layer order, together covering the model (not owned). A block runs as GPU batches of
  // `gpu_batch_size` sequences (stage/gpu_batch.h); 0: the whole block as one batch.
  explicit LocalPipeline(std::vector<Stage*> stages, int64_t gpu_batch_size = 0);
  const ModelSpec& spec() const override { return stages_.front()->model().spec(); }
  void allocate_cache(int64_t slots, int64_t capacity) override;
  Tensor forward(const kernels::StepPlan& plan) override;
  std::vector<int32_t> forward_greedy(const kernels::StepPlan& plan) override;

 private:
  // Runs every stage over the block's GPU batches; each batch's context holds its logits in the
  // last stage's backend's tier.
  std::vector<GpuBatch> run(const kernels::StepPlan& plan);

  std::vector<Stage*> stages_;
  int64_t gpu_batch_size_;
};

}  // namespace tiergen
