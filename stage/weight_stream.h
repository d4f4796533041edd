// Weights whose home is partly on disk, streamed into compute buffers layer by layer (CPU compute;
// the GPU's host-to-device streaming builds on it). Placement follows the policy's shares
// byte-accurately (runtime/policy/offload_policy.h): each layer's first (gpu + cpu)% of weight
// bytes stay in memory, the rest of its rows go to a file in the offload folder, and the memory
// copy of those rows is released. Before a layer runs, its weights are assembled (memory rows, then
// disk rows read with O_DIRECT) in one of two compute buffers, allocated once, and the layer's
// tensors are bound to them; with overlap, the next streamed layer is read on an I/O thread while
// this one computes, so the disk reads hide behind compute where the disk is fast enough.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "runtime/engine/model.h"
#include "runtime/io/disk_file.h"
#include "runtime/io/io_pool.h"
#include "runtime/io/offload_dir.h"
#include "runtime/policy/offload_policy.h"

namespace tiergen {

class WeightStream {
 public:
  // Moves the disk share of the weights of layers [begin, end) of `model` (held on the host) to
  // files in `dir` (which must outlive the stream). `deadline`: the longest wait for one layer's reads.
  WeightStream(const Model& model, size_t begin, size_t end, const TierShares& shares, io::OffloadDir& dir,
               bool overlap, std::chrono::milliseconds deadline = std::chrono::seconds(600));
  ~WeightStream();
  WeightStream(const WeightStream&) = delete;
  WeightStream& operator=(const WeightStream&) = delete;

  // Bytes moved to disk, and kept in memory, over the stream's layers.
  uint64_t disk_bytes() const { return disk_bytes_; }
  uint64_t memory_bytes() const { return memory_bytes_; }

  // Called by Stage::forward: at the start of a step (prefetches the first streamed layer), and
  // before each layer i runs (binds i's weights, then prefetches the next streamed layer). The
  // backend must have finished with the previous streamed layer's buffer (the CPU backend has).
  void begin_step();
  void before_layer(size_t i);

 private:
  struct Part {       // one weight tensor of a streamed layer
    Tensor* bound;    // the layer's tensor, bound to a compute-buffer view while the layer runs
    Tensor resident;  // its memory rows (undefined when none)
    Shape shape;      // the whole tensor
    DType dtype;
    uint64_t resident_bytes, disk_bytes, disk_offset;
    size_t buffer_offset;  // in a compute buffer
  };
  struct Streamed {
    size_t layer;
    std::vector<Part> parts;
    std::unique_ptr<io::DiskFile> file;
  };
  // Fills compute buffer k % 2 with streamed layer k and returns when done.
  void fill(size_t k);

  std::vector<Streamed> streamed_;
  std::vector<size_t> by_layer_;  // layer - begin -> index in streamed_, or SIZE_MAX
  size_t begin_;
  std::vector<Tensor> buffers_;            // two compute buffers (U8), each the largest layer
  std::vector<io::AlignedBuffer> bounce_;  // per buffer: the largest disk part, aligned
  bool overlap_;
  std::chrono::milliseconds deadline_;
  std::unique_ptr<io::IoPool> pool_;
  io::IoTicket pending_;         // the prefetch in flight
  size_t pending_k_ = SIZE_MAX;  // which streamed layer it fills
  uint64_t disk_bytes_ = 0, memory_bytes_ = 0;
};

}  // namespace tiergen
