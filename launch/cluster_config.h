// --cluster-config FILE: a pipeline's stages in YAML, one entry per mpirun rank, each with its own
// device, budgets, offloading shares and threads, and optionally the decoder layer it starts at.
// Every rank reads the same file; a stage's settings replace the command line's for that rank.
//
//   micro_batches: 2          # optional: blocks in flight (default: one per stage)
//   comm_timeout: 60s         # optional: --comm-timeout
//   stages:
//     - device: cuda          # cpu, cuda (the rank's node-local GPU) or cuda:N
//       gpu_mem: 24GiB        # gpu_mem, cpu_mem, disk_mem: budgets, as the flags take them
//       percent: [25, 75, 0, 100, 100, 0]
//     - first_layer: 40       # given for every stage after the first, or for none
//       device: cpu
//       threads: 16
//       gpu_batch_size: 8     # this stage's cut of a block (default: rank 0's, --gpu-batch-size)
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace tiergen::cli {

struct StageConfig {
  std::optional<int64_t> first_layer;
  std::optional<std::string> device, gpu_mem, cpu_mem, disk_mem;
  std::optional<std::vector<double>> percent;
  std::optional<int> threads;
  std::optional<int64_t> gpu_batch_size;  // on stage 0 also the block's (with --num-gpu-batches)
};

struct ClusterConfig {
  std::string path;
  std::vector<StageConfig> stages;
  std::optional<int> micro_batches;
  std::optional<std::string> comm_timeout;
  // The first decoder layer of every stage after the first, or empty (equal shares).
  std::vector<int64_t> first_layers() const;
};

// The file, checked: FormatError naming the file and line for YAML that does not parse, a key that
// is not one of the above (a typo must not silently fall back to a default), a value of the wrong
// type; NotFoundError for a missing file.
ClusterConfig load_cluster_config(const std::string& path);

}  // namespace tiergen::cli
