// The pipeline over ranks: each rank runs one Stage (a contiguous range of the layer list) and the
// block schedule over it; rank 0 also drives the Generator. A block's step flows rank 0 -> 1 -> ...
// -> N-1 as one message with the step plan and then each GPU batch's hidden state (T_b, C), over
// the Transport or device to device (comm/stage_link.h); each stage may cut a block into GPU
// batches of its own size, the hidden states crossing in the sender's; the last rank sends rank 0 the step's greedy ids
// or logits. Several blocks are in flight at once (micro-batches, Executor::max_in_flight), so while rank 0 samples one
// block's tokens the other ranks compute the others' layers. A pipeline of one rank is the same executor with nobody to
// send to.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstring>
#include <deque>
#include <exception>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "comm/stage_clock.h"
#include "comm/stage_link.h"
#include "comm/transport.h"
#include "runtime/core/error.h"
#include "runtime/engine/model.h"
#include "runtime/generate/executor.h"
#include "runtime/generate/run_plan.h"
#include "stage/stage.h"

namespace tiergen::comm {

// Each stage's span of the layer list for `num_layers` decoder layers over `stages` stages: the
// first takes the embedding, the last the head. `first_layers` (optional, one per stage after the
// first, increasing): the decoder layer each of those stages starts at; without it the decoder
// layers are shared out evenly (the first stages take one more where they do not divide).
// InvalidArgumentError for more stages than decoder layers and for cuts out of order or range.
std::vector<LayerSpan> stage_spans(int64_t num_layers, int stages, const std::vector<int64_t>& first_layers = {});
// The decoder layers [first, end) that `span` of the layer list holds.
std::pair<int64_t, int64_t> decoder_layers(LayerSpan span, int64_t num_layers);
// Which ends of the model `span` holds: the embedding (the first stage's), the head (the last's).
ModelEnds span_ends(LayerSpan span, int64_t num_layers);
// "decoder layers 0-11 and the embedding" for messages and `tiergen plan`.
std::string describe_span(LayerSpan span, int64_t num_layers);

// Every rank's check before a step (memory plan, flags, devices): each rank passes what went
// wrong on it (null: nothing); all ranks learn every rank's failure and throw the first one, of
// its kind, naming the rank, so that a bad configuration is one clear error everywhere, before any
// rank loads a weight. Waits at most `timeout`.
void agree(Transport& t, const std::exception_ptr& mine, Duration timeout);

// Rank 0's RunShape, given to every rank (the others pass anything): each checks its own memory
// plan for it. Waits at most `timeout`.
RunShape share_shape(Transport& t, const RunShape& shape, Duration timeout);

// Every rank's `mine`, in rank order, on every rank (through rank 0). Waits at most `timeout`.
std::vector<std::vector<std::byte>> all_gather(Transport& t, std::vector<std::byte> mine, Duration timeout);
// The same for text (each rank's part of a report, a stage's settings).
std::vector<std::string> all_gather_text(Transport& t, const std::string& mine, Duration timeout);
// The same for values of a trivially copyable type, the same count from every rank (cost estimates,
// roofline bounds): PeerError for a rank whose count differs.
template <class T>
std::vector<std::vector<T>> all_gather_values(Transport& t, const std::vector<T>& mine, Duration timeout) {
  static_assert(std::is_trivially_copyable_v<T>);
  const size_t n = mine.size() * sizeof(T);
  std::vector<std::byte> bytes(n);
  if (n > 0) std::memcpy(bytes.data(), mine.data(), n);
  std::vector<std::vector<T>> all;
  for (const auto& b : all_gather(t, std::move(bytes), timeout)) {
    if (b.size() != n)
      throw PeerError("a malformed message from another rank: " + std::to_string(b.size()) + " bytes where " +
                      std::to_string(n) + " were expected");
    auto& v = all.emplace_back(mine.size());
    if (n > 0) std::memcpy(v.data(), b.data(), n);
  }
  return all;
}

// The executor on rank 0. `stage` is this rank's; `timeout` bounds every wait for another rank.
class PipelineExecutor final : public Executor {
 public:
  // `gpu_batch_size` as LocalPipeline's (0: one batch per block); `micro_batches`: blocks in flight;
  // `links`: how hidden states reach rank 1 (null: through host memory), outliving the executor.
  PipelineExecutor(Stage& stage, Transport& t, int64_t gpu_batch_size, int micro_batches, Duration timeout,
                   StageLinks* links = nullptr);
  // Tells the other ranks the run is over (they return from serve_stage).
  ~PipelineExecutor() override;
  PipelineExecutor(const PipelineExecutor&) = delete;
  PipelineExecutor& operator=(const PipelineExecutor&) = delete;

  const ModelSpec& spec() const override { return stage_.model().spec(); }
  int max_in_flight() const override { return micro_batches_; }
  void allocate_cache(int64_t slots, int64_t capacity, int64_t block_slots) override;
  void submit(const kernels::StepPlan& plan, bool greedy) override;
  StepOutput collect() override;
  // Ends the run on every rank (the destructor does it too, without reporting a failure).
  void stop();
  // Every stage's times since the previous report (or the start), in rank order, with their trace
  // events when `trace` (for one merged trace: trace::write_merged). Only between runs: no step in
  // flight. Waits at most the timeout for the last rank.
  std::vector<StageTimes> report(bool trace);
  // The GPU batch of the next allocate_cache (a benchmark runs several batch shapes).
  void set_gpu_batch_size(int64_t g) { gpu_batch_size_ = g; }

 private:
  Stage& stage_;
  Transport& t_;
  StageLinks host_links_;  // when none were given
  StageLinks& links_;
  int64_t gpu_batch_size_;
  int micro_batches_;
  Duration timeout_;
  bool stopped_ = false;
  std::deque<StepOutput> done_;  // a pipeline of one: results of steps run at submit
  int in_flight_ = 0;
  StageClock clock_;
};

// What a rank other than 0 does for a run: serves the steps that come from the rank before it,
// until rank 0 ends the run. Every wait is bounded by `timeout`; on any error the rank reports it to
// the others (Transport::abort) and rethrows. `links`: how hidden states come and go (null: through
// host memory). `gpu_batch_size`: this stage's own GPU batch (0: rank 0's cut of a block).
void serve_stage(Stage& stage, Transport& t, Duration timeout, StageLinks* links = nullptr, int64_t gpu_batch_size = 0);

// Runs `body` and, when it throws, tells the other ranks why before rethrowing: their waits end
// with this rank's error rather than a deadline.
template <class Body>
auto reporting_failures(Transport& t, Body body) {
  try {
    return body();
  } catch (const std::exception& e) {
    t.abort(e.what());
    throw;
  }
}

}  // namespace tiergen::comm
