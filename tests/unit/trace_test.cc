// The trace recorder (runtime/core/trace.h): each process's own file, and the merge of several
// processes' events into one (a pipeline's ranks): every process named, its spans on their tracks,
// times on one clock from the earliest span, a period's spans only.
#include "runtime/core/trace.h"

#include <nlohmann/json.hpp>

#include <thread>

#include "runtime/core/error.h"
#include "tests/testutil/testutil.h"

namespace tiergen {
namespace {

using namespace std::chrono_literals;

TEST(Trace, EventsOfAPeriodMergeIntoOneFileOnOneClock) {
  testing::TempDir dir;
  EXPECT_EQ(trace::events_json(3, "idle", trace::Clock::now()), "[]");  // nothing recording
  trace::start((dir / "own.json").string());
  const auto t0 = trace::Clock::now();
  trace::record(trace::kCompute, "before", t0, t0 + 1ms);
  std::this_thread::sleep_for(2ms);
  const auto period = trace::Clock::now();
  trace::record(trace::kCompute, "layer", period, period + 3ms);
  trace::record(trace::kDisk, "read", period + 1ms, period + 2ms);
  const std::string a = trace::events_json(0, "stage 0", period);
  const std::string b = trace::events_json(1, "stage 1", t0);
  trace::stop();

  const nlohmann::json ea = nlohmann::json::parse(a);
  int spans = 0;
  for (const auto& e : ea) {
    EXPECT_EQ(e.at("pid"), 0);
    if (e.at("ph") == "X") {
      ++spans;
      EXPECT_NE(e.at("name"), "before");  // began before the period
    }
  }
  EXPECT_EQ(spans, 2);
  EXPECT_EQ(ea.at(0).at("name"), "process_name");
  EXPECT_EQ(ea.at(0).at("args").at("name"), "stage 0");

  trace::write_merged((dir / "merged.json").string(), {a, b});
  const nlohmann::json m = nlohmann::json::parse(testing::read_file(dir / "merged.json")).at("traceEvents");
  std::map<int, int> per_pid;
  double first = 1e300, layer0 = -1, before1 = -1;
  for (const auto& e : m) {
    if (e.at("ph") != "X") continue;
    per_pid[e.at("pid").get<int>()]++;
    const double ts = e.at("ts").get<double>();
    first = std::min(first, ts);
    if (e.at("pid") == 0 && e.at("name") == "layer") layer0 = ts;
    if (e.at("pid") == 1 && e.at("name") == "before") before1 = ts;
  }
  EXPECT_EQ(per_pid[0], 2);
  EXPECT_EQ(per_pid[1], 3);
  EXPECT_EQ(first, 0.0);  // from the earliest span
  EXPECT_EQ(before1, 0.0);
  EXPECT_GE(layer0, 2000.0);  // one clock: the period began at least 2 ms after t0
  EXPECT_LT(layer0, 2000.0 + 1e6);
  // The process's own file has every span, from its own start.
  const nlohmann::json own = nlohmann::json::parse(testing::read_file(dir / "own.json")).at("traceEvents");
  int own_spans = 0;
  for (const auto& e : own) own_spans += e.at("ph") == "X";
  EXPECT_EQ(own_spans, 3);

  EXPECT_THROW_WITH(trace::write_merged((dir / "bad.json").string(), {"{not json"}), InvalidArgumentError,
                    "not a JSON array");
  EXPECT_THROW_WITH(trace::write_merged((dir / "no" / "such" / "m.json").string(), {a}), IoError,
                    "cannot write the trace file");
}

}  // namespace
}  // namespace tiergen
