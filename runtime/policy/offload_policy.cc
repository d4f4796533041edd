#include "runtime/policy/offload_policy.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <utility>

#include "runtime/core/error.h"

namespace tiergen {
namespace {

std::string pct(double v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%g", v);
  return buf;
}

// Rounding slack for shares given as decimals (33.3 + 33.3 + 33.4).
constexpr double kSlack = 1e-9;

void check_pair(const char* what, const char* gpu_flag, const char* cpu_flag, const TierShares& s) {
  for (const auto& [flag, v] : {std::pair{gpu_flag, s.gpu}, std::pair{cpu_flag, s.cpu}})
    if (!(v >= 0 && v <= 100))  // also NaN
      throw InvalidArgumentError(std::string("--percent: ") + flag + " is " + pct(v) +
                                 "; a share is a percentage from 0 to 100");
  if (s.gpu + s.cpu > 100 + kSlack)
    throw InvalidArgumentError(std::string("--percent: ") + what + " on the GPU (" + pct(s.gpu) + ") and the CPU (" +
                               pct(s.cpu) + ") add up to " + pct(s.gpu + s.cpu) +
                               "%; the two shares may add up to 100 at most (the rest goes to disk)");
}

}  // namespace

std::string OffloadPolicy::describe() const {
  auto three = [](const TierShares& s) { return pct(s.gpu) + "/" + pct(s.cpu) + "/" + pct(s.disk()); };
  return "weights " + three(weights) + ", KV cache " + three(cache) + ", activations " + three(activations) +
         " (GPU/CPU/disk %)" + (overlap ? ", overlap" : ", no overlap");
}

void set_percent(OffloadPolicy& policy, const std::vector<double>& six) {
  if (six.size() != 6)
    throw InvalidArgumentError(
        "--percent takes six numbers (weights on GPU, on CPU; KV cache on GPU, on CPU; "
        "activations on GPU, on CPU), got " +
        std::to_string(six.size()));
  policy.weights = {six[0], six[1]};
  policy.cache = {six[2], six[3]};
  policy.activations = {six[4], six[5]};
  validate(policy);
}

void validate(const OffloadPolicy& p) {
  check_pair("weights", "wg (weights on GPU)", "wc (weights on CPU)", p.weights);
  check_pair("the KV cache", "cg (KV cache on GPU)", "cc (KV cache on CPU)", p.cache);
  check_pair("activations", "hg (activations on GPU)", "hc (activations on CPU)", p.activations);
  if (p.gpu_batch_size < 1)
    throw InvalidArgumentError("--gpu-batch-size is " + std::to_string(p.gpu_batch_size) + "; it must be at least 1");
  if (p.num_gpu_batches < 1)
    throw InvalidArgumentError("--num-gpu-batches is " + std::to_string(p.num_gpu_batches) + "; it must be at least 1");
}

std::vector<RowSplit> place_rows(const std::vector<WeightRows>& layer, const TierShares& shares) {
  uint64_t total = 0;
  for (const WeightRows& t : layer) total += t.bytes();
  // The two cuts, in bytes from the start of the layer: the GPU's share ends at gpu_end, the CPU's
  // at cpu_end. Shares were validated; clamp what rounding leaves over.
  const auto cut = [&](double percent) {
    const double b = std::nearbyint(static_cast<double>(total) * percent / 100.0);
    return static_cast<uint64_t>(std::clamp(b, 0.0, static_cast<double>(total)));
  };
  const uint64_t gpu_end = cut(shares.gpu), cpu_end = std::max(gpu_end, cut(shares.gpu + shares.cpu));
  // Rows of a tensor starting at byte `begin` that lie before `end`, rounded to the nearest row.
  const auto rows_before = [](const WeightRows& t, uint64_t begin, uint64_t end) -> int64_t {
    if (end <= begin || t.row_bytes == 0) return 0;
    const uint64_t r = (end - begin + t.row_bytes / 2) / t.row_bytes;
    return static_cast<int64_t>(std::min<uint64_t>(r, static_cast<uint64_t>(t.rows)));
  };
  std::vector<RowSplit> out;
  out.reserve(layer.size());
  uint64_t begin = 0;
  for (const WeightRows& t : layer) {
    RowSplit s;
    s.gpu_rows = rows_before(t, begin, gpu_end);
    s.cpu_rows = rows_before(t, begin, cpu_end) - s.gpu_rows;
    s.disk_rows = t.rows - s.gpu_rows - s.cpu_rows;
    out.push_back(s);
    begin += t.bytes();
  }
  return out;
}

}  // namespace tiergen
