#include "comm/stage_link.h"

#include <chrono>
#include <cstring>

#include "comm/pipeline.h"
#include "runtime/core/error.h"

namespace tiergen::comm {
namespace {

constexpr char kSep = '\x1f';  // between a LinkEnd's fields in its gathered text

std::string encode(const LinkEnd& e, bool accelerator) {
  return e.address + kSep + e.why_not + kSep + std::to_string(static_cast<int>(e.activations)) + kSep +
         (accelerator ? "1" : "0");
}

LinkEnd decode(const std::string& text, bool& accelerator, const std::string& from) {
  std::vector<std::string> f(1);
  for (char c : text)
    if (c == kSep)
      f.emplace_back();
    else
      f.back() += c;
  if (f.size() != 4 || f[2].empty() || f[3].size() != 1)
    throw PeerError("a malformed link description from " + from + " (do all ranks run the same tiergen?)");
  accelerator = f[3] == "1";
  return {f[0], f[1], static_cast<DType>(std::stoi(f[2]))};
}

std::string pair(const Transport& t, int r) { return t.describe(r) + " -> " + t.describe(r + 1); }

}  // namespace

LinkMode parse_link_mode(const std::string& text) {
  if (text == "auto") return LinkMode::Auto;
  if (text == "host") return LinkMode::Host;
  if (text == "nccl") return LinkMode::Device;
  throw InvalidArgumentError("--stage-link must be auto, host or nccl, got '" + text + "'");
}

LinkChoice choose_links(const std::vector<LinkEnd>& ends, LinkMode mode, const Transport& t) {
  LinkChoice c;
  for (size_t r = 0; r + 1 < ends.size(); ++r) {
    const LinkEnd &a = ends[r], &b = ends[r + 1];
    const int ra = static_cast<int>(r);
    std::string why;
    if (mode == LinkMode::Host)
      why = "--stage-link host";
    else if (a.address.empty())
      why = t.describe(ra) + ": " + a.why_not;
    else if (b.address.empty())
      why = t.describe(ra + 1) + ": " + b.why_not;
    else if (a.address == b.address)
      why = "both use the GPU " + a.address + " (NCCL joins two devices)";
    else if (a.activations != b.activations)
      why = std::string("they compute in ") + dtype_name(a.activations) + " and " + dtype_name(b.activations);
    if (!why.empty() && mode == LinkMode::Device)
      throw InvalidArgumentError("--stage-link nccl: the hidden states " + pair(t, ra) +
                                 " cannot go over NCCL: " + why);
    c.device.push_back(why.empty());
    c.why_not.push_back(why);
  }
  return c;
}

StageLinks StageLinks::connect(Transport& t, kernels::Backend& be, DType activations, LinkMode mode, Duration timeout) {
  std::string why_not;
  kernels::PeerConnector* c = mode == LinkMode::Host || t.size() == 1 ? nullptr : be.peers(why_not);
  return connect(t, be, c, why_not, activations, mode, timeout);
}

StageLinks StageLinks::connect(Transport& t, kernels::Backend& be, kernels::PeerConnector* connector,
                               const std::string& why_not, DType activations, LinkMode mode, Duration timeout) {
  StageLinks links;
  if (t.size() == 1) return links;
  LinkEnd mine{connector ? connector->address() : std::string(), connector ? std::string() : why_not, activations};
  std::vector<LinkEnd> ends;
  bool any_accelerator = false;
  int r = 0;
  for (const std::string& text : all_gather_text(t, encode(mine, be.kind() != kernels::DeviceKind::Cpu), timeout)) {
    bool accelerator = false;
    ends.push_back(decode(text, accelerator, t.describe(r++)));
    any_accelerator = any_accelerator || accelerator;
  }
  const LinkChoice choice = choose_links(ends, mode, t);

  // The sender of each device link makes its key and gives it to the receiver: a send never waits,
  // so every rank first offers its next link, then takes its previous one.
  const int me = t.rank(), last = t.size() - 1;
  auto poll = [&t] { t.check_failures(); };
  std::vector<std::byte> next_key;
  if (me < last && choice.device[static_cast<size_t>(me)]) {
    next_key = connector->new_key();
    t.send(me + 1, next_key);
    links.next_ = connector->join(next_key, 0, poll);
  }
  if (me > 0 && choice.device[static_cast<size_t>(me - 1)]) {
    const std::vector<std::byte> key = t.recv(me - 1, timeout);
    links.prev_ = connector->join(key, 1, poll);
  }
  // One small tensor over each link: the join and the connection are set up now, within the
  // timeout, not in the middle of the first step.
  if (links.next_) {
    Tensor probe = be.alloc({1}, DType::I32);
    if (!links.next_->send(probe, timeout) || !links.next_->wait(timeout))
      throw PeerError(t.describe(me) + ": the NCCL link to " + t.describe(me + 1) + " was not up within the deadline");
  }
  if (links.prev_) {
    Tensor probe = be.alloc({1}, DType::I32);
    if (!links.prev_->recv(probe, timeout) || !links.prev_->wait(timeout))
      throw PeerError(t.describe(me) + ": the NCCL link from " + t.describe(me - 1) +
                      " was not up within the deadline");
  }

  if (me == 0 && any_accelerator) {
    std::string device, host;
    for (size_t i = 0; i < choice.device.size(); ++i) {
      const std::string p = "stage " + std::to_string(i) + " -> " + std::to_string(i + 1);
      if (choice.device[i])
        device += (device.empty() ? "" : ", ") + p;
      else
        host += (host.empty() ? "" : "; ") + p + " (" + choice.why_not[i] + ")";
    }
    links.note_ = "hidden states between stages: " + (device.empty() ? "" : "over NCCL for " + device) +
                  (device.empty() || host.empty() ? "" : "; ") +
                  (host.empty() ? "" : "through host memory for " + host);
  }
  return links;
}

void StageLinks::send(Transport& t, kernels::Backend& be, const std::vector<GpuBatch>& batches, Duration timeout) {
  const int peer = t.rank() + 1;
  for (const GpuBatch& b : batches) {
    if (next_) {
      if (!next_->send(b.ctx.hidden, timeout))
        throw PeerError(timeout_message(t, peer, timeout) + " (an NCCL send of a hidden state did not start)");
      continue;
    }
    Tensor host = Tensor::empty(b.ctx.hidden.shape(), b.ctx.hidden.dtype());  // (T_b, C)
    be.copy(host, b.ctx.hidden);
    std::vector<std::byte> bytes(host.nbytes());
    std::memcpy(bytes.data(), host.raw(), bytes.size());
    t.send(peer, std::move(bytes));
  }
}

void StageLinks::recv(Transport& t, Stage& stage, DType wire, std::vector<GpuBatch>& batches, StageClock& clock,
                      Duration timeout) {
  const int peer = t.rank() - 1;
  const int64_t C = stage.model().spec().hidden_size;
  const DType act = stage.dtypes().activations;
  if (prev_) {
    // The ranks chose this link for equal activation dtypes: the bytes are the hidden state as is.
    if (wire != act)
      throw PeerError(t.describe(peer) + " sends hidden states in " + dtype_name(wire) + " over NCCL, " +
                      t.describe(t.rank()) + " computes in " + dtype_name(act));
    auto from = std::chrono::steady_clock::now();
    for (GpuBatch& b : batches) {
      b.ctx.hidden = stage.backend().scratch({b.ctx.plan.num_tokens(), C}, act);  // (T_b, C)
      if (!prev_->recv(b.ctx.hidden, timeout)) throw PeerError(timeout_message(t, peer, timeout) + " (over NCCL)");
    }
    const bool came = prev_->wait(timeout);
    clock.waited(from);
    if (!came) throw PeerError(timeout_message(t, peer, timeout) + " (over NCCL)");
    return;
  }
  for (GpuBatch& b : batches) {
    auto from = std::chrono::steady_clock::now();
    const std::vector<std::byte> bytes = t.recv(peer, timeout);
    clock.waited(from);
    from = std::chrono::steady_clock::now();
    Tensor host = Tensor::empty({b.ctx.plan.num_tokens(), C}, wire);  // (T_b, C)
    if (bytes.size() != host.nbytes())
      throw PeerError(t.describe(t.rank()) + ": a hidden state of " + std::to_string(bytes.size()) + " bytes from " +
                      t.describe(peer) + ", expected " + std::to_string(host.nbytes()) +
                      " (do both ranks run the same model?)");
    std::memcpy(host.raw(), bytes.data(), bytes.size());
    b.ctx.hidden = stage.backend().upload(host, act);
    clock.computed(from);
  }
}

void StageLinks::flush(Transport& t, Duration timeout) {
  if (next_ && !next_->wait(timeout))
    throw PeerError(t.describe(t.rank()) + ": hidden states sent over NCCL were not taken by " +
                    t.describe(t.rank() + 1) + " within the deadline");
}

}  // namespace tiergen::comm
