#include "runtime/core/trace.h"

#include <atomic>
#include <fstream>
#include <map>
#include <mutex>
#include <vector>

#include <nlohmann/json.hpp>

#include "runtime/core/error.h"

namespace tiergen::trace {
namespace {

struct Event {
  const char* track;
  std::string name;
  Clock::time_point begin, end;
};

struct Recorder {
  std::mutex mu;
  std::string path;
  Clock::time_point origin;
  std::vector<Event> events;
};

std::atomic<bool> g_on{false};
Recorder& recorder() {
  static Recorder r;
  return r;
}

double micros(Clock::time_point t, Clock::time_point origin) {
  return std::chrono::duration<double, std::micro>(t - origin).count();
}

}  // namespace

bool enabled() { return g_on.load(std::memory_order_relaxed); }

void start(const std::string& path) {
  Recorder& r = recorder();
  std::lock_guard lock(r.mu);
  if (g_on) throw InvalidArgumentError("a trace is already being recorded to " + r.path);
  {
    std::ofstream probe(path, std::ios::trunc);  // a bad path fails now, not after the run
    if (!probe) throw IoError("cannot write the trace file " + path);
  }
  r.path = path;
  r.origin = Clock::now();
  r.events.clear();
  g_on = true;
}

void stop() {
  Recorder& r = recorder();
  std::vector<Event> events;
  std::string path;
  {
    std::lock_guard lock(r.mu);
    if (!g_on) return;
    g_on = false;
    events.swap(r.events);
    path.swap(r.path);
  }
  // One thread id per track, in the order tracks first appear.
  std::map<std::string, int> tids;
  nlohmann::json out = nlohmann::json::array();
  for (const Event& e : events) {
    auto [it, added] = tids.emplace(e.track, static_cast<int>(tids.size()) + 1);
    if (added)
      out.push_back({{"ph", "M"}, {"name", "thread_name"}, {"pid", 1}, {"tid", it->second}, {"args", {{"name", e.track}}}});
    out.push_back({{"ph", "X"},
                   {"name", e.name},
                   {"pid", 1},
                   {"tid", it->second},
                   {"ts", micros(e.begin, r.origin)},
                   {"dur", micros(e.end, e.begin)}});
  }
  std::ofstream f(path, std::ios::trunc);
  f << nlohmann::json{{"traceEvents", out}, {"displayTimeUnit", "ms"}}.dump() << "\n";
  if (!f.flush()) throw IoError("cannot write the trace file " + path);
}

void record(const char* track, std::string name, Clock::time_point begin, Clock::time_point end) {
  if (!enabled()) return;
  Recorder& r = recorder();
  std::lock_guard lock(r.mu);
  if (g_on) r.events.push_back({track, std::move(name), begin, end});
}

Span::Span(const char* track, std::string name) : track_(track), on_(enabled()) {
  if (!on_) return;
  name_ = std::move(name);
  begin_ = Clock::now();
}

Span::~Span() {
  if (on_) record(track_, std::move(name_), begin_, Clock::now());
}

}  // namespace tiergen::trace
