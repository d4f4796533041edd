#include "stage/kv_stream.h"

#include <algorithm>
#include <cstring>
#include <exception>
#include <string>

#include "runtime/core/error.h"

namespace tiergen {

KvStream::KvStream(std::vector<int64_t> widths, DType dtype, const TierShares& shares, io::OffloadDir& dir,
                   bool overlap, std::chrono::milliseconds deadline)
    : widths_(std::move(widths)),
      dtype_(dtype),
      shares_(shares),
      overlap_(overlap),
      deadline_(deadline),
      homes_(widths_.size()),
      views_(widths_.size()),
      held_(widths_.size(), SIZE_MAX) {
  for (size_t i = 0; i < widths_.size(); ++i)
    if (widths_[i] > 0) homes_[i].file = std::make_unique<io::DiskFile>(dir.file("kv-cache-" + std::to_string(i)));
  if (overlap_) pool_ = std::make_unique<io::IoPool>(1);
}

KvStream::~KvStream() {
  try {
    drain();       // the I/O thread must be done with the buffers before they go
  } catch (...) {  // the run is already ending; its error was or will be reported
  }
}

uint64_t KvStream::row_bytes(size_t layer) const { return static_cast<uint64_t>(widths_[layer]) * dtype_size(dtype_); }

uint64_t KvStream::region_offset(int kv, int64_t slot) const {
  const auto disk_slots = static_cast<uint64_t>(slots_ - first_disk_slot_);
  return (static_cast<uint64_t>(kv) * disk_slots + static_cast<uint64_t>(slot - first_disk_slot_)) * region_bytes_;
}

bool KvStream::in_memory(int64_t first_slot, int64_t num_slots) const {
  return (first_slot + num_slots) * capacity_ <= memory_rows_;
}

void KvStream::allocate(int64_t slots, int64_t capacity, int64_t batch_slots) {
  if (slots <= 0 || capacity <= 0 || batch_slots <= 0)
    throw InvalidArgumentError("KV cache needs at least one slot and one token, got " + std::to_string(slots) + " x " +
                               std::to_string(capacity));
  if (slots == slots_ && capacity == capacity_ && batch_slots == batch_slots_) return;
  drain();
  slots_ = slots;
  capacity_ = capacity;
  batch_slots_ = std::min(batch_slots, slots);
  // The memory share of the rows, cut at the nearest row (the same for every layer: they have as
  // many rows, and a share of rows is a share of bytes).
  const int64_t rows = slots * capacity;
  memory_rows_ = place_rows({WeightRows{"KV cache", rows, 1}}, TierShares{shares_.gpu + shares_.cpu, 0})[0].gpu_rows;
  first_disk_slot_ = memory_rows_ / capacity;
  memory_bytes_ = disk_bytes_ = 0;
  uint64_t max_row = 0;
  for (size_t i = 0; i < widths_.size(); ++i) {
    Home& h = homes_[i];
    h.k_mem = h.v_mem = Tensor();  // the old layout's memory goes before the new one's comes
    if (widths_[i] == 0) continue;
    max_row = std::max(max_row, row_bytes(i));
    if (memory_rows_ > 0) {
      h.k_mem = Tensor::empty({memory_rows_, widths_[i]}, dtype_);
      h.v_mem = Tensor::empty({memory_rows_, widths_[i]}, dtype_);
    }
    memory_bytes_ += 2 * static_cast<uint64_t>(memory_rows_) * row_bytes(i);
    disk_bytes_ += 2 * static_cast<uint64_t>(rows - memory_rows_) * row_bytes(i);
  }
  region_bytes_ = io::round_up_direct(static_cast<size_t>(capacity) * max_row);
  for (size_t i = 0; i < widths_.size(); ++i)
    if (widths_[i] > 0 && memory_rows_ < rows)
      homes_[i].file->reserve(2 * static_cast<uint64_t>(slots - first_disk_slot_) * region_bytes_);
  // Compute buffers only when some batch of slots reaches the disk.
  k_buf_.clear();
  v_buf_.clear();
  if (memory_rows_ < rows) {
    const auto elems =
        static_cast<int64_t>(static_cast<uint64_t>(batch_slots_ * capacity) * max_row / dtype_size(dtype_));
    for (int b = 0; b < 2; ++b) {
      k_buf_.push_back(Tensor::empty({elems}, dtype_));
      v_buf_.push_back(Tensor::empty({elems}, dtype_));
    }
    bounce_ = io::AlignedBuffer(region_bytes_);
  }
}

void KvStream::move_rows(size_t layer, int kv, const Tensor& buf, int64_t slot, int64_t local_slot, int64_t first,
                         int64_t last, bool load) {
  if (first >= last) return;
  const uint64_t rb = row_bytes(layer);
  char* b = static_cast<char*>(buf.raw()) + static_cast<uint64_t>(local_slot * capacity_) * rb;
  // Memory rows: those of the slot below memory_rows_.
  const int64_t mem_end = std::clamp<int64_t>(memory_rows_ - slot * capacity_, 0, capacity_);
  if (first < mem_end) {
    const Tensor& home = kv == 0 ? homes_[layer].k_mem : homes_[layer].v_mem;
    char* h = static_cast<char*>(home.raw()) + static_cast<uint64_t>(slot * capacity_ + first) * rb;
    const size_t n = static_cast<size_t>(std::min(last, mem_end) - first) * rb;
    if (load)
      std::memcpy(b + first * rb, h, n);
    else
      std::memcpy(h, b + first * rb, n);
  }
  // Disk rows: the whole blocks of the slot's region that hold them; a store reads them first, so
  // that the rows around the new ones keep what they have.
  const int64_t d0 = std::max(first, mem_end);
  if (d0 >= last) return;
  const uint64_t lo = d0 * rb / io::kDirectAlign * io::kDirectAlign;
  const uint64_t hi = io::round_up_direct(static_cast<size_t>(last * rb));
  io::DiskFile& f = *homes_[layer].file;
  const uint64_t at = region_offset(kv, slot) + lo;
  char* bounce = static_cast<char*>(bounce_.data());
  f.read(at, bounce, hi - lo);
  const size_t n = static_cast<size_t>(last - d0) * rb;
  if (load) {
    std::memcpy(b + d0 * rb, bounce + (d0 * rb - lo), n);
  } else {
    std::memcpy(bounce + (d0 * rb - lo), b + d0 * rb, n);
    f.write(at, bounce, hi - lo);
  }
}

void KvStream::transfer(Use u, size_t buffer, bool load) {
  const GpuBatch& gb = batches_[u.batch];
  const kernels::StepPlan& p = gb.ctx.plan;
  for (int64_t s = 0; s < p.num_seqs(); ++s) {
    const int64_t local = p.slot[s], past = p.kv_len[s] - p.q_len[s];
    const int64_t first = load ? 0 : past, last = load ? past : p.kv_len[s];
    move_rows(u.layer, 0, k_buf_[buffer], gb.first_slot + local, local, first, last, load);
    move_rows(u.layer, 1, v_buf_[buffer], gb.first_slot + local, local, first, last, load);
  }
}

KvStream::Use KvStream::next_streamed(Use u) const {
  for (size_t l = u.layer, b = u.batch + 1; l < widths_.size(); ++l, b = 0) {
    if (widths_[l] == 0) continue;
    for (; b < batches_.size(); ++b)
      if (!in_memory(batches_[b].first_slot, batches_[b].num_slots)) return {l, b};
  }
  return {};
}

void KvStream::begin_block(std::span<const GpuBatch> batches) {
  drain();
  batches_ = batches;
  for (const GpuBatch& b : batches_)
    TIERGEN_CHECK(b.first_slot >= 0 && b.num_slots <= batch_slots_ && b.first_slot + b.num_slots <= slots_,
                  "KvStream: a batch outside the cache's slots");
  if (!overlap_) return;
  // The schedule's first streamed (layer, batch): what comes before layer 0's first batch.
  Use first{0, 0};
  if (widths_.empty() || batches_.empty()) return;
  if (widths_[0] == 0 || in_memory(batches_[0].first_slot, batches_[0].num_slots)) first = next_streamed(first);
  if (first.layer == SIZE_MAX) return;
  pending_ = first;
  pending_buffer_ = 1 - last_buffer_;
  pending_fill_ = pool_->submit([this, first, buf = pending_buffer_] { transfer(first, buf, true); },
                                "reading the KV cache of layer " + std::to_string(first.layer));
}

kernels::LayerKv* KvStream::acquire(size_t layer, size_t batch) {
  TIERGEN_CHECK(layer < widths_.size() && widths_[layer] > 0 && batch < batches_.size(), "KvStream::acquire");
  const GpuBatch& gb = batches_[batch];
  kernels::LayerKv& v = views_[layer];
  v.capacity = capacity_;
  const int64_t rows = gb.num_slots * capacity_;
  if (in_memory(gb.first_slot, gb.num_slots)) {  // a view of the home: written in place
    held_[layer] = SIZE_MAX;
    v.k = homes_[layer].k_mem.slice_rows(gb.first_slot * capacity_, gb.first_slot * capacity_ + rows);
    v.v = homes_[layer].v_mem.slice_rows(gb.first_slot * capacity_, gb.first_slot * capacity_ + rows);
    return &v;
  }
  const Use u{layer, batch};
  size_t buffer = 1 - last_buffer_;
  if (pending_fill_.valid()) {
    io::IoTicket t = std::move(pending_fill_);
    pending_fill_ = io::IoTicket();
    const bool mine = pending_ == u;
    t.wait(deadline_);
    if (mine) buffer = pending_buffer_;
    pending_ = {};
    if (!mine) transfer(u, buffer, true);
  } else {
    transfer(u, buffer, true);
  }
  last_buffer_ = buffer;
  held_[layer] = buffer;
  v.k = Tensor(k_buf_[buffer].storage(), 0, {rows, widths_[layer]}, dtype_);
  v.v = Tensor(v_buf_[buffer].storage(), 0, {rows, widths_[layer]}, dtype_);
  // The next streamed (layer, batch) goes to the other buffer: its last user's write-back was
  // queued before this fill, on the same thread.
  if (overlap_) {
    const Use next = next_streamed(u);
    if (next.layer != SIZE_MAX) {
      pending_ = next;
      pending_buffer_ = 1 - buffer;
      pending_fill_ = pool_->submit([this, next, buf = pending_buffer_] { transfer(next, buf, true); },
                                    "reading the KV cache of layer " + std::to_string(next.layer));
    }
  }
  return &v;
}

void KvStream::release(size_t layer, size_t batch) {
  const size_t buffer = held_[layer];
  if (buffer == SIZE_MAX) return;  // a view: the layer wrote its home
  held_[layer] = SIZE_MAX;
  const Use u{layer, batch};
  if (overlap_)
    writes_.push_back(pool_->submit([this, u, buffer] { transfer(u, buffer, false); },
                                    "writing the KV cache of layer " + std::to_string(layer)));
  else
    transfer(u, buffer, false);
}

void KvStream::finish_block() { drain(); }

void KvStream::drain() {
  // Every ticket is waited for before the first failure is rethrown: none may still use a buffer.
  std::exception_ptr first;
  auto wait = [&](io::IoTicket& t) {
    if (!t.valid()) return;
    try {
      t.wait(deadline_);
    } catch (...) {
      if (!first) first = std::current_exception();
    }
  };
  wait(pending_fill_);
  pending_fill_ = io::IoTicket();
  pending_ = {};
  for (io::IoTicket& t : writes_) wait(t);
  writes_.clear();
  if (first) std::rethrow_exception(first);
}

}  // namespace tiergen
