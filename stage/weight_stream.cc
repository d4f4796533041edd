#include "stage/weight_stream.h"

#include <algorithm>
#include <cstring>
#include <string>

#include "runtime/core/error.h"

namespace tiergen {
namespace {

constexpr size_t kViewAlign = 64;  // each weight's view in a compute buffer starts on a cache line

size_t round_up(size_t n, size_t a) { return (n + a - 1) / a * a; }

}  // namespace

WeightStream::WeightStream(const Model& model, size_t begin, size_t end, const TierShares& shares, io::OffloadDir& dir,
                           bool overlap, std::chrono::milliseconds deadline)
    : by_layer_(end - begin, SIZE_MAX), begin_(begin), overlap_(overlap), deadline_(deadline) {
  TIERGEN_CHECK(begin <= end && end <= model.layers().size(), "WeightStream: layer range");
  // On a CPU the GPU's share and the CPU's are both memory: what is not on disk stays.
  const TierShares memory{shares.gpu + shares.cpu, 0};
  size_t buffer_bytes = 0, bounce_bytes = 0;
  for (size_t i = begin; i < end; ++i) {
    Layer& layer = *model.layers()[i];
    if (layer.decoder_index() < 0) continue;  // the embedding and the head stay in memory
    std::vector<Tensor*> ws = layer.weights();
    std::vector<WeightRows> rows;
    for (Tensor* w : ws) {
      TIERGEN_CHECK(w->defined() && w->rank() >= 1 && w->dim(0) > 0, layer.name() + ": a weight without rows");
      TIERGEN_CHECK(w->tier() != Tier::Gpu, layer.name() + ": streaming weights that live on the GPU");
      rows.push_back({layer.name(), w->dim(0), w->nbytes() / static_cast<uint64_t>(w->dim(0))});
    }
    const std::vector<RowSplit> split = place_rows(rows, memory);
    uint64_t layer_disk = 0;
    for (const RowSplit& s : split) layer_disk += static_cast<uint64_t>(s.disk_rows);
    if (layer_disk == 0) {  // all in memory: the layer's tensors stay as they are
      memory_bytes_ += layer.weight_bytes();
      continue;
    }
    Streamed st;
    st.layer = i;
    st.file = std::make_unique<io::DiskFile>(dir.file("layer-" + std::to_string(i)));
    uint64_t file_offset = 0;
    size_t buffer_offset = 0;
    for (size_t t = 0; t < ws.size(); ++t) {
      Tensor& w = *ws[t];
      const uint64_t row_bytes = rows[t].row_bytes;
      Part p{ws[t], Tensor(), w.shape(), w.dtype(), 0, 0, 0, 0};
      p.resident_bytes = static_cast<uint64_t>(split[t].gpu_rows) * row_bytes;
      p.disk_bytes = static_cast<uint64_t>(split[t].disk_rows) * row_bytes;
      if (p.disk_bytes == 0) {  // wholly in memory: no copy, the layer keeps its tensor
        memory_bytes_ += w.nbytes();
        continue;
      }
      if (p.resident_bytes > 0) {
        p.resident = w.slice_rows(0, split[t].gpu_rows);
        Tensor copy = Tensor::empty(p.resident.shape(), p.dtype);  // its own bytes: the rest is released
        std::memcpy(copy.raw(), p.resident.raw(), p.resident_bytes);
        p.resident = copy;
      }
      // The disk rows, through an aligned buffer, to their own 4 KiB-aligned range of the file.
      io::AlignedBuffer staging(p.disk_bytes);
      std::memcpy(staging.data(), static_cast<const char*>(w.raw()) + p.resident_bytes, p.disk_bytes);
      p.disk_offset = file_offset;
      st.file->write(file_offset, staging.data(), p.disk_bytes);
      file_offset += io::round_up_direct(p.disk_bytes);
      p.buffer_offset = buffer_offset;
      buffer_offset = round_up(buffer_offset + w.nbytes(), kViewAlign);
      bounce_bytes = std::max<size_t>(bounce_bytes, p.disk_bytes);
      memory_bytes_ += p.resident_bytes;
      disk_bytes_ += p.disk_bytes;
      w = Tensor();  // the whole tensor is released; the layer gets a view at each step
      st.parts.push_back(std::move(p));
    }
    buffer_bytes = std::max(buffer_bytes, buffer_offset);
    by_layer_[i - begin] = streamed_.size();
    streamed_.push_back(std::move(st));
  }
  if (streamed_.empty()) return;
  for (int b = 0; b < 2; ++b) {
    buffers_.push_back(Tensor::empty({static_cast<int64_t>(buffer_bytes)}, DType::U8));
    bounce_.emplace_back(bounce_bytes);
  }
  if (overlap_) pool_ = std::make_unique<io::IoPool>(1);
}

WeightStream::~WeightStream() {
  if (pending_.valid()) {
    try {
      pending_.wait(deadline_);  // the I/O thread must be done with the buffers before they go
    } catch (...) {              // the run is already ending; its error was or will be reported
    }
  }
}

void WeightStream::fill(size_t k) {
  const size_t slot = k % 2;
  Streamed& st = streamed_[k];
  char* buf = static_cast<char*>(buffers_[slot].raw());
  for (const Part& p : st.parts) {
    char* dst = buf + p.buffer_offset;
    if (p.resident_bytes) std::memcpy(dst, p.resident.raw(), p.resident_bytes);
    st.file->read(p.disk_offset, bounce_[slot].data(), p.disk_bytes);
    std::memcpy(dst + p.resident_bytes, bounce_[slot].data(), p.disk_bytes);
  }
}

void WeightStream::begin_step() {
  if (streamed_.empty() || !overlap_ || pending_.valid()) return;
  pending_k_ = 0;
  pending_ = pool_->submit([this] { fill(0); }, "reading the weights of layer " + streamed_[0].file->path());
}

void WeightStream::before_layer(size_t i) {
  if (i < begin_ || i - begin_ >= by_layer_.size()) return;
  const size_t k = by_layer_[i - begin_];
  if (k == SIZE_MAX) return;
  // The prefetch in flight lands first, whichever layer it is (another one when a stage runs out of
  // order); k is read here unless it was that one.
  const bool prefetched = pending_.valid() && pending_k_ == k;
  if (pending_.valid()) {
    io::IoTicket t = std::move(pending_);
    pending_ = io::IoTicket();
    t.wait(deadline_);
  }
  if (!prefetched) fill(k);
  const Tensor& buf = buffers_[k % 2];
  for (const Part& p : streamed_[k].parts) *p.bound = Tensor(buf.storage(), p.buffer_offset, p.shape, p.dtype);
  // The next streamed layer goes to the other buffer, whose layer has finished.
  if (overlap_ && k + 1 < streamed_.size()) {
    pending_k_ = k + 1;
    pending_ = pool_->submit([this, n = k + 1] { fill(n); }, "reading the weights of " + streamed_[k + 1].file->path());
  }
}

}  // namespace tiergen
