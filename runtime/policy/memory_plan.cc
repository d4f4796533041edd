#include "runtime/policy/memory_plan.h"

#include <sys/resource.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
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

Capacity probe_host_memory() {
  Capacity h{std::numeric_limits<uint64_t>::max(), "unknown (could not read /proc/meminfo)"};
  if (auto avail = meminfo_available()) h = {*avail, "available on this machine"};
  if (auto cg = cgroup_remaining(); cg && *cg < h.available) h = {*cg, "left under this process's cgroup limit"};
  return h;
}

uint64_t peak_host_memory() {
  rusage u{};
  if (getrusage(RUSAGE_SELF, &u) != 0 || u.ru_maxrss < 0) return 0;
  return static_cast<uint64_t>(u.ru_maxrss) * 1024;  // kilobytes on Linux
}

Capacity host_memory_limit(std::optional<uint64_t> budget) {
  if (budget) return {*budget, "the --cpu-mem budget"};
  return probe_host_memory();
}

Capacity device_memory_limit(std::optional<uint64_t> free, const std::string& device, std::optional<uint64_t> budget) {
  Capacity c{std::numeric_limits<uint64_t>::max(), "unknown (no GPU visible here)"};
  if (free) c = {*free, "free on " + device};
  if (budget && *budget <= c.available) c = {*budget, "the --gpu-mem budget"};
  return c;
}

Capacity disk_limit(const std::string& folder, std::optional<uint64_t> budget) {
  Capacity c{std::numeric_limits<uint64_t>::max(), "unknown (cannot stat " + folder + ")"};
  struct statvfs st {};
  if (::statvfs(folder.c_str(), &st) == 0) c = {static_cast<uint64_t>(st.f_bavail) * st.f_frsize, "free in " + folder};
  if (budget && *budget <= c.available) c = {*budget, "the --disk-mem budget"};
  return c;
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

namespace {

// The host's items are its pageable and pinned ones; every other tier stands alone.
bool in_group(Tier item, Tier group) {
  const auto host = [](Tier t) { return t == Tier::Cpu || t == Tier::PinnedCpu; };
  return host(group) ? host(item) : item == group;
}

std::string describe_items(const std::vector<MemoryItem>& items, const std::optional<Tier>& group) {
  std::ostringstream s;
  bool first = true;
  for (const MemoryItem& i : items) {
    if (group && !in_group(i.tier, *group)) continue;
    s << (first ? "" : ", ") << i.what << " " << format_bytes(i.bytes);
    first = false;
    if (i.tier != Tier::Cpu) s << " " << (i.tier == Tier::Mmap ? "mapped from the checkpoint" : tier_name(i.tier));
    if (!i.detail.empty()) s << " (" << i.detail << ")";
  }
  return s.str();
}

std::string over(const std::string& need, uint64_t bytes, const std::string& items, const Capacity& c,
                 const std::string& hint) {
  return "this run needs " + format_bytes(bytes) + " of " + need + " [" + items + "], but " +
         format_bytes(c.available) + " is " + c.source + ". " + hint;
}

}  // namespace

std::string MemoryPlan::describe() const { return describe_items(items_, std::nullopt); }

std::string MemoryPlan::describe(Tier tier) const { return describe_items(items_, tier); }

void MemoryPlan::check_host(const Capacity& host, const std::string& hint) const {
  if (host_total() <= host.available) return;
  throw OutOfMemoryError(over("host memory", host_total(), describe(Tier::Cpu), host, hint));
}

void MemoryPlan::check_device(const Capacity& device, const std::string& hint) const {
  if (total(Tier::Gpu) <= device.available) return;
  throw OutOfMemoryError(over("GPU memory", total(Tier::Gpu), describe(Tier::Gpu), device, hint));
}

void MemoryPlan::check_disk(const Capacity& disk, const std::string& folder, const std::string& hint) const {
  const uint64_t need = total(Tier::Disk);
  if (need == 0 || need <= disk.available) return;
  throw IoError(over("disk in " + folder, need, describe(Tier::Disk), disk, hint));
}

void MemoryPlan::check(const Capacities& c, const std::string& folder, const std::string& hint) const {
  check_host(c.host, hint);
  check_device(c.device, hint);
  check_disk(c.disk, folder, hint);
}

std::string MemoryPlan::table(const Capacities& c) const {
  std::ostringstream s;
  const auto section = [&](const char* title, Tier group, uint64_t need, const Capacity* cap) {
    bool any = false;
    for (const MemoryItem& i : items_) any = any || in_group(i.tier, group);
    if (!any) return;
    s << title << ": " << format_bytes(need);
    if (cap && cap->known())
      s << " of " << format_bytes(cap->available) << " (" << cap->source << ")"
        << (need <= cap->available ? "" : ": DOES NOT FIT");
    else if (cap)
      s << " (capacity " << cap->source << ")";
    s << "\n";
    // Names padded to the section's longest, so sizes line up.
    const auto name = [](const MemoryItem& i) { return i.what + (i.tier == Tier::PinnedCpu ? " (pinned)" : ""); };
    size_t width = 0;
    for (const MemoryItem& i : items_)
      if (in_group(i.tier, group)) width = std::max(width, name(i).size());
    for (const MemoryItem& i : items_) {
      if (!in_group(i.tier, group)) continue;
      const std::string what = name(i);
      s << "  " << what << std::string(width + 2 - what.size(), ' ') << format_bytes(i.bytes)
        << (i.detail.empty() ? "" : "  " + i.detail) << "\n";
    }
  };
  section("GPU memory", Tier::Gpu, total(Tier::Gpu), &c.device);
  section("host memory", Tier::Cpu, host_total(), &c.host);
  section("disk", Tier::Disk, total(Tier::Disk), &c.disk);
  section("mapped from the checkpoint (page cache, not allocated)", Tier::Mmap, total(Tier::Mmap), nullptr);
  return s.str();
}

}  // namespace tiergen
