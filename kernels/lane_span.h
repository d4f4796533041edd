// A trace span (runtime/core/trace.h) over the work queued on one of a backend's lanes between
// construction and destruction: its ends are stamped when the lane reaches them, not when the
// host queues them, so the trace shows when the GPU did the work. Free while no trace records.
#pragma once

#include <memory>
#include <string>

#include "kernels/backend.h"
#include "runtime/core/trace.h"

namespace tiergen::kernels {

class LaneSpan {
 public:
  LaneSpan(Backend& be, Lane lane, const char* track, std::string name)
      : be_(be), lane_(lane), on_(trace::enabled()) {
    if (!on_) return;
    begin_ = std::make_shared<trace::Clock::time_point>();
    be_.on_lane(lane_, [b = begin_] { *b = trace::Clock::now(); });
    track_ = track;
    name_ = std::move(name);
  }
  ~LaneSpan() {
    if (!on_) return;
    try {
      be_.on_lane(lane_, [b = begin_, t = track_, n = std::move(name_)]() mutable {
        trace::record(t, std::move(n), *b, trace::Clock::now());
      });
    } catch (...) {  // a trace is never worth an exception out of a destructor
    }
  }
  LaneSpan(const LaneSpan&) = delete;
  LaneSpan& operator=(const LaneSpan&) = delete;

 private:
  Backend& be_;
  Lane lane_;
  bool on_;
  const char* track_ = nullptr;
  std::string name_;
  std::shared_ptr<trace::Clock::time_point> begin_;
};

}  // namespace tiergen::kernels
