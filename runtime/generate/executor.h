// Executor: what the Generator drives. It takes one step's batch layout (kernels::StepPlan) and
// returns the logits of the rows that need them; how the layers run (one stage, a pipeline of
// stages, FlexGen's layer-outer loop with prefetch) is its business, so every such schedule drives
// the same layers and the Generator never changes with them.
//
// Steps are submitted and collected apart: a pipeline of N stages keeps several blocks of sequences
// (micro-batches) moving at once, each in its own KV cache slots, so that while the last stage
// finishes one block's step the first has started another's. Results come back in submission order.
#pragma once

#include <cstdint>
#include <deque>
#include <vector>

#include "kernels/backend.h"
#include "runtime/model/spec.h"
#include "stage/gpu_batch.h"
#include "stage/stage.h"

namespace tiergen {

// What one step returns: the argmax of each logit row (greedy steps), or the rows' logits.
struct StepOutput {
  std::vector<int32_t> ids;  // (R), greedy steps
  Tensor logits;             // (R, V) f32 on the host, other steps
};

class Executor {
 public:
  virtual ~Executor() = default;
  virtual const ModelSpec& spec() const = 0;
  // Steps that may be in flight at once (blocks the Generator keeps moving together): 1 for a
  // schedule that finishes each step before the next, the micro-batch count for a pipeline.
  virtual int max_in_flight() const { return 1; }
  // Sizes every KV cache for the run: `slots` sequences of up to `capacity` tokens, in blocks of
  // `block_slots` slots (each in-flight block owns one such range of slots).
  virtual void allocate_cache(int64_t slots, int64_t capacity, int64_t block_slots) = 0;
  // Starts one forward step of `plan` (one block's sequences, at their slots). Greedy steps return
  // the argmax of each logit row, chosen where the logits were computed: R ids cross to the host
  // instead of R x V floats.
  virtual void submit(const kernels::StepPlan& plan, bool greedy) = 0;
  // The result of the oldest submitted step not yet collected.
  virtual StepOutput collect() = 0;

  // One step, submitted and collected: the logits of plan.logit_rows, (R, V) f32 on the host.
  Tensor forward(const kernels::StepPlan& plan);
  // One greedy step: the argmax of each logit row (R).
  std::vector<int32_t> forward_greedy(const kernels::StepPlan& plan);
};

// Runs the last stage's head output of `batches` (their ctx.logits on `be`) into a StepOutput for
// the block plan they were cut from (`rows` logit rows): the argmax ids when `greedy`, else the
// logits gathered into plan order on the host. Shared by every executor that ends a step.
StepOutput step_output(kernels::Backend& be, const std::vector<GpuBatch>& batches, size_t rows, int64_t vocab,
                       bool greedy);

// The stages of one process run one after another, each on its own backend; the hidden state moves
// between backends where two neighbours differ. One stage over every layer is the single-device
// engine: a pipeline of one, not a second code path. Each step runs when it is submitted.
class LocalPipeline final : public Executor {
 public:
  // Stages in layer order, together covering the model (not owned). A block runs as GPU batches of
  // `gpu_batch_size` sequences (stage/gpu_batch.h); 0: the whole block as one batch.
  // `micro_batches` blocks may be in flight (the Generator's waves; results are the same for any).
  explicit LocalPipeline(std::vector<Stage*> stages, int64_t gpu_batch_size = 0, int micro_batches = 1);
  const ModelSpec& spec() const override { return stages_.front()->model().spec(); }
  int max_in_flight() const override { return micro_batches_; }
  void allocate_cache(int64_t slots, int64_t capacity, int64_t block_slots) override;
  void submit(const kernels::StepPlan& plan, bool greedy) override;
  StepOutput collect() override;

 private:
  std::vector<Stage*> stages_;
  int64_t gpu_batch_size_;
  int micro_batches_;
  std::deque<StepOutput> done_;
};

}  // namespace tiergen
