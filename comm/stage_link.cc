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

// A hidden state that came through host memory, in the stage's tier and dtype: in memory reused
// across steps (Backend::scratch), not a new allocation per step.
Tensor arrive(kernels::Backend& be, const Tensor& host, DType act) {
  Tensor src = host;
  if (host.dtype() != act) {  // converted on the host, once
    src = Tensor::empty(host.shape(), act);
    kernels::convert_on_host(src, host);
  }
  Tensor out = be.scratch(host.shape(), act);  // (T_b, C)
  be.copy(out, src);
  return out;
}

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
  // timeout, not in the middle of the first step. A connection needs both its ranks, so the order
  // is odd-even: even ranks bring up their next link first, odd ranks their previous one, and every
  // link is up after two rounds however long the pipeline (each rank next-first would wait for
  // every link after it, one after another).
  auto probe_next = [&] {
    if (!links.next_) return;
    Tensor probe = be.alloc({1}, DType::I32);
    if (!links.next_->send(probe, timeout) || !links.next_->wait(timeout))
      throw PeerError(t.describe(me) + ": the NCCL link to " + t.describe(me + 1) + " was not up within the deadline");
  };
  auto probe_prev = [&] {
    if (!links.prev_) return;
    Tensor probe = be.alloc({1}, DType::I32);
    if (!links.prev_->recv(probe, timeout) || !links.prev_->wait(timeout))
      throw PeerError(t.describe(me) + ": the NCCL link from " + t.describe(me - 1) +
                      " was not up within the deadline");
  };
  if (me % 2 == 0) {
    probe_next();
    probe_prev();
  } else {
    probe_prev();
    probe_next();
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

void StageLinks::recv(Transport& t, Stage& stage, DType wire, const std::vector<GpuBatch>& sent,
                      std::vector<GpuBatch>& batches, StageClock& clock, Duration timeout) {
  const int peer = t.rank() - 1;
  const int64_t C = stage.model().spec().hidden_size;
  const DType act = stage.dtypes().activations;
  kernels::Backend& be = stage.backend();
  bool same_cut = sent.size() == batches.size();
  for (size_t i = 0; same_cut && i < sent.size(); ++i) same_cut = sent[i].rows == batches[i].rows;
  // Where the cuts differ: each block row's place among the received rows (all of them in the
  // sender's batch order), for the regrouping.
  int64_t total = 0;
  std::vector<int32_t> place;
  if (!same_cut) {
    for (const GpuBatch& b : sent)
      for (int32_t r : b.rows) {
        if (static_cast<size_t>(r) >= place.size()) place.resize(static_cast<size_t>(r) + 1, -1);
        place[static_cast<size_t>(r)] = static_cast<int32_t>(total++);
      }
  }
  auto places_of = [&](const GpuBatch& b) {
    std::vector<int32_t> at;
    for (int32_t r : b.rows) at.push_back(place.at(static_cast<size_t>(r)));
    return at;
  };

  if (prev_) {
    // The ranks chose this link for equal activation dtypes: the bytes are the hidden state as is.
    if (wire != act)
      throw PeerError(t.describe(peer) + " sends hidden states in " + dtype_name(wire) + " over NCCL, " +
                      t.describe(t.rank()) + " computes in " + dtype_name(act));
    const auto from = std::chrono::steady_clock::now();
    Tensor all;  // (total, C): every received row, where the cuts differ
    if (!same_cut) all = be.scratch({total, C}, act);
    int64_t at = 0;
    for (size_t i = 0; i < sent.size(); ++i) {
      const int64_t T = sent[i].ctx.plan.num_tokens();
      Tensor into = same_cut ? be.scratch({T, C}, act) : all.slice_rows(at, at + T);  // (T_b, C)
      at += T;
      if (same_cut) batches[i].ctx.hidden = into;
      if (!prev_->recv(into, timeout)) throw PeerError(timeout_message(t, peer, timeout) + " (over NCCL)");
    }
    const bool came = prev_->wait(timeout);
    clock.waited(from);
    if (!came) throw PeerError(timeout_message(t, peer, timeout) + " (over NCCL)");
    if (same_cut) return;
    const auto regroup = std::chrono::steady_clock::now();
    for (GpuBatch& b : batches) {
      const std::vector<int32_t> at_host = places_of(b);
      Tensor rows = Tensor::empty({static_cast<int64_t>(at_host.size())}, DType::I32);
      std::memcpy(rows.raw(), at_host.data(), at_host.size() * sizeof(int32_t));
      Tensor rows_here = be.scratch(rows.shape(), DType::I32);
      be.copy(rows_here, rows);
      b.ctx.hidden = be.scratch({rows.dim(0), C}, act);  // (T_b, C)
      be.gather_rows(b.ctx.hidden, all, rows_here);
    }
    clock.computed(regroup);
    return;
  }

  std::vector<Tensor> came;  // the sender's batches, on the host, where the cuts differ
  for (size_t i = 0; i < sent.size(); ++i) {
    auto from = std::chrono::steady_clock::now();
    const std::vector<std::byte> bytes = t.recv(peer, timeout);
    clock.waited(from);
    from = std::chrono::steady_clock::now();
    Tensor host = Tensor::empty({sent[i].ctx.plan.num_tokens(), C}, wire);  // (T_b, C)
    if (bytes.size() != host.nbytes())
      throw PeerError(t.describe(t.rank()) + ": a hidden state of " + std::to_string(bytes.size()) + " bytes from " +
                      t.describe(peer) + ", expected " + std::to_string(host.nbytes()) +
                      " (do both ranks run the same model?)");
    std::memcpy(host.raw(), bytes.data(), bytes.size());
    if (same_cut)
      batches[i].ctx.hidden = arrive(be, host, act);
    else
      came.push_back(std::move(host));
    clock.computed(from);
  }
  if (same_cut) return;
  const auto from = std::chrono::steady_clock::now();
  std::vector<std::pair<size_t, int64_t>> where;  // each received row: its batch and row there
  for (size_t i = 0; i < sent.size(); ++i)
    for (int64_t j = 0; j < sent[i].ctx.plan.num_tokens(); ++j) where.emplace_back(i, j);
  const size_t row_bytes = static_cast<size_t>(C) * dtype_size(wire);
  for (GpuBatch& b : batches) {
    const std::vector<int32_t> at = places_of(b);
    Tensor host = Tensor::empty({static_cast<int64_t>(at.size()), C}, wire);  // (T_b, C)
    for (size_t k = 0; k < at.size(); ++k) {
      const auto [i, j] = where[static_cast<size_t>(at[k])];
      std::memcpy(static_cast<char*>(host.raw()) + k * row_bytes,
                  static_cast<const char*>(came[i].raw()) + static_cast<size_t>(j) * row_bytes, row_bytes);
    }
    b.ctx.hidden = arrive(be, host, act);
  }
  clock.computed(from);
}

void StageLinks::flush(Transport& t, Duration timeout) {
  if (next_ && !next_->wait(timeout))
    throw PeerError(t.describe(t.rank()) + ": hidden states sent over NCCL were not taken by " +
                    t.describe(t.rank() + 1) + " within the deadline");
}

}  // namespace tiergen::comm
