#include "comm/layer_balance.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "runtime/core/error.h"

namespace tiergen::comm {
namespace {

double cost_of(const StageCost& c, int64_t n) { return c.fixed_seconds + static_cast<double>(n) * c.seconds_per_layer; }

// The most layers stage `c` takes within `limit` seconds (at least 1, at most its max_layers).
int64_t layers_within(const StageCost& c, double limit) {
  if (!(c.seconds_per_layer > 0)) return c.max_layers;
  const double n = std::floor((limit - c.fixed_seconds) / c.seconds_per_layer * (1 + 1e-12));
  return std::clamp<int64_t>(n >= 0 ? static_cast<int64_t>(std::min(n, 1e15)) : 0, 1, c.max_layers);
}

}  // namespace

bool can_hold(int64_t num_layers, const std::vector<StageCost>& costs) {
  int64_t room = 0;
  for (const StageCost& c : costs) {
    if (c.max_layers < 1) return false;
    room += std::min(c.max_layers, num_layers);
  }
  return room >= num_layers;
}

std::vector<int64_t> balance_layers(int64_t num_layers, const std::vector<StageCost>& costs) {
  const auto stages = static_cast<int64_t>(costs.size());
  if (stages < 1) throw InvalidArgumentError("a pipeline needs at least one stage");
  if (stages > num_layers)
    throw InvalidArgumentError("a pipeline of " + std::to_string(stages) + " stages for a model of " +
                               std::to_string(num_layers) + " decoder layers: each stage needs at least one layer");
  std::string holds;
  for (int64_t s = 0; s < stages; ++s) {
    const StageCost& c = costs[static_cast<size_t>(s)];
    if (!std::isfinite(c.seconds_per_layer) || c.seconds_per_layer < 0 || !std::isfinite(c.fixed_seconds))
      throw InternalError("stage " + std::to_string(s) + ": a bad cost estimate");
    holds += (holds.empty() ? "" : ", ") + ("stage " + std::to_string(s) + " " + std::to_string(c.max_layers));
  }
  if (!can_hold(num_layers, costs))
    throw InvalidArgumentError("the stages' memory budgets hold at most " + holds + " of the model's " +
                               std::to_string(num_layers) +
                               " decoder layers: raise the budgets, offload more with --percent, add stages or "
                               "lower the batch size");
  // The least pace T at which every stage's layers within T cover the model: a binary search over
  // the candidate paces, the costs of each stage at each layer count.
  std::vector<double> paces;
  for (const StageCost& c : costs)
    for (int64_t n = 1; n <= std::min(c.max_layers, num_layers); ++n) paces.push_back(cost_of(c, n));
  std::sort(paces.begin(), paces.end());
  auto covered = [&](double pace) {
    int64_t n = 0;
    for (const StageCost& c : costs) n += std::min(layers_within(c, pace), num_layers);
    return n >= num_layers;
  };
  const double pace = *std::partition_point(paces.begin(), paces.end(), [&](double p) { return !covered(p); });
  std::vector<int64_t> take;
  int64_t total = 0;
  for (const StageCost& c : costs) total += take.emplace_back(std::min(layers_within(c, pace), num_layers));
  // Over-covered: give back one layer at a time from the costliest stage that has more than one
  // (the later one on a tie), so the rest is shared as evenly as the costs allow.
  while (total > num_layers) {
    int64_t from = -1;
    for (int64_t s = 0; s < stages; ++s) {
      const auto i = static_cast<size_t>(s);
      if (take[i] > 1 && (from < 0 || cost_of(costs[i], take[i]) >=
                                          cost_of(costs[static_cast<size_t>(from)], take[static_cast<size_t>(from)])))
        from = s;
    }
    --take[static_cast<size_t>(from)];
    --total;
  }
  std::vector<int64_t> first;
  int64_t at = 0;
  for (int64_t s = 0; s + 1 < stages; ++s) first.push_back(at += take[static_cast<size_t>(s)]);
  return first;
}

std::string describe_balance(const std::vector<int64_t>& first_layers, int64_t num_layers,
                             const std::vector<StageCost>& costs) {
  std::string out;
  for (size_t s = 0; s < costs.size(); ++s) {
    const int64_t a = s == 0 ? 0 : first_layers[s - 1], b = s < first_layers.size() ? first_layers[s] : num_layers;
    char ms[32];
    std::snprintf(ms, sizeof ms, "%.1f ms", 1e3 * cost_of(costs[s], b - a));
    out += (out.empty() ? "" : "; ") +
           ("stage " + std::to_string(s) + ": " + std::to_string(b - a) + (b - a == 1 ? " layer, " : " layers, ") + ms);
  }
  return out;
}

}  // namespace tiergen::comm
