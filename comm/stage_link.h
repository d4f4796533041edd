// How a step's hidden states go from one stage to the next. Two ways, chosen per pair of
// neighbouring ranks when the pipeline starts: through host memory as messages of the ranks'
// Transport (any backends, any placement), or device to device over a kernels::PeerLink (NCCL
// between two GPUs), which leaves the host and PCIe out of it. Token ids and logits from the last
// stage, and every control message, always go over the Transport.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "comm/stage_clock.h"
#include "comm/transport.h"
#include "kernels/backend.h"
#include "stage/gpu_batch.h"
#include "stage/stage.h"

namespace tiergen::comm {

// --stage-link: auto (device to device where both ranks can), host (always through host memory),
// nccl (device to device everywhere, else an error before the run).
enum class LinkMode { Auto, Host, Device };
// InvalidArgumentError naming the flag for anything else.
LinkMode parse_link_mode(const std::string& text);

// What one rank brings to its links.
struct LinkEnd {
  std::string address;  // the device's (PeerConnector::address); empty: no device-to-device links
  std::string why_not;  // then why not
  DType activations = DType::F32;
};

// For each link r -> r+1 of `ends` (one per rank, in rank order): whether it goes device to device,
// and why not where it does not. The same answer on every rank, which all compute from the same
// ends. Mode Device: InvalidArgumentError naming the first link that cannot.
struct LinkChoice {
  std::vector<bool> device;          // (ranks - 1)
  std::vector<std::string> why_not;  // (ranks - 1), empty where device
};
LinkChoice choose_links(const std::vector<LinkEnd>& ends, LinkMode mode, const Transport& t);

class StageLinks {
 public:
  // Every hidden state through host memory (a pipeline of one, tests).
  StageLinks() = default;
  // Every rank calls this once its stage is loaded: the ranks share their LinkEnds, choose the
  // links and join the device ones (the sender makes the key and gives it to the receiver over
  // `t`), then move one small tensor over each so that the connection is up before the run.
  // `connector`: this rank's (null: none, `why_not` says why). Waits at most `timeout`.
  static StageLinks connect(Transport& t, kernels::Backend& be, kernels::PeerConnector* connector,
                            const std::string& why_not, DType activations, LinkMode mode, Duration timeout);
  // The same with the backend's own connector (kernels::Backend::peers).
  static StageLinks connect(Transport& t, kernels::Backend& be, DType activations, LinkMode mode, Duration timeout);

  // The hidden states (T_b, C) of a step's `batches` to the next rank, in order.
  void send(Transport& t, kernels::Backend& be, const std::vector<GpuBatch>& batches, Duration timeout);
  // Each of `batches`' hidden state (T_b, C) from the previous rank into its ctx.hidden, in the
  // stage's activation dtype. They arrive in the sender's GPU batches, `sent` (the same block cut
  // at the sender's size), in `wire`, the dtype the sender computes in; where the cuts differ the
  // rows are regrouped. Time blocked on the previous rank is waiting, the rest (copies) computing.
  void recv(Transport& t, Stage& stage, DType wire, const std::vector<GpuBatch>& sent, std::vector<GpuBatch>& batches,
            StageClock& clock, Duration timeout);
  // Waits until every hidden state sent has gone (before the run ends on this rank).
  void flush(Transport& t, Duration timeout);

  // For the log on rank 0: "hidden states between stages: over NCCL" or where and why not.
  const std::string& note() const { return note_; }

 private:
  std::unique_ptr<kernels::PeerLink> prev_, next_;  // device links with rank - 1 and rank + 1, or null
  std::string note_;
};

}  // namespace tiergen::comm
