#include "runtime/policy/memory_plan.h"

#include <sys/statvfs.h>
#include <unistd.h>

#include <cstdint>
#include <fstream>
#include <limits>
#include <sstream>

#include "runtime/core/error.h"
#include "runtime/core/units.h"

namespace tiergen {
namespace {

// The first line of a small file as an integer, or nothing ("max", absent, unreadable).
std::optional<uint64_t> read_number(const char* path) {
  std::ifstream f(path);
  std::string word;
  if (!(f >> word) || word.empty() || word.find_first_not_of("0123456789") != std::string::npos) return std::nullopt;
  try {
    return std::stoull(word);
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

std::optional<uint64_t> meminfo_available() {
  std::ifstream f("/proc/meminfo");
  std::string key, unit;
  uint64_t kb = 0;
  while (f >> key >> kb) {
    std::getline(f, unit);
    if (key == "MemAvailable:") return kb * 1024;
  }
  return std::nullopt;
}

// What the cgroup still allows: limit - usage. cgroup v2 first, then v1. A v1 "no limit" is a huge
// page-rounded number, which the min() below makes harmless.
std::optional<uint64_t> cgroup_remaining() {
  std::optional<uint64_t> limit = read_number("/sys/fs/cgroup/memory.max");
  std::optional<uint64_t> used = read_number("/sys/fs/cgroup/memory.current");
  if (!limit) {
    limit = read_number("/sys/fs/cgroup/memory/memory.limit_in_bytes");
    used = read_number("/sys/fs/cgroup/memory/memory.usage_in_bytes");
  }
  if (!limit) return std::nullopt;
  const uint64_t u = used.value_or(0);
  return *limit > u ? *limit - u : 0;
}

}  // namespace

HostMemory probe_host_memory() {
  HostMemory h{std::numeric_limits<uint64_t>::max(), "unknown (could not read /proc/meminfo)"};
  if (auto avail = meminfo_available()) h = {*avail, "available on this machine"};
  if (auto cg = cgroup_remaining(); cg && *cg < h.available) h = {*cg, "left under this process's cgroup limit"};
  return h;
}

HostMemory host_memory_limit(std::optional<uint64_t> budget) {
  // A budget wins also when it is larger than what the kernel reports: on machines whose memory
  // grows on demand (ballooned VMs) MemAvailable understates what a run can get, and the user knows.
  if (budget) return {*budget, "the --cpu-mem budget"};
  return probe_host_memory();
}

void MemoryPlan::add(std::string what, Tier tier, uint64_t bytes, std::string detail) {
  items_.push_back({std::move(what), std::move(detail), tier, bytes});
}

uint64_t MemoryPlan::total(Tier tier) const {
  uint64_t n = 0;
  for (const MemoryItem& i : items_)
    if (i.tier == tier) n += i.bytes;
  return n;
}

std::string MemoryPlan::describe() const {
  std::ostringstream s;
  for (size_t k = 0; k < items_.size(); ++k) {
    const MemoryItem& i = items_[k];
    s << (k ? ", " : "") << i.what << " " << format_bytes(i.bytes);
    if (i.tier != Tier::Cpu) s << " " << (i.tier == Tier::Mmap ? "mapped from the checkpoint" : tier_name(i.tier));
    if (!i.detail.empty()) s << " (" << i.detail << ")";
  }
  return s.str();
}

void MemoryPlan::check_host(const HostMemory& host, const std::string& hint) const {
  const uint64_t need = total(Tier::Cpu) + total(Tier::PinnedCpu);
  if (need <= host.available) return;
  throw OutOfMemoryError("this run needs " + format_bytes(need) + " of host memory [" + describe() + "], but " +
                         format_bytes(host.available) + " is " + host.source + ". " + hint);
}

void MemoryPlan::check_device(uint64_t free_bytes, const std::string& device, const std::string& hint) const {
  const uint64_t need = total(Tier::Gpu);
  if (need <= free_bytes) return;
  throw OutOfMemoryError("this run needs " + format_bytes(need) + " of GPU memory [" + describe() + "], but " + device +
                         " has " + format_bytes(free_bytes) + " free. " + hint);
}

void MemoryPlan::check_disk(const std::string& folder, const std::string& hint) const {
  const uint64_t need = total(Tier::Disk);
  struct statvfs st {};
  if (need == 0 || ::statvfs(folder.c_str(), &st) != 0) return;
  const uint64_t free_bytes = static_cast<uint64_t>(st.f_bavail) * st.f_frsize;
  if (need <= free_bytes) return;
  throw IoError("this run needs " + format_bytes(need) + " of disk in " + folder + " [" + describe() + "], but " +
                format_bytes(free_bytes) + " is free there. " + hint);
}

}  // namespace tiergen
