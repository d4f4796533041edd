// A KV cache whose home is partly on disk. Each attending layer's K and V are (slots * capacity,
// width) rows, slot-major; the policy's share of those rows (byte-accurate: a share of the rows, cut
// at the nearest row) stays in memory, the rest lives in a file of the offload folder, where each
// slot's rows have their own 4 KiB-aligned region, so that writing one sequence's new rows never
// touches another's. The engine runs a block as GPU batches, each a range of slots
// (stage/gpu_batch.h): before a layer runs on a batch, acquire() gives the batch's cache on the
// compute tier: a view of the home when all of its rows are in memory, else a compute buffer
// holding the rows its sequences already have (memory rows copied, disk rows read). After the layer,
// release() writes the step's new rows back to their homes. With overlap, the next (layer, batch)
// is filled on an I/O thread while this one computes, and write-backs run there too, in order.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "kernels/backend.h"
#include "runtime/io/disk_file.h"
#include "runtime/io/io_pool.h"
#include "runtime/io/offload_dir.h"
#include "runtime/policy/offload_policy.h"
#include "stage/gpu_batch.h"

namespace tiergen {

class KvStream {
 public:
  // `widths[i]`: K (= V) width of layer i of the stage, 0 for layers without attention; `dtype`
  // the cache's. The memory share is shares.gpu + shares.cpu (one tier on a CPU), the rest goes
  // to files in `dir` (which must outlive the stream). `deadline`: the longest wait for one read or
  // write. Compute and memory homes are host memory (a CPU backend).
  KvStream(std::vector<int64_t> widths, DType dtype, const TierShares& shares, io::OffloadDir& dir, bool overlap,
           std::chrono::milliseconds deadline = std::chrono::seconds(600));
  ~KvStream();
  KvStream(const KvStream&) = delete;
  KvStream& operator=(const KvStream&) = delete;

  // (Re)lays out the homes for `slots` sequences of up to `capacity` tokens, and the compute buffers
  // for GPU batches of up to `batch_slots` slots. A no-op when nothing changed.
  void allocate(int64_t slots, int64_t capacity, int64_t batch_slots);
  int64_t slots() const { return slots_; }
  int64_t capacity() const { return capacity_; }
  // Bytes of the homes in memory and on disk under the current layout.
  uint64_t memory_bytes() const { return memory_bytes_; }
  uint64_t disk_bytes() const { return disk_bytes_; }

  // The block's batches for this step (each batch's plan: its sequences' slots and lengths); they
  // must stay alive and unchanged until the step's last release(). With overlap, starts reading
  // the first batch of the first attending layer.
  void begin_block(std::span<const GpuBatch> batches);
  // Layer i's cache for batch b on the compute tier (slot 0 = the batch's first slot), holding every
  // row its sequences had before this step. Calls come in the schedule's order: layers outer,
  // batches inner. IoError when a read fails or its deadline passes.
  kernels::LayerKv* acquire(size_t layer, size_t batch);
  // After layer i ran on batch b: its new rows go back to their homes.
  void release(size_t layer, size_t batch);
  // Waits for every write-back; IoError for any that failed. Called at the end of each step.
  void finish_block();

 private:
  struct Home {                          // one layer's K and V homes
    Tensor k_mem, v_mem;                 // rows [0, memory_rows) (undefined when none)
    std::unique_ptr<io::DiskFile> file;  // the rest, slot regions: K's, then V's
  };
  struct Use {  // a (layer, batch) of the schedule
    size_t layer = SIZE_MAX, batch = SIZE_MAX;
    bool operator==(const Use&) const = default;
  };
  uint64_t row_bytes(size_t layer) const;
  // File offset of slot s's region of K (kv = 0) or V (kv = 1).
  uint64_t region_offset(int kv, int64_t slot) const;
  bool in_memory(int64_t first_slot, int64_t num_slots) const;
  // Copies rows [first, last) of slot `slot` between its home and `buf` (rows of the batch buffer,
  // slot-major from the batch's first slot): to the buffer (load) or back (store).
  void move_rows(size_t layer, int kv, const Tensor& buf, int64_t slot, int64_t local_slot, int64_t first, int64_t last,
                 bool load);
  // Loads or stores every sequence's rows of `u` in `buffer`: the rows before this step's (load),
  // or this step's (store).
  void transfer(Use u, size_t buffer, bool load);
  // The first (layer, batch) after `u` in the schedule whose batch is not wholly in memory, or none.
  Use next_streamed(Use u) const;
  // Waits for the fill in flight and the write-backs; rethrows the first failure.
  void drain();

  std::vector<int64_t> widths_;
  DType dtype_;
  TierShares shares_;
  bool overlap_;
  std::chrono::milliseconds deadline_;
  std::vector<Home> homes_;
  int64_t slots_ = 0, capacity_ = 0, batch_slots_ = 0;
  int64_t memory_rows_ = 0;      // rows [0, memory_rows_) of every layer's K and V are in memory
  int64_t first_disk_slot_ = 0;  // the first slot with a row on disk
  uint64_t region_bytes_ = 0;    // one slot's region in a file (aligned)
  uint64_t memory_bytes_ = 0, disk_bytes_ = 0;
  std::span<const GpuBatch> batches_;
  std::vector<kernels::LayerKv> views_;  // what acquire() handed out, per layer
  std::vector<Tensor> k_buf_, v_buf_;    // two compute buffers: (batch_slots * capacity, max width)
  // One slot region, aligned: every disk read and write goes through it, one at a time (on the
  // I/O thread with overlap, else on the caller's).
  io::AlignedBuffer bounce_;
  std::unique_ptr<io::IoPool> pool_;
  io::IoTicket pending_fill_;
  Use pending_;                // what it fills
  size_t pending_buffer_ = 0;  // into which buffer
  size_t last_buffer_ = 1;     // the buffer of the last acquire() that needed one
  std::vector<size_t> held_;   // per layer: the buffer acquire() gave, or SIZE_MAX for a view
  std::vector<io::IoTicket> writes_;
};

}  // namespace tiergen
