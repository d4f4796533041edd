#include "stage/weight_stream.h"

#include <algorithm>
#include <cstring>
#include <string>

#include "kernels/lane_span.h"
#include "runtime/core/error.h"
#include "runtime/core/trace.h"

namespace tiergen {
namespace {

// Each weight's view in a compute buffer starts on a 256-byte boundary: a cache line on the CPU,
// and what cuBLAS's fastest kernels want on the GPU.
constexpr size_t kViewAlign = 256;

size_t round_up(size_t n, size_t a) { return (n + a - 1) / a * a; }

// `t` converted to `dtype` in new host memory of its own.
Tensor host_copy(const Tensor& t, DType dtype) {
  Tensor out = Tensor::empty(t.shape(), dtype);
  kernels::convert_on_host(out, t);
  return out;
}

// The first kDirectAlign boundary in a host buffer (bounce buffers have that much slack).
char* aligned(const Tensor& t) {
  const auto p = reinterpret_cast<uintptr_t>(t.raw());
  return reinterpret_cast<char*>(round_up(p, io::kDirectAlign));
}

// A view of `bytes` of `buf` at `offset`, as a U8 tensor.
Tensor bytes_view(const Tensor& buf, size_t offset, size_t bytes) {
  return Tensor(buf.storage(), buf.offset_bytes() + offset, {static_cast<int64_t>(bytes)}, DType::U8);
}

// A tensor's bytes as U8, for copies between views of different shapes.
Tensor as_bytes(const Tensor& t) {
  return Tensor(t.storage(), t.offset_bytes(), {static_cast<int64_t>(t.nbytes())}, DType::U8);
}

}  // namespace

WeightStream::WeightStream(kernels::Backend& be, std::optional<DType> dtype, const TierShares& shares,
                           io::OffloadDir* dir, bool overlap, std::chrono::milliseconds deadline)
    : be_(be), dtype_(dtype), shares_(shares), dir_(dir), overlap_(overlap), deadline_(deadline) {
  TIERGEN_CHECK(dir_ || shares.disk() <= 0, "WeightStream: weights on disk without an offload folder");
}

WeightStream::WeightStream(kernels::Backend& be, const Model& model, size_t begin, size_t end, const TierShares& shares,
                           io::OffloadDir* dir, bool overlap, std::chrono::milliseconds deadline)
    : WeightStream(be, std::nullopt, shares, dir, overlap, deadline) {
  TIERGEN_CHECK(begin <= end && end <= model.layers().size(), "WeightStream: layer range");
  for (size_t i = begin; i < end; ++i) adopt(i, *model.layers()[i]);
  finish();
}

WeightStream::~WeightStream() {
  for (auto& [k, t] : pending_) {
    try {
      t.wait(deadline_);  // the I/O thread must be done with the buffers before they go
    } catch (...) {       // the run is already ending; its error was or will be reported
    }
  }
}

void WeightStream::adopt(size_t index, Layer& layer) {
  if (by_layer_.size() <= index) by_layer_.resize(index + 1, SIZE_MAX);
  std::vector<Tensor*> ws = layer.weights();
  if (layer.decoder_index() < 0) {  // the embedding and the head: wholly on the compute tier
    if (on_cpu()) return;
    for (Tensor* w : ws) {
      const DType dt = dtype_.value_or(w->dtype());
      auto [it, fresh] = placed_.try_emplace({w->raw(), dt});
      if (fresh) it->second = be_.upload(*w, dt);
      *w = it->second;
    }
    return;
  }
  // On a CPU the GPU's share and the CPU's are both resident: what is not on disk stays.
  const TierShares shares = on_cpu() ? TierShares{shares_.gpu + shares_.cpu, 0} : shares_;
  std::vector<WeightRows> rows;
  for (Tensor* w : ws) {
    TIERGEN_CHECK(w->defined() && w->rank() >= 1 && w->dim(0) > 0, layer.name() + ": a weight without rows");
    TIERGEN_CHECK(host_addressable(w->tier()), layer.name() + ": placing weights that are not on the host");
    const uint64_t bytes = static_cast<uint64_t>(w->numel()) * dtype_size(dtype_.value_or(w->dtype()));
    rows.push_back({layer.name(), w->dim(0), bytes / static_cast<uint64_t>(w->dim(0))});
  }
  const std::vector<RowSplit> split = place_rows(rows, shares);
  Streamed st;
  st.layer = index;
  uint64_t file_offset = 0;
  size_t buffer_offset = 0, bounce_offset = 0;
  for (size_t t = 0; t < ws.size(); ++t) {
    Tensor& w = *ws[t];
    const DType dt = dtype_.value_or(w.dtype());
    const RowSplit& s = split[t];
    const uint64_t rb = rows[t].row_bytes;
    if (s.gpu_rows == w.dim(0)) {  // wholly resident: bound for good
      if (!on_cpu())
        w = be_.upload(w, dt);
      else if (w.dtype() != dt)
        w = host_copy(w, dt);
      resident_bytes_ += w.nbytes();
      continue;
    }
    Part p{ws[t], Tensor(), Tensor(), w.shape(), dt, 0, 0, buffer_offset, bounce_offset};
    const int64_t g = s.gpu_rows, c = s.cpu_rows, d = s.disk_rows;
    if (g > 0) {  // its own bytes: the rest of the tensor is released
      const Tensor rows_g = w.slice_rows(0, g);
      p.resident = on_cpu() ? host_copy(rows_g, dt) : be_.upload(rows_g, dt);
      resident_bytes_ += p.resident.nbytes();
    }
    if (c > 0) {
      const Tensor rows_c = w.slice_rows(g, g + c);
      p.host = pin_ ? be_.alloc_host(rows_c.shape(), dt) : Tensor::empty(rows_c.shape(), dt);
      kernels::convert_on_host(p.host, rows_c);
      host_bytes_ += p.host.nbytes();
    }
    if (d > 0) {
      if (!st.file) st.file = std::make_unique<io::DiskFile>(dir_->file("layer-" + std::to_string(index)));
      const Tensor rows_d = host_copy(w.slice_rows(g + c, g + c + d), dt);
      p.disk_bytes = static_cast<uint64_t>(d) * rb;
      io::AlignedBuffer staging(p.disk_bytes);  // O_DIRECT writes from aligned memory
      std::memcpy(staging.data(), rows_d.raw(), p.disk_bytes);
      p.disk_offset = file_offset;
      st.file->write(file_offset, staging.data(), p.disk_bytes);
      file_offset += io::round_up_direct(p.disk_bytes);
      bounce_offset += io::round_up_direct(p.disk_bytes);
      disk_bytes_ += p.disk_bytes;
    }
    buffer_offset = round_up(buffer_offset + static_cast<size_t>(w.dim(0)) * rb, kViewAlign);
    w = Tensor();  // the whole tensor is released; the layer gets a view at each step
    st.parts.push_back(std::move(p));
  }
  if (st.parts.empty()) return;
  buffer_bytes_ = std::max(buffer_bytes_, buffer_offset);
  bounce_bytes_ = std::max(bounce_bytes_, bounce_offset);
  by_layer_[index] = streamed_.size();
  streamed_.push_back(std::move(st));
}

void WeightStream::finish() {
  if (streamed_.empty() || !buffers_.empty()) return;
  for (int b = 0; b < kStreamedWeightBuffers; ++b) {
    buffers_.push_back(be_.alloc({static_cast<int64_t>(buffer_bytes_)}, DType::U8));
    if (bounce_bytes_ > 0)
      bounce_.push_back(be_.alloc_host({static_cast<int64_t>(bounce_bytes_ + io::kDirectAlign)}, DType::U8));
  }
  loaded_.resize(kStreamedWeightBuffers);
  computed_.resize(kStreamedWeightBuffers);
  if (overlap_ && (on_cpu() || bounce_bytes_ > 0)) pool_ = std::make_unique<io::IoPool>(1);
}

void WeightStream::read_disk(size_t k) {
  const Streamed& st = streamed_[k];
  if (!st.file) return;
  const size_t slot = k % kStreamedWeightBuffers;
  // A GPU run's last copy out of this bounce buffer (an earlier layer's) must be done before it is reused.
  if (!on_cpu()) be_.host_wait(loaded_[slot], deadline_, "copying the weights of layer " + std::to_string(st.layer));
  const trace::Span span(trace::kDisk, "weights of layer " + std::to_string(st.layer));
  char* bounce = aligned(bounce_[slot]);
  char* buf = static_cast<char*>(buffers_[slot].raw());
  for (const Part& p : st.parts) {
    if (p.disk_bytes == 0) continue;
    st.file->read(p.disk_offset, bounce + p.bounce_offset, p.disk_bytes);
    if (on_cpu()) {
      const size_t before = (p.resident.defined() ? p.resident.nbytes() : 0);
      std::memcpy(buf + p.buffer_offset + before, bounce + p.bounce_offset, p.disk_bytes);
    }
  }
}

void WeightStream::start_fill(size_t k) {
  const size_t slot = k % kStreamedWeightBuffers;
  const Streamed& st = streamed_[k];
  started_.push_back(k);
  if (on_cpu()) {  // host memory: the whole fill is plain copies and reads, off the compute thread
    auto job = [this, k, slot] {
      char* buf = static_cast<char*>(buffers_[slot].raw());
      for (const Part& p : streamed_[k].parts)
        if (p.resident.defined()) std::memcpy(buf + p.buffer_offset, p.resident.raw(), p.resident.nbytes());
      read_disk(k);
    };
    if (overlap_) {
      pending_[k] = pool_->submit(job, "reading the weights of layer " + std::to_string(st.layer));
    } else {
      job();
    }
    return;
  }
  // The buffer is free once the compute that read it (an earlier layer's) is done; without overlap the
  // copies also wait for all compute queued so far.
  be_.wait(kernels::Lane::Load, computed_[slot]);
  if (!overlap_) be_.wait(kernels::Lane::Load, be_.record(kernels::Lane::Compute));
  const kernels::LaneSpan span(be_, kernels::Lane::Load, trace::kLoad, "weights of layer " + std::to_string(st.layer));
  for (const Part& p : st.parts) {
    size_t at = p.buffer_offset;
    for (const Tensor* src : {&p.resident, &p.host}) {
      if (!src->defined()) continue;
      Tensor dst = bytes_view(buffers_[slot], at, src->nbytes());
      be_.copy_async(dst, as_bytes(*src), kernels::Lane::Load);
      at += src->nbytes();
    }
  }
  // Recorded here, not when the layer lands: by then the next layers' copies are queued behind
  // these, and the layer's compute would wait for them too.
  loaded_[slot] = be_.record(kernels::Lane::Load);
  if (!st.file) return;
  if (overlap_) {
    pending_[k] =
        pool_->submit([this, k] { read_disk(k); }, "reading the weights of layer " + std::to_string(st.layer));
  } else {
    read_disk(k);
  }
}

void WeightStream::land(size_t k) {
  const size_t slot = k % kStreamedWeightBuffers;
  Streamed& st = streamed_[k];
  if (started_.empty() || started_.front() != k) {  // out of order (a stage run on a layer subset)
    wait_pending();
    started_.clear();
    start_fill(k);
  }
  started_.pop_front();
  if (auto it = pending_.find(k); it != pending_.end()) {
    io::IoTicket t = std::move(it->second);
    pending_.erase(it);
    t.wait(deadline_);
  }
  if (!on_cpu()) {
    if (st.file) {
      const Tensor& bounce = bounce_[slot];
      const size_t base = static_cast<size_t>(aligned(bounce) - static_cast<char*>(bounce.raw()));
      for (const Part& p : st.parts) {
        if (p.disk_bytes == 0) continue;
        const size_t before =
            (p.resident.defined() ? p.resident.nbytes() : 0) + (p.host.defined() ? p.host.nbytes() : 0);
        Tensor dst = bytes_view(buffers_[slot], p.buffer_offset + before, p.disk_bytes);
        be_.copy_async(dst, bytes_view(bounce, base + p.bounce_offset, p.disk_bytes), kernels::Lane::Load);
      }
      loaded_[slot] = be_.record(kernels::Lane::Load);
    }
    be_.wait(kernels::Lane::Compute, loaded_[slot]);
  }
  const Tensor& buf = buffers_[slot];
  for (const Part& p : st.parts)
    *p.bound = Tensor(buf.storage(), buf.offset_bytes() + p.buffer_offset, p.shape, p.dtype);
}

void WeightStream::begin_step() {
  if (streamed_.empty() || !overlap_ || !started_.empty()) return;
  for (size_t k = 0; k + 1 < kStreamedWeightBuffers && k < streamed_.size(); ++k) start_fill(k);
}

void WeightStream::wait_pending() {
  std::map<size_t, io::IoTicket> all;
  all.swap(pending_);
  for (auto& [k, t] : all) t.wait(deadline_);
}

void WeightStream::before_layer(size_t i) {
  if (i >= by_layer_.size() || by_layer_[i] == SIZE_MAX) return;
  const size_t k = by_layer_[i];
  land(k);
  // The streamed layer kStreamedWeightBuffers - 1 ahead goes to the buffer the previous layer used,
  // once that layer's compute is done with it.
  const size_t next = k + kStreamedWeightBuffers - 1;
  if (overlap_ && next < streamed_.size()) start_fill(next);
}

void WeightStream::after_layer(size_t i) {
  if (i >= by_layer_.size() || by_layer_[i] == SIZE_MAX || on_cpu()) return;
  computed_[by_layer_[i] % kStreamedWeightBuffers] = be_.record(kernels::Lane::Compute);
}

}  // namespace tiergen
