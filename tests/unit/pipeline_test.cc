// The pipeline over ranks, its ranks as threads over the in-process transport: every reference
// model gives exactly the single-process tokens (greedy, and sampled with seeds) for uneven layer
// splits and several micro-batch counts; each stage loads only its own layers. Failures: a rank
// that stops answering ends every other rank's wait within the deadline, naming it; a bad
// configuration is the same clear error on every rank; the layer split is checked.
#include "comm/pipeline.h"

#include <functional>
#include <future>
#include <thread>

#include "comm/local_transport.h"
#include "runtime/core/error.h"
#include "runtime/generate/generator.h"
#include "tests/testutil/hf_reference.h"
#include "tests/testutil/pipeline_runs.h"
#include "tests/testutil/testutil.h"

namespace tiergen {
namespace {

using namespace std::chrono_literals;

// Each stage of `spans` in its own thread with its own model (only its layers loaded) and backend;
// rank 0 runs the Generator, then `after` (when given) before it stops the run. Returns rank 0's
// results; rethrows the first rank's error.
std::vector<Result> run_pipeline(const std::filesystem::path& dir, const std::vector<LayerSpan>& spans,
                                 const std::vector<Request>& reqs, int64_t block, int micro, int64_t gpu_batch = 0,
                                 const std::function<void(comm::PipelineExecutor&)>& after = {}) {
  const int n = static_cast<int>(spans.size());
  comm::LocalHub hub(n);
  std::vector<std::future<std::vector<Result>>> ranks;
  for (int r = 0; r < n; ++r)
    ranks.push_back(std::async(std::launch::async, [&, r] {
      auto t = hub.endpoint(r);
      return comm::reporting_failures(*t, [&] {
        auto model = Model::load(dir, {}, spans[static_cast<size_t>(r)]);
        auto be = kernels::make_cpu_backend();
        Stage stage(*model, *be, spans[static_cast<size_t>(r)].begin, spans[static_cast<size_t>(r)].end);
        if (r > 0) {
          comm::serve_stage(stage, *t, 10s);
          return std::vector<Result>{};
        }
        comm::PipelineExecutor exec(stage, *t, gpu_batch, micro, 10s);
        Generator gen(exec, nullptr, block);
        auto out = gen.generate(reqs);
        if (after) after(exec);
        exec.stop();
        return out;
      });
    }));
  return testing::rank_zero_results(ranks);
}

std::vector<Request> mixed_requests(const testing::HfReferenceModel& ref) {
  std::vector<Request> reqs = testing::greedy_requests(ref, testing::all_cases(ref));
  // Sampled ones too: the sampler runs on rank 0 from each request's own seed.
  const size_t n = reqs.size();
  for (size_t i = 0; i < n; ++i) {
    Request r = reqs[i];
    r.sampling.do_sample = true;
    r.sampling.temperature = 0.9;
    r.sampling.top_k = 20;
    r.sampling.seed = 7 + i;
    reqs.push_back(r);
  }
  return reqs;
}

class PipelineModels : public ::testing::TestWithParam<std::string> {};

TEST_P(PipelineModels, EqualsOneProcess) {
  const auto ref = testing::load_hf_reference(GetParam());
  const auto spec = load_model_config(ref.dir / "config.json");
  const std::vector<Request> reqs = mixed_requests(ref);
  const int64_t block = 2;
  const auto alone = testing::generate_alone(ref.dir, reqs, block);
  const int64_t L = spec.num_layers;
  struct Shape {
    int stages;
    std::vector<int64_t> cuts;
    int micro;
    int64_t gpu_batch;
  };
  std::vector<Shape> shapes = {{2, {}, 1, 0}, {2, {L - 1}, 3, 1}, {3, {}, 2, 0}, {1, {}, 2, 0}};
  if (L >= 4) shapes.push_back({4, {1, 2, L - 1}, 4, 1});
  for (const Shape& s : shapes) {
    if (s.stages > L) continue;
    const auto got = run_pipeline(ref.dir, comm::stage_spans(L, s.stages, s.cuts), reqs, block, s.micro, s.gpu_batch);
    ASSERT_EQ(got.size(), reqs.size());
    for (size_t i = 0; i < reqs.size(); ++i)
      EXPECT_EQ(got[i].output_ids, alone[i].output_ids)
          << GetParam() << ": request " << i << ", " << s.stages << " stages, " << s.micro << " micro-batches";
  }
  // The greedy requests also match the Hugging Face reference.
  for (size_t i = 0; i < ref.cases.size(); ++i) EXPECT_EQ(alone[i].output_ids, ref.cases[i].greedy) << i;
}

INSTANTIATE_TEST_SUITE_P(Models, PipelineModels, ::testing::ValuesIn(testing::hf_reference_models()),
                         [](const auto& info) { return testing::test_name(info.param); });

TEST(StageSpans, EvenAndGivenSplits) {
  auto spans = comm::stage_spans(5, 2);  // 3 + 2 decoder layers
  ASSERT_EQ(spans.size(), 2u);
  EXPECT_EQ(spans[0].begin, 0u);
  EXPECT_EQ(spans[0].end, 7u);  // embed + 3 x (attention, mlp)
  EXPECT_EQ(spans[1].begin, 7u);
  EXPECT_EQ(spans[1].end, 12u);  // ... + head
  EXPECT_EQ(comm::describe_span(spans[0], 5), "decoder layers 0-2, the embedding");
  EXPECT_EQ(comm::describe_span(spans[1], 5), "decoder layers 3-4, the head");
  spans = comm::stage_spans(5, 3, {1, 4});
  EXPECT_EQ(comm::describe_span(spans[1], 5), "decoder layers 1-3");
  EXPECT_EQ(comm::describe_span(comm::stage_spans(5, 2, {4})[1], 5), "decoder layer 4, the head");
  EXPECT_THROW_WITH(comm::stage_spans(2, 3), InvalidArgumentError, "each stage needs at least one layer");
  EXPECT_THROW_WITH(comm::stage_spans(5, 3, {3, 2}), InvalidArgumentError, "must increase");
  EXPECT_THROW_WITH(comm::stage_spans(5, 3, {1}), InvalidArgumentError, "need 2 first layers");
  EXPECT_THROW_WITH(comm::stage_spans(5, 2, {5}), InvalidArgumentError, "must increase");
}

// A rank that stops answering (it never serves): rank 0's wait ends at the deadline, naming it.
TEST(PipelineFailure, SilentRankEndsTheWaitNamingIt) {
  comm::LocalHub hub(2);
  auto t0 = hub.endpoint(0), t1 = hub.endpoint(1);
  auto model = Model::load(testing::hf_model_dir("opt-tiny"));
  auto be = kernels::make_cpu_backend();
  const auto spans = comm::stage_spans(model->spec().num_layers, 2);
  Stage first(*model, *be, spans[0].begin, spans[0].end);
  comm::PipelineExecutor exec(first, *t0, 0, 1, 300ms);
  Generator gen(exec, nullptr, 2);
  Request r;
  r.input_ids = {5, 6, 7};
  r.max_new_tokens = 3;
  const auto t = std::chrono::steady_clock::now();
  EXPECT_THROW_WITH(gen.generate({r}), PeerError, "no message from rank 1 (this process) within 0.3 s");
  EXPECT_LT(std::chrono::steady_clock::now() - t, 5s);
}

// A rank that fails reports it: the others stop with its error, not with their own deadline.
TEST(PipelineFailure, AFailingRankIsNamedByEveryRank) {
  comm::LocalHub hub(3);
  std::vector<std::future<std::string>> ranks;
  for (int r = 0; r < 3; ++r)
    ranks.push_back(std::async(std::launch::async, [&, r]() -> std::string {
      auto t = hub.endpoint(r);
      try {
        comm::reporting_failures(*t, [&] {
          if (r == 1) throw OutOfMemoryError("the stage's plan needs 9 GiB of the GPU's 8 GiB");
          t->recv(r == 0 ? 2 : 1, 30s);  // waits that only the report ends in time
        });
      } catch (const Error& e) {
        return e.what();
      }
      return "no error";
    }));
  for (int r = 0; r < 3; ++r) {
    const std::string what = ranks[static_cast<size_t>(r)].get();
    // The failing rank has its own error; the others have its report, not a deadline of their own.
    EXPECT_NE(what.find(r == 1 ? "the stage's plan needs 9 GiB" : "rank 1 (this process) stopped: the stage's plan"),
              std::string::npos)
        << r << ": " << what;
  }
}

// Rank 0 failing mid-run (its executor unwinding) does not end the others' runs as a success: they
// stop with its error.
TEST(PipelineFailure, RankZeroFailingMidRunIsAFailureEverywhere) {
  comm::LocalHub hub(2);
  auto model = Model::load(testing::hf_model_dir("opt-tiny"));
  const auto spans = comm::stage_spans(model->spec().num_layers, 2);
  auto worker = std::async(std::launch::async, [&]() -> std::string {
    auto t = hub.endpoint(1);
    auto be = kernels::make_cpu_backend();
    Stage second(*model, *be, spans[1].begin, spans[1].end);
    try {
      comm::serve_stage(second, *t, 10s);
    } catch (const PeerError& e) {
      return e.what();
    }
    return "served to the end";
  });
  auto t0 = hub.endpoint(0);
  auto be = kernels::make_cpu_backend();
  Stage first(*model, *be, spans[0].begin, spans[0].end);
  EXPECT_THROW_WITH(comm::reporting_failures(*t0,
                                             [&] {
                                               comm::PipelineExecutor exec(first, *t0, 0, 1, 10s);
                                               exec.allocate_cache(2, 8, 2);
                                               throw IoError("cannot write the output: disk full");
                                             }),
                    IoError, "disk full");
  EXPECT_EQ(worker.get(), "rank 0 (this process) stopped: cannot write the output: disk full");
}

// Every rank checks its part before loading; all learn every failure, with its kind.
TEST(PipelineFailure, AgreeGivesEveryRankTheSameError) {
  comm::LocalHub hub(3);
  std::vector<std::future<std::pair<ErrorKind, std::string>>> ranks;
  for (int r = 0; r < 3; ++r)
    ranks.push_back(std::async(std::launch::async, [&, r]() -> std::pair<ErrorKind, std::string> {
      auto t = hub.endpoint(r);
      std::exception_ptr mine;
      if (r == 2) mine = std::make_exception_ptr(OutOfMemoryError("KV cache: needs 3 GiB, the budget is 1 GiB"));
      try {
        comm::agree(*t, mine, 5s);
      } catch (const Error& e) {
        return {e.kind(), e.what()};
      }
      return {ErrorKind::Internal, "agreed"};
    }));
  for (int r = 0; r < 3; ++r) {
    auto [kind, what] = ranks[static_cast<size_t>(r)].get();
    EXPECT_EQ(kind, ErrorKind::OutOfMemory) << r;
    EXPECT_EQ(what, "rank 2 (this process): KV cache: needs 3 GiB, the budget is 1 GiB") << r;
  }
}

// Every stage reports its computing and waiting time over the run, in rank order; a report starts
// a new period, so one right after another counts no compute.
TEST(PipelineComm, ReportGivesEveryStagesTimes) {
  const auto ref = testing::load_hf_reference(testing::hf_reference_models().front());
  const int64_t L = load_model_config(ref.dir / "config.json").num_layers;
  const std::vector<Request> reqs = testing::greedy_requests(ref, testing::all_cases(ref));
  ASSERT_GE(L, 2);
  std::vector<comm::StageTimes> run, idle;  // two stages: the reference models have 2 decoder layers
  run_pipeline(ref.dir, comm::stage_spans(L, 2), reqs, 1, 2, 0, [&](comm::PipelineExecutor& exec) {
    run = exec.report(false);
    idle = exec.report(false);
  });
  ASSERT_EQ(run.size(), 2u);
  ASSERT_EQ(idle.size(), 2u);
  for (int r = 0; r < 2; ++r) {
    const comm::StageTimes& s = run[static_cast<size_t>(r)];
    EXPECT_EQ(s.rank, r);
    EXPECT_NE(s.where.find("rank " + std::to_string(r)), std::string::npos) << s.where;
    EXPECT_GT(s.compute_s, 0) << r;
    EXPECT_LE(s.compute_s + s.wait_s, s.wall_s * 1.001 + 1e-6) << r;
    EXPECT_TRUE(s.trace_events.empty()) << r;  // not asked for
    EXPECT_EQ(idle[static_cast<size_t>(r)].compute_s, 0) << r;
  }
  // Stages after the first wait for their input before their first step at least.
  EXPECT_GT(run[1].wait_s, 0);
  const std::string lines = comm::describe_times(run);
  EXPECT_NE(lines.find("stage 1, rank 1"), std::string::npos) << lines;
  EXPECT_NE(lines.find("waiting for input"), std::string::npos) << lines;
}

// Each rank's bytes reach every rank, in rank order (a layer assignment's cost estimates).
TEST(PipelineComm, AllGatherGivesEveryRankEveryRanksBytes) {
  comm::LocalHub hub(3);
  std::vector<std::future<std::vector<std::vector<std::byte>>>> ranks;
  for (int r = 0; r < 3; ++r)
    ranks.push_back(std::async(std::launch::async, [&, r] {
      auto t = hub.endpoint(r);
      std::vector<std::byte> mine(static_cast<size_t>(r + 1), static_cast<std::byte>(10 + r));  // rank 0 one byte ...
      return comm::all_gather(*t, mine, 5s);
    }));
  for (int r = 0; r < 3; ++r) {
    const auto all = ranks[static_cast<size_t>(r)].get();
    ASSERT_EQ(all.size(), 3u) << r;
    for (size_t k = 0; k < 3; ++k)
      EXPECT_EQ(all[k], std::vector<std::byte>(k + 1, static_cast<std::byte>(10 + k))) << r << " " << k;
  }
}

// Values and text ride on the same gather; a rank that sends another count is named as malformed.
TEST(PipelineComm, AllGatherValuesAndText) {
  comm::LocalHub hub(2);
  auto on_rank = [&](int r, auto body) {
    return std::async(std::launch::async, [&, r, body] {
      auto t = hub.endpoint(r);
      return body(*t, r);
    });
  };
  auto v0 = on_rank(0, [](comm::Transport& t, int r) {
    return comm::all_gather_values(t, std::vector<double>{r + 0.5, r + 1.5}, 5s);
  });
  auto v1 = on_rank(1, [](comm::Transport& t, int r) {
    return comm::all_gather_values(t, std::vector<double>{r + 0.5, r + 1.5}, 5s);
  });
  for (auto* f : {&v0, &v1}) EXPECT_EQ(f->get(), (std::vector<std::vector<double>>{{0.5, 1.5}, {1.5, 2.5}}));
  auto s0 = on_rank(0, [](comm::Transport& t, int) { return comm::all_gather_text(t, "zero", 5s); });
  auto s1 = on_rank(1, [](comm::Transport& t, int) { return comm::all_gather_text(t, "one", 5s); });
  for (auto* f : {&s0, &s1}) EXPECT_EQ(f->get(), (std::vector<std::string>{"zero", "one"}));
  auto bad0 = on_rank(0, [](comm::Transport& t, int) { return comm::all_gather_values(t, std::vector<int>{1}, 5s); });
  auto bad1 = on_rank(1, [](comm::Transport& t, int) {
    return comm::all_gather_values(t, std::vector<int>{1, 2}, 5s);
  });
  EXPECT_THROW_WITH(bad0.get(), PeerError, "a malformed message from another rank: 8 bytes where 4 were expected");
  EXPECT_THROW_WITH(bad1.get(), PeerError, "a malformed message from another rank: 4 bytes where 8 were expected");
}

}  // namespace
}  // namespace tiergen
