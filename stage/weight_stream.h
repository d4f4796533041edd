// Weights whose home is not wholly on the compute tier, streamed into compute buffers layer by
// layer. Placement follows the policy's shares byte-accurately (runtime/policy/offload_policy.h):
// each decoder layer's first gpu% of weight bytes are resident on the compute tier, the next cpu%
// in host memory (page-locked on a GPU, so the copy engine reads it while the GPU computes), the
// rest in a file of the offload folder. A tensor wholly resident stays bound; a tensor with rows
// elsewhere is assembled before its layer runs in one of a ring of compute buffers (resident rows
// copied on the device, host rows copied over PCIe, disk rows read with O_DIRECT into a bounce
// buffer and copied from there), allocated once. With overlap, the next streamed layers (as many
// as the ring has buffers beside the one computing) are brought in on the backend's Load lane
// (and the disk's I/O thread) while this one computes, so the link never waits for a short
// layer's compute; fences, not
// device-wide waits, order a buffer's refill after the compute that read it.
//
// On a CPU the compute tier is host memory: the GPU's share and the CPU's are both resident, and
// the whole fill of the next layer runs on the I/O thread.
//
// Layers are placed as they load (adopt, from Model's LayerLoaded hook), so the host never holds
// more than the host share plus one layer: a model larger than host memory can run.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <vector>

#include "kernels/backend.h"
#include "runtime/engine/model.h"
#include "runtime/io/disk_file.h"
#include "runtime/io/io_pool.h"
#include "runtime/io/offload_dir.h"
#include "runtime/policy/offload_policy.h"

namespace tiergen {

class WeightStream {
 public:
  // Weights for `be` in `dtype` (nothing: each as loaded, as the CPU computes), placed by `shares`;
  // disk rows go to files in `dir` (null when shares.disk() is 0; it must outlive the stream).
  // `deadline`: the longest wait for one layer's reads or copies.
  WeightStream(kernels::Backend& be, std::optional<DType> dtype, const TierShares& shares, io::OffloadDir* dir,
               bool overlap, std::chrono::milliseconds deadline = std::chrono::seconds(600));
  // Adopts layers [begin, end) of a model already loaded on the host, then finish().
  WeightStream(kernels::Backend& be, const Model& model, size_t begin, size_t end, const TierShares& shares,
               io::OffloadDir* dir, bool overlap, std::chrono::milliseconds deadline = std::chrono::seconds(600));
  ~WeightStream();
  WeightStream(const WeightStream&) = delete;
  WeightStream& operator=(const WeightStream&) = delete;

  // GPU runs: the host share of the weights in pinned memory (the default; copies run by DMA at
  // the link's rate) or pageable (the driver stages each copy, slower, but the host keeps the
  // pages swappable: FlexGen's --pin-weight 0). Before the first adopt.
  void pin_host_weights(bool pin) { pin_ = pin; }

  // Places layer `index` (its weights on the host, just loaded): a decoder layer by the shares,
  // the embedding and the head wholly on the compute tier (tied weights once).
  void adopt(size_t index, Layer& layer);
  // After the last adopt: allocates the compute buffers.
  void finish();

  // Bytes of the adopted decoder layers' weights resident on the compute tier, in host memory
  // apart from it (GPU runs), and on disk.
  uint64_t resident_bytes() const { return resident_bytes_; }
  uint64_t host_bytes() const { return host_bytes_; }
  uint64_t disk_bytes() const { return disk_bytes_; }
  // Bytes of the compute buffers.
  uint64_t buffer_bytes() const { return kStreamedWeightBuffers * buffer_bytes_; }

  // Called by Stage: at the start of a step (brings in the first streamed layer), before layer i
  // runs (binds its weights, then brings in the next streamed layer), and once layer i's work for
  // every batch is queued (its buffer may be refilled after that work).
  void begin_step();
  void before_layer(size_t i);
  void after_layer(size_t i);

 private:
  struct Part {       // one weight tensor with rows away from the compute tier
    Tensor* bound;    // the layer's tensor, bound to a compute-buffer view while the layer runs
    Tensor resident;  // rows [0, r) on the compute tier (undefined when none)
    Tensor host;      // the next rows, in host memory (GPU runs; undefined when none)
    Shape shape;      // the whole tensor
    DType dtype;
    uint64_t disk_bytes, disk_offset;  // the rest, in the layer's file
    size_t buffer_offset;              // in a compute buffer
    size_t bounce_offset;              // in a bounce buffer (aligned)
  };
  struct Streamed {
    size_t layer;
    std::vector<Part> parts;
    std::unique_ptr<io::DiskFile> file;  // null when nothing is on disk
  };
  bool on_cpu() const { return be_.kind() == kernels::DeviceKind::Cpu; }
  // Queues (GPU) or does (CPU) the copies of streamed layer k into buffer k % kStreamedWeightBuffers, except the
  // copies from the bounce buffer of a GPU run; the disk reads run on the I/O thread with overlap.
  void start_fill(size_t k);
  // Reads streamed layer k's disk rows into bounce buffer k % kStreamedWeightBuffers (and, on a CPU, copies them on).
  void read_disk(size_t k);
  // Waits for k's reads and queues what is left; binds its tensors to buffer k % kStreamedWeightBuffers.
  void land(size_t k);

  kernels::Backend& be_;
  std::optional<DType> dtype_;
  TierShares shares_;
  io::OffloadDir* dir_;
  bool overlap_;
  bool pin_ = true;
  std::chrono::milliseconds deadline_;
  std::map<std::pair<const void*, DType>, Tensor> placed_;  // whole weights on the compute tier, by source
  std::vector<Streamed> streamed_;
  std::vector<size_t> by_layer_;  // layer index -> index in streamed_, or SIZE_MAX
  size_t buffer_bytes_ = 0, bounce_bytes_ = 0;
  std::vector<Tensor> buffers_;  // the compute buffers (U8), each the largest streamed layer
  std::vector<Tensor> bounce_;   // as many host buffers for disk rows, each the largest layer's, aligned
  std::vector<std::shared_ptr<kernels::Fence>> loaded_, computed_;  // per buffer: its last fill, use
  std::unique_ptr<io::IoPool> pool_;
  std::map<size_t, io::IoTicket> pending_;  // disk reads in flight, by streamed layer
  std::deque<size_t> started_;              // streamed layers whose fill was started and not landed
  void wait_pending();
  uint64_t resident_bytes_ = 0, host_bytes_ = 0, disk_bytes_ = 0;
};

}  // namespace tiergen
