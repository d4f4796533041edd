#include "runtime/core/trace.h"

#include <algorithm>
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
  Clock::time_point origin;                    // ts 0 of this process's own file
  std::chrono::system_clock::time_point wall;  // the same instant by the system clock
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

// `events` as trace events of process `pid`, one thread id per track in the order tracks first
// appear; `ts` maps a time to the event's microseconds.
template <class Ts>
nlohmann::json to_json(const std::vector<Event>& events, int pid, const Ts& ts) {
  std::map<std::string, int> tids;
  nlohmann::json out = nlohmann::json::array();
  for (const Event& e : events) {
    auto [it, added] = tids.emplace(e.track, static_cast<int>(tids.size()) + 1);
    if (added)
      out.push_back(
          {{"ph", "M"}, {"name", "thread_name"}, {"pid", pid}, {"tid", it->second}, {"args", {{"name", e.track}}}});
    out.push_back({{"ph", "X"},
                   {"name", e.name},
                   {"pid", pid},
                   {"tid", it->second},
                   {"ts", ts(e.begin)},
                   {"dur", micros(e.end, e.begin)}});
  }
  return out;
}

void write_file(const std::string& path, const nlohmann::json& events) {
  std::ofstream f(path, std::ios::trunc);
  f << nlohmann::json{{"traceEvents", events}, {"displayTimeUnit", "ms"}}.dump() << "\n";
  if (!f.flush()) throw IoError("cannot write the trace file " + path);
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
  r.wall = std::chrono::system_clock::now();
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
  write_file(path, to_json(events, 1, [&](Clock::time_point at) { return micros(at, r.origin); }));
}

std::string events_json(int pid, const std::string& process, Clock::time_point since) {
  Recorder& r = recorder();
  std::vector<Event> events;
  double wall_us = 0;
  Clock::time_point origin;
  {
    std::lock_guard lock(r.mu);
    if (!g_on) return "[]";
    for (const Event& e : r.events)
      if (e.begin >= since) events.push_back(e);
    origin = r.origin;
    wall_us = std::chrono::duration<double, std::micro>(r.wall.time_since_epoch()).count();
  }
  nlohmann::json out = to_json(events, pid, [&](Clock::time_point at) { return wall_us + micros(at, origin); });
  const nlohmann::json name = {{"ph", "M"}, {"name", "process_name"}, {"pid", pid}, {"args", {{"name", process}}}};
  out.insert(out.begin(), name);
  return out.dump();
}

void write_merged(const std::string& path, const std::vector<std::string>& arrays) {
  nlohmann::json all = nlohmann::json::array();
  for (const std::string& a : arrays) {
    const nlohmann::json events = nlohmann::json::parse(a, nullptr, /*allow_exceptions=*/false);
    if (!events.is_array()) throw InvalidArgumentError("a process's trace events are not a JSON array");
    for (const auto& e : events) all.push_back(e);
  }
  double first = 0;
  bool any = false;
  for (const auto& e : all)
    if (e.contains("ts")) {
      const double ts = e.at("ts").get<double>();
      first = any ? std::min(first, ts) : ts;
      any = true;
    }
  for (auto& e : all)
    if (e.contains("ts")) e["ts"] = e.at("ts").get<double>() - first;
  write_file(path, all);
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
