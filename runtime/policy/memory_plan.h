// MemoryPlan: every large buffer a run will hold, by tier, known before any of it is allocated, and
// checked against what the machine has (or the user's budget). A run that cannot fit fails here
// with one error naming what it needs, what there is, and what to change, instead of failing (or
// swapping) minutes later.
#pragma once

#include <cstdint>
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

// What the host can give: the smaller of MemAvailable and the cgroup's remaining limit, or a budget.
struct HostMemory {
  uint64_t available = 0;
  std::string source;  // "available on this machine", "--cpu-mem budget", "cgroup limit"
};

// Reads /proc/meminfo and the cgroup (v2 memory.max / v1 limit_in_bytes) limits. On failure to read
// them, `available` is UINT64_MAX and `source` says so: the check then passes.
HostMemory probe_host_memory();
// The budget when one is given (--cpu-mem), else the probe.
HostMemory host_memory_limit(std::optional<uint64_t> budget);

class MemoryPlan {
 public:
  void add(std::string what, Tier tier, uint64_t bytes, std::string detail = "");
  const std::vector<MemoryItem>& items() const { return items_; }
  // Bytes that must be allocated in `tier` (mapped checkpoints are listed as Mmap: the page cache
  // holds them, so they need no allocation).
  uint64_t total(Tier tier) const;
  // "KV cache 1.2 GB (64 sequences x ...), activations 30 MB (...), weights 13 GB mapped (...)"
  std::string describe() const;
  // OutOfMemoryError when the host tiers (Cpu + PinnedCpu) need more than `host.available`:
  // "this run needs X of host memory (items); Y is available (source). hint".
  void check_host(const HostMemory& host, const std::string& hint) const;
  // OutOfMemoryError when the Gpu tier needs more than `free_bytes` of `device`.
  void check_device(uint64_t free_bytes, const std::string& device, const std::string& hint) const;
  // IoError when the Disk tier needs more than the free space of the filesystem holding `folder`
  // (statvfs; unchecked when that fails).
  void check_disk(const std::string& folder, const std::string& hint) const;

 private:
  std::vector<MemoryItem> items_;
};

}  // namespace tiergen
