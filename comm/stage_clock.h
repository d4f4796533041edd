// A rank's time over a run: computing its layers and waiting for input, the pipeline's bubbles
// (comm/pipeline.h reports them per stage).
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "comm/transport.h"

namespace tiergen::comm {

// One rank's time over a period of a run (since the previous report): computing its layers (from
// having a step's input to having sent its output), waiting for input (blocked on a receive: the
// pipeline's bubbles), and the whole period. Rank 0's wait is for the last rank's output; the rest
// of its period is the driver's own work (sampling, scheduling).
struct StageTimes {
  int rank = 0;
  std::string where;  // "rank 1 (host a)"
  double compute_s = 0, wait_s = 0, wall_s = 0;
  std::string trace_events;  // trace::events_json of the period, when a report asked for it
};
// One line per stage: "stage 1, rank 1 (host a): computing 8.10 s (81%), waiting for input 1.80 s (18%)".
std::string describe_times(const std::vector<StageTimes>& stages);

// Times a rank's period: compute and wait spans add up until take() ends the period.
class StageClock {
 public:
  StageClock() : since_(std::chrono::steady_clock::now()) {}
  void computed(std::chrono::steady_clock::time_point from) { compute_ += since(from); }
  void waited(std::chrono::steady_clock::time_point from) { wait_ += since(from); }
  // This rank's times for the period, with its trace events when `trace`; a new period begins.
  StageTimes take(const Transport& t, bool trace);

 private:
  static double since(std::chrono::steady_clock::time_point from) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - from).count();
  }
  std::chrono::steady_clock::time_point since_;
  double compute_ = 0, wait_ = 0;
};

}  // namespace tiergen::comm
