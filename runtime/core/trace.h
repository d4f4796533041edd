// A Chrome / Perfetto trace of a run (the JSON "traceEvents" format, opened in ui.perfetto.dev or
// chrome://tracing): one track per engine that can overlap another (GPU compute, the transfer
// lanes, disk I/O threads, attention on the host), so a user sees whether transfers hide behind
// compute. Off unless a trace is started (--trace FILE); while off a span costs one atomic load.
#pragma once

#include <chrono>
#include <string>
#include <vector>

namespace tiergen::trace {

using Clock = std::chrono::steady_clock;

// Track names: one row each in the viewer.
inline constexpr const char* kCompute = "compute";
inline constexpr const char* kLoad = "H2D (load lane)";
inline constexpr const char* kStore = "D2H (store lane)";
inline constexpr const char* kDisk = "disk I/O";
inline constexpr const char* kHostAttention = "CPU attention";
inline constexpr const char* kSteps = "steps";

bool enabled();
// Starts recording; the file is written by stop(). InvalidArgumentError when one is recording.
void start(const std::string& path);
// Writes the trace and stops recording (IoError when the file cannot be written). A no-op when
// nothing is recording.
void stop();
// The spans recorded so far that began at or after `since`, as a JSON array of trace events for
// process `pid` named `process`, stamped in microseconds of this host's system clock since the Unix
// epoch, so that the traces of several processes (the ranks of a pipeline) line up in one file
// (exactly on one host; across hosts as well as their clocks agree). "[]" while not recording.
std::string events_json(int pid, const std::string& process, Clock::time_point since);
// Writes one trace from several processes' events_json arrays, its times from the earliest event.
// IoError when the file cannot be written, InvalidArgumentError for an array that is not JSON.
void write_merged(const std::string& path, const std::vector<std::string>& arrays);
// One span on `track` (thread-safe; dropped while not recording).
void record(const char* track, std::string name, Clock::time_point begin, Clock::time_point end);

// A span on a host track from construction to destruction.
class Span {
 public:
  Span(const char* track, std::string name);
  ~Span();
  Span(const Span&) = delete;
  Span& operator=(const Span&) = delete;

 private:
  const char* track_;
  std::string name_;
  Clock::time_point begin_;
  bool on_;
};

}  // namespace tiergen::trace
