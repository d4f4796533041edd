#include "comm/stage_clock.h"

#include <cstdio>

#include "runtime/core/trace.h"

namespace tiergen::comm {

StageTimes StageClock::take(const Transport& t, bool trace) {
  StageTimes s{t.rank(), t.describe(t.rank()), compute_, wait_, since(since_), {}};
  if (trace)
    s.trace_events = trace::events_json(t.rank(), "stage " + std::to_string(t.rank()) + ", " + s.where, since_);
  since_ = std::chrono::steady_clock::now();
  compute_ = wait_ = 0;
  return s;
}

std::string describe_times(const std::vector<StageTimes>& stages) {
  std::string out;
  char line[256];
  for (const StageTimes& s : stages) {
    const double wall = s.wall_s > 0 ? s.wall_s : 1;
    std::snprintf(line, sizeof line, "stage %d, %s: computing %.2f s (%.0f%%), waiting for input %.2f s (%.0f%%)\n",
                  s.rank, s.where.c_str(), s.compute_s, 100 * s.compute_s / wall, s.wait_s, 100 * s.wait_s / wall);
    out += line;
  }
  return out;
}

}  // namespace tiergen::comm
