// MemoryPlan: every large buffer a run will hold, by tier, known before any of it is allocated, and
// checked against what the machine has (or the user's budget). A run that cannot fit fails here
// with one error naming what it needs, what there is, and what to change, instead of failing (or
// swapping) minutes later.
#pragma once

#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "runtime/core/tensor.h"

namespace tiergen {

struct MemoryItem {
  std::string what;    // "KV cache", "weights", ...
  std::string detail;  // how it was sized: "64 sequences x 544 tokens x 3 KB"
  Tier tier = Tier::Cpu;
  uint64_t bytes = 0;
};

// What a tier can give a run, and who says so: "available on this machine", "the --gpu-mem
// budget", "free on NVIDIA H100 80GB HBM3". UINT64_MAX where it could not be known (no check).
struct Capacity {
  uint64_t available = std::numeric_limits<uint64_t>::max();
  std::string source = "unknown";
  bool known() const { return available != std::numeric_limits<uint64_t>::max(); }
};

// Reads /proc/meminfo and the cgroup (v2 memory.max / v1 limit_in_bytes) limits: the smaller of
// MemAvailable and the cgroup's remaining limit. On failure to read them, `available` is
// UINT64_MAX and `source` says so: the check then passes.
Capacity probe_host_memory();
// The most host memory this process has held resident at once (getrusage's ru_maxrss): its own
// allocations, pinned buffers and the pages of mapped checkpoints it touched. 0 where unknown.
uint64_t peak_host_memory();
// The budget when one is given (--cpu-mem), else the probe. A budget wins also when it is larger:
// on machines whose memory grows on demand MemAvailable understates what a run can get.
Capacity host_memory_limit(std::optional<uint64_t> budget);
// The GPU's: the smaller of its free memory (`free`, nothing where it is not known: no GPU
// visible) and the --gpu-mem budget.
Capacity device_memory_limit(std::optional<uint64_t> free, const std::string& device, std::optional<uint64_t> budget);
// The offload folder's: the smaller of its filesystem's free space (statvfs) and the --disk-mem
// budget.
Capacity disk_limit(const std::string& folder, std::optional<uint64_t> budget);

// The three tiers a plan is checked against.
struct Capacities {
  Capacity host, device, disk;
};

class MemoryPlan {
 public:
  void add(std::string what, Tier tier, uint64_t bytes, std::string detail = "");
  const std::vector<MemoryItem>& items() const { return items_; }
  // Bytes that must be allocated in `tier` (mapped checkpoints are listed as Mmap: the page cache
  // holds them, so they need no allocation).
  uint64_t total(Tier tier) const;
  // Bytes the host must provide: its pageable and pinned items.
  uint64_t host_total() const { return total(Tier::Cpu) + total(Tier::PinnedCpu); }
  // "KV cache 1.2 GB (64 sequences x ...), activations 30 MB (...), weights 13 GB mapped (...)"
  std::string describe() const;
  // The same, of the items in one group of tiers: the host's (Cpu and PinnedCpu), or one other.
  std::string describe(Tier tier) const;
  // OutOfMemoryError when the host tiers (Cpu + PinnedCpu) need more than `host.available`:
  // "this run needs X of host memory [its items], but Y is available on this machine. hint".
  void check_host(const Capacity& host, const std::string& hint) const;
  // OutOfMemoryError when the Gpu tier needs more than `device.available`.
  void check_device(const Capacity& device, const std::string& hint) const;
  // IoError when the Disk tier needs more than `disk.available` (in the offload folder `folder`).
  void check_disk(const Capacity& disk, const std::string& folder, const std::string& hint) const;
  // All three; the first that does not fit throws.
  void check(const Capacities& c, const std::string& folder, const std::string& hint) const;
  // The plan as a table, tier by tier, each with its total against its capacity and every item
  // with how it was sized (what `tiergen plan` and `bench` print).
  std::string table(const Capacities& c) const;

 private:
  std::vector<MemoryItem> items_;
};

}  // namespace tiergen
