// The default layer assignment of a pipeline whose stages differ (devices, budgets, policies):
// each stage's decoder layers chosen so that the slowest stage, which sets the pipeline's pace once
// micro-batches fill it, is as fast as it can be, within what each stage's memory can hold.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace tiergen::comm {

// One stage's estimated cost of a decode step as a function of its decoder layers n:
// fixed_seconds + n * seconds_per_layer, for 1 <= n <= max_layers (what its memory plan holds).
struct StageCost {
  double seconds_per_layer = 0;
  double fixed_seconds = 0;  // what does not scale with its layers (the LM head on the last stage)
  int64_t max_layers = 0;
};

// Whether the stages can hold `num_layers` decoder layers at all: each at least one, together all.
bool can_hold(int64_t num_layers, const std::vector<StageCost>& costs);

// The first decoder layer of every stage after the first (stage_spans' `first_layers`) for
// `num_layers` decoder layers over costs.size() stages: each stage gets at least one layer and at
// most its max_layers, and the largest stage cost is the least such a split allows (equal stages:
// the equal split, the earlier stages taking one more where the layers do not divide). InvalidArgumentError when the
// stages cannot hold the model (naming what each holds) or for more stages than layers.
std::vector<int64_t> balance_layers(int64_t num_layers, const std::vector<StageCost>& costs);

// "stage 0: 20 layers, 31.2 ms; stage 1: 12 layers, 30.8 ms" for the run's log.
std::string describe_balance(const std::vector<int64_t>& first_layers, int64_t num_layers,
                             const std::vector<StageCost>& costs);

}  // namespace tiergen::comm
