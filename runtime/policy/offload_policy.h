// The offloading policy (FlexGen's, with its flags' meaning) and where it puts every byte of the
// weights. A share is a percentage of bytes: the GPU takes the first `gpu` percent of a layer's
// weight bytes, the CPU the next `cpu` percent, the disk the rest, cut at row boundaries across and
// within tensors. FlexGen instead sends each whole tensor to the tier its byte midpoint falls in,
// so a layer of a few large matrices can miss its shares by tens of percent; here a tier gets its
// share to within half a row at each cut.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace tiergen {

// Percentages of bytes on the GPU and on the CPU; the rest goes to disk.
struct TierShares {
  double gpu = 100;
  double cpu = 0;
  double disk() const { return 100.0 - gpu - cpu; }
};

// Compute buffers streamed weights pass through: one computing, the others filling ahead, so
// a short layer's compute (an MLP after an attention layer's long host attention) never leaves
// the link idle.
inline constexpr int kStreamedWeightBuffers = 3;

struct OffloadPolicy {
  int64_t gpu_batch_size = 1;   // sequences per GPU batch
  int64_t num_gpu_batches = 1;  // GPU batches per block: weights cross PCIe once per block
  TierShares weights, cache, activations;
  bool overlap = true;             // prefetch the next layer and GPU batch while computing
  bool pin_weight = true;          // CPU-resident weights in pinned memory
  bool cpu_cache_compute = false;  // attention over a CPU-resident KV cache runs on the CPU
  std::string offload_dir;         // disk tier's folder

  int64_t block_size() const { return gpu_batch_size * num_gpu_batches; }
  // "weights 20/80/0, KV cache 0/100/0, activations 100/0/0 (GPU/CPU/disk %), overlap"
  std::string describe() const;
};

// The six numbers of `--percent wg wc cg cc hg hc`. InvalidArgumentError naming the flag and the
// value when there are not six, one is negative or over 100, or a pair sums to over 100.
void set_percent(OffloadPolicy& policy, const std::vector<double>& six);
// InvalidArgumentError for batch shapes under 1 and shares out of range (as set_percent checks).
void validate(const OffloadPolicy& policy);

// A tensor as placement sees it: rows of equal size (the first dimension; a vector is one row).
struct WeightRows {
  std::string name;
  int64_t rows = 0;
  uint64_t row_bytes = 0;
  uint64_t bytes() const { return static_cast<uint64_t>(rows) * row_bytes; }
};

// Where one tensor's rows live: [0, gpu_rows) on the GPU, the next cpu_rows on the CPU, the rest on
// disk.
struct RowSplit {
  int64_t gpu_rows = 0, cpu_rows = 0, disk_rows = 0;
};

// The split of every tensor of one layer (in order) under `shares`: the layer's bytes end to end,
// cut where the GPU's share and then the CPU's end, each cut at the nearest row boundary.
std::vector<RowSplit> place_rows(const std::vector<WeightRows>& layer, const TierShares& shares);

}  // namespace tiergen
