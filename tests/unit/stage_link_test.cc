// The stage links (comm/stage_link.h): which pairs of ranks go device to device, and the pipeline
// over device links, here an in-process stand-in for NCCL (the same PeerLink contract on host
// tensors) so that the path runs on a machine with no GPU: the tokens equal the single process's,
// the bytes went over the links and not the transport, and a link that goes silent or a rank that
// fails ends every wait within the deadline, naming the rank. The NCCL links themselves are tested on
// a GPU host (tests/gpu/, scripts/gpu-test.sh).
#include "comm/stage_link.h"

#include <condition_variable>
#include <cstring>
#include <future>
#include <map>
#include <mutex>
#include <optional>
#include <thread>

#include "comm/local_transport.h"
#include "comm/pipeline.h"
#include "runtime/core/error.h"
#include "runtime/generate/generator.h"
#include "tests/testutil/hf_reference.h"
#include "tests/testutil/pipeline_runs.h"
#include "tests/testutil/testutil.h"

namespace tiergen {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// Messages from a link's sender to its receiver.
struct Wire {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<std::vector<std::byte>> queue;
  int sent = 0;
  bool silent = false;              // the sender's transfers never arrive (a peer that died mid-run)
  bool posted[2] = {false, false};  // each end's first transfer, which connects the link
};

// The wires of every link, by key, shared by the ranks' connectors.
struct Wires {
  std::mutex mu;
  std::map<std::vector<std::byte>, std::shared_ptr<Wire>> by_key;
  int next = 0;
  // As NCCL's: a link's first transfer connects it, which needs both ends' first transfers and
  // then takes this long (0: links are up at once).
  std::chrono::milliseconds connect_time{0};
  std::shared_ptr<Wire> get(const std::vector<std::byte>& key) {
    const std::lock_guard lock(mu);
    auto& w = by_key[key];
    if (!w) w = std::make_shared<Wire>();
    return w;
  }
  int total_sent() {
    const std::lock_guard lock(mu);
    int n = 0;
    for (auto& [k, w] : by_key) n += w->sent;
    return n;
  }
};

// A PeerLink as NCCL's behaves: sends and receives are queued, receives complete in wait(), which
// polls and gives up at its deadline.
class FakeLink final : public kernels::PeerLink {
 public:
  FakeLink(std::shared_ptr<Wire> w, std::function<void()> poll, int me, std::chrono::milliseconds connect_time)
      : w_(std::move(w)), poll_(std::move(poll)), me_(me), connect_time_(connect_time) {}
  bool send(const Tensor& x, std::chrono::milliseconds timeout) override {
    if (!connected(timeout)) return false;
    const std::lock_guard lock(w_->mu);
    ++w_->sent;
    if (w_->silent) return true;
    const auto* p = static_cast<const std::byte*>(x.raw());
    w_->queue.emplace_back(p, p + x.nbytes());
    w_->cv.notify_all();
    return true;
  }
  bool recv(Tensor& x, std::chrono::milliseconds timeout) override {
    if (!connected(timeout)) return false;
    targets_.push_back(x);
    return true;
  }
  bool wait(std::chrono::milliseconds timeout) override {
    const auto deadline = Clock::now() + timeout;
    for (Tensor& x : targets_) {
      for (;;) {
        std::unique_lock lock(w_->mu);
        if (!w_->queue.empty()) break;
        if (Clock::now() >= deadline) return false;
        w_->cv.wait_for(lock, 2ms);
        lock.unlock();
        poll_();
      }
      const std::lock_guard lock(w_->mu);
      std::vector<std::byte> bytes = std::move(w_->queue.front());
      w_->queue.pop_front();
      EXPECT_EQ(bytes.size(), x.nbytes());
      std::memcpy(x.raw(), bytes.data(), std::min(bytes.size(), x.nbytes()));
    }
    targets_.clear();
    return true;
  }

 private:
  // The first transfer waits for the other end's (false at the deadline), then for the connection.
  bool connected(std::chrono::milliseconds timeout) {
    if (connect_time_.count() == 0 || up_) return true;
    const auto deadline = Clock::now() + timeout;
    {
      std::unique_lock lock(w_->mu);
      w_->posted[me_] = true;
      w_->cv.notify_all();
      if (!w_->cv.wait_until(lock, deadline, [&] { return w_->posted[1 - me_]; })) return false;
    }
    std::this_thread::sleep_for(connect_time_);
    up_ = true;
    return Clock::now() < deadline;
  }

  std::shared_ptr<Wire> w_;
  std::function<void()> poll_;
  int me_;
  std::chrono::milliseconds connect_time_;
  bool up_ = false;
  std::vector<Tensor> targets_;
};

class FakeConnector final : public kernels::PeerConnector {
 public:
  FakeConnector(Wires& wires, std::string address) : wires_(wires), address_(std::move(address)) {}
  std::string address() const override { return address_; }
  std::vector<std::byte> new_key() override {
    const std::lock_guard lock(wires_.mu);
    const int k = wires_.next++;
    std::vector<std::byte> key(sizeof k);
    std::memcpy(key.data(), &k, sizeof k);
    return key;
  }
  std::unique_ptr<kernels::PeerLink> join(std::span<const std::byte> key, int me, std::function<void()> poll) override {
    return std::make_unique<FakeLink>(wires_.get({key.begin(), key.end()}), std::move(poll), me, wires_.connect_time);
  }

 private:
  Wires& wires_;
  std::string address_;
};

// Each stage in its own thread over the in-process transport, its hidden states over fake device
// links (through host memory when `wires` is null), each rank cutting blocks into GPU batches of
// its own `gpu_batch[rank]` (0 on a rank after the first: rank 0's). Returns rank 0's results;
// rethrows the first rank's error.
std::vector<Result> run_linked(const std::filesystem::path& dir, const std::vector<LayerSpan>& spans,
                               const std::vector<Request>& reqs, int64_t block, int micro,
                               const std::vector<int64_t>& gpu_batch, Wires* wires) {
  const int n = static_cast<int>(spans.size());
  comm::LocalHub hub(n);
  std::vector<std::future<std::vector<Result>>> ranks;
  for (int r = 0; r < n; ++r)
    ranks.push_back(std::async(std::launch::async, [&, r] {
      auto t = hub.endpoint(r);
      return comm::reporting_failures(*t, [&] {
        const LayerSpan span = spans[static_cast<size_t>(r)];
        auto model = Model::load(dir, {}, span);
        auto be = kernels::make_cpu_backend();
        Stage stage(*model, *be, span.begin, span.end);
        std::optional<FakeConnector> c;
        if (wires) c.emplace(*wires, "device " + std::to_string(r));
        comm::StageLinks links = comm::StageLinks::connect(*t, *be, c ? &*c : nullptr, "no links", DType::F32,
                                                           wires ? comm::LinkMode::Device : comm::LinkMode::Host, 10s);
        const int64_t g = gpu_batch[static_cast<size_t>(r)];
        if (r > 0) {
          comm::serve_stage(stage, *t, 10s, &links, g);
          return std::vector<Result>{};
        }
        comm::PipelineExecutor exec(stage, *t, g, micro, 10s, &links);
        Generator gen(exec, nullptr, block);
        auto out = gen.generate(reqs);
        exec.stop();
        return out;
      });
    }));
  return testing::rank_zero_results(ranks);
}

// A step of one sequence of `tokens`, as one GPU batch (a receiver's, waiting for its hidden state).
std::vector<GpuBatch> one_batch(std::vector<int32_t> tokens) {
  std::vector<GpuBatch> batches(1);
  batches[0].ctx.plan.add_sequence(tokens, 0, 0);
  return batches;
}

TEST(StageLinks, ParseMode) {
  EXPECT_EQ(comm::parse_link_mode("auto"), comm::LinkMode::Auto);
  EXPECT_EQ(comm::parse_link_mode("host"), comm::LinkMode::Host);
  EXPECT_EQ(comm::parse_link_mode("nccl"), comm::LinkMode::Device);
  EXPECT_THROW_WITH(comm::parse_link_mode("mpi"), InvalidArgumentError, "--stage-link must be auto, host or nccl");
}

TEST(StageLinks, ChoosesDeviceLinksWhereBothEndsCan) {
  comm::LocalHub hub(5);
  auto t = hub.endpoint(0);
  const std::vector<comm::LinkEnd> ends = {
      {"a/0000:01:00.0", "", DType::F16},
      {"a/0000:02:00.0", "", DType::F16},
      {"a/0000:02:00.0", "", DType::F16},  // the same GPU as rank 1
      {"", "NCCL could not be loaded (libnccl.so.2: cannot open)", DType::F16},
      {"b/0000:01:00.0", "", DType::BF16},
  };
  const comm::LinkChoice c = comm::choose_links(ends, comm::LinkMode::Auto, *t);
  EXPECT_EQ(c.device, (std::vector<bool>{true, false, false, false}));
  EXPECT_EQ(c.why_not[0], "");
  EXPECT_NE(c.why_not[1].find("both use the GPU a/0000:02:00.0"), std::string::npos) << c.why_not[1];
  EXPECT_NE(c.why_not[2].find("rank 3 (this process): NCCL could not be loaded"), std::string::npos) << c.why_not[2];
  EXPECT_NE(c.why_not[3].find("rank 3 (this process): NCCL"), std::string::npos) << c.why_not[3];

  // Distinct GPUs, different activation dtypes: the bytes are not the same tensor.
  const std::vector<comm::LinkEnd> mixed = {{"a/1", "", DType::F16}, {"b/1", "", DType::BF16}};
  EXPECT_EQ(comm::choose_links(mixed, comm::LinkMode::Auto, *t).why_not[0], "they compute in F16 and BF16");
  EXPECT_EQ(comm::choose_links(ends, comm::LinkMode::Host, *t).device, (std::vector<bool>(4, false)));
  EXPECT_THROW_WITH(comm::choose_links(ends, comm::LinkMode::Device, *t), InvalidArgumentError,
                    "--stage-link nccl: the hidden states rank 1 (this process) -> rank 2 (this process) cannot go "
                    "over NCCL: both use the GPU");
}

// Over fake device links every model gives the single process's tokens, for uneven splits, several
// micro-batches and GPU batches, and every hidden state went over a link.
TEST(StageLinks, PipelineOverDeviceLinksEqualsOneProcess) {
  for (const std::string& name : testing::hf_reference_models()) {
    const auto ref = testing::load_hf_reference(name);
    const int64_t L = load_model_config(ref.dir / "config.json").num_layers;
    std::vector<Request> reqs = testing::greedy_requests(ref, testing::all_cases(ref));
    Request sampled = reqs.front();
    sampled.sampling.do_sample = true;
    sampled.sampling.temperature = 0.8;
    sampled.sampling.seed = 11;
    reqs.push_back(sampled);
    const auto alone = testing::generate_alone(ref.dir, reqs, 2);
    for (const int stages : {2, 3}) {
      if (stages > L) continue;
      Wires wires;
      const auto got =
          run_linked(ref.dir, comm::stage_spans(L, stages), reqs, 2, stages, std::vector<int64_t>(3, 1), &wires);
      ASSERT_EQ(got.size(), reqs.size());
      for (size_t i = 0; i < reqs.size(); ++i)
        EXPECT_EQ(got[i].output_ids, alone[i].output_ids) << name << ", " << stages << " stages, request " << i;
      // The connection probe of each link, then one hidden state per GPU batch of every step.
      EXPECT_GT(wires.total_sent(), 2 * (stages - 1)) << name;
    }
  }
}

// Each stage cuts a block into GPU batches of its own size (a small card's stage smaller ones): the
// hidden states cross in the sender's batches and are regrouped, over host memory and over device
// links alike, and the tokens stay the single process's.
TEST(StageLinks, StagesWithTheirOwnGpuBatchesGiveTheSingleProcessTokens) {
  for (const std::string name : {"opt-tiny", "llama-tiny-gqa"}) {
    const auto ref = testing::load_hf_reference(name);
    const int64_t L = load_model_config(ref.dir / "config.json").num_layers;
    std::vector<Request> reqs = testing::greedy_requests(ref, testing::all_cases(ref));
    for (size_t i = 0; reqs.size() < 5; ++i) reqs.push_back(reqs[i]);
    const int64_t block = 5;
    const auto alone = testing::generate_alone(ref.dir, reqs, block);
    const int stages = static_cast<int>(std::min<int64_t>(3, L));
    for (const std::vector<int64_t>& g : {std::vector<int64_t>{1, 2, 5}, {5, 2, 1}, {2, 3, 0}})
      for (const bool device : {false, true}) {
        Wires wires;
        const auto got =
            run_linked(ref.dir, comm::stage_spans(L, stages), reqs, block, 2, g, device ? &wires : nullptr);
        ASSERT_EQ(got.size(), reqs.size());
        for (size_t i = 0; i < reqs.size(); ++i)
          EXPECT_EQ(got[i].output_ids, alone[i].output_ids)
              << name << ", GPU batches " << g[0] << "/" << g[1] << "/" << g[2] << (device ? ", device" : ", host")
              << " links, request " << i;
      }
  }
}

// Rank 1 waits on a link whose sender's transfers never arrive: the wait ends at the deadline with
// an error naming the rank it waited for.
TEST(StageLinks, ALinkThatGoesSilentEndsTheWaitNamingTheRank) {
  comm::LocalHub hub(2);
  Wires wires;
  auto model = Model::load(testing::hf_model_dir("opt-tiny"));
  const auto spans = comm::stage_spans(model->spec().num_layers, 2);
  auto sender = std::async(std::launch::async, [&] {
    auto t = hub.endpoint(0);
    auto be = kernels::make_cpu_backend();
    FakeConnector c(wires, "device 0");
    comm::StageLinks links = comm::StageLinks::connect(*t, *be, &c, "", DType::F32, comm::LinkMode::Auto, 10s);
    {  // after the probe: nothing more arrives
      const std::lock_guard lock(wires.mu);
      for (auto& [k, w] : wires.by_key) {
        const std::lock_guard wire_lock(w->mu);
        w->silent = true;
      }
    }
    t->recv(1, 10s);  // until rank 1 has seen its deadline
  });
  auto t = hub.endpoint(1);
  auto be = kernels::make_cpu_backend();
  Stage stage(*model, *be, spans[1].begin, spans[1].end);
  FakeConnector c(wires, "device 1");
  comm::StageLinks links = comm::StageLinks::connect(*t, *be, &c, "", DType::F32, comm::LinkMode::Auto, 10s);
  std::vector<GpuBatch> batches = one_batch({5, 6, 7});
  comm::StageClock clock;
  const auto start = Clock::now();
  EXPECT_THROW_WITH(links.recv(*t, stage, DType::F32, batches, batches, clock, 300ms), PeerError,
                    "rank 1 (this process): no message from rank 0 (this process) within 0.3 s");
  EXPECT_LT(Clock::now() - start, 5s);
  t->send(0, {});
  sender.get();
}

// Rank 2 fails while rank 1 waits on its link from rank 0: the wait ends with rank 2's report
// (the link polls the transport), not with rank 1's own deadline.
TEST(StageLinks, AnotherRanksFailureEndsALinkWait) {
  comm::LocalHub hub(3);
  Wires wires;
  auto model = Model::load(testing::hf_model_dir("opt-tiny"));
  std::vector<std::future<void>> others;
  for (int r : {0, 2})
    others.push_back(std::async(std::launch::async, [&, r] {
      auto t = hub.endpoint(r);
      auto be = kernels::make_cpu_backend();
      FakeConnector c(wires, "device " + std::to_string(r));
      comm::StageLinks links = comm::StageLinks::connect(*t, *be, &c, "", DType::F32, comm::LinkMode::Auto, 10s);
      if (r == 2) t->abort("out of GPU memory in layer 3");
      if (r == 0) {
        EXPECT_THROW(t->recv(1, 10s), PeerError);  // rank 2's report
      }
    }));
  auto t = hub.endpoint(1);
  auto be = kernels::make_cpu_backend();
  const auto spans = comm::stage_spans(model->spec().num_layers, 3);
  Stage stage(*model, *be, spans[1].begin, spans[1].end);
  FakeConnector c(wires, "device 1");
  comm::StageLinks links = comm::StageLinks::connect(*t, *be, &c, "", DType::F32, comm::LinkMode::Auto, 10s);
  std::vector<GpuBatch> batches = one_batch({5, 6});
  comm::StageClock clock;
  const auto start = Clock::now();
  EXPECT_THROW_WITH(links.recv(*t, stage, DType::F32, batches, batches, clock, 20s), PeerError,
                    "rank 2 (this process) stopped: out of GPU memory in layer 3");
  EXPECT_LT(Clock::now() - start, 10s);
  for (auto& f : others) f.get();
}

// --stage-link nccl where a rank has no device links: the same error on every rank, before any
// link is joined.
TEST(StageLinks, DeviceModeWithoutLinksIsAnErrorOnEveryRank) {
  comm::LocalHub hub(2);
  Wires wires;
  std::vector<std::future<std::string>> ranks;
  for (int r = 0; r < 2; ++r)
    ranks.push_back(std::async(std::launch::async, [&, r]() -> std::string {
      auto t = hub.endpoint(r);
      auto be = kernels::make_cpu_backend();
      FakeConnector c(wires, "device " + std::to_string(r));
      try {
        comm::StageLinks::connect(*t, *be, r == 1 ? nullptr : &c, "cpu moves tensors through host memory", DType::F32,
                                  comm::LinkMode::Device, 10s);
      } catch (const InvalidArgumentError& e) {
        return e.what();
      }
      return "connected";
    }));
  for (auto& f : ranks)
    EXPECT_EQ(f.get(),
              "--stage-link nccl: the hidden states rank 0 (this process) -> rank 1 (this process) cannot go over "
              "NCCL: rank 1 (this process): cpu moves tensors through host memory");
  EXPECT_EQ(wires.total_sent(), 0);
}

// Every link is up after two rounds of connections however long the pipeline: connect() orders
// its probes odd-even. (Each rank bringing up its next link first would chain them: rank 0's link
// would wait for every link after it, 7 connections here, past the deadline of 4.)
TEST(StageLinks, LinksComeUpInTwoRoundsHoweverLongThePipeline) {
  constexpr int kRanks = 8;
  comm::LocalHub hub(kRanks);
  Wires wires;
  wires.connect_time = 200ms;
  const auto start = Clock::now();
  std::vector<std::future<void>> ranks;
  for (int r = 0; r < kRanks; ++r)
    ranks.push_back(std::async(std::launch::async, [&, r] {
      auto t = hub.endpoint(r);
      auto be = kernels::make_cpu_backend();
      FakeConnector c(wires, "device " + std::to_string(r));
      comm::StageLinks::connect(*t, *be, &c, "", DType::F32, comm::LinkMode::Device, 800ms);
    }));
  for (auto& f : ranks) EXPECT_NO_THROW(f.get());
  EXPECT_LT(Clock::now() - start, 1200ms);
  EXPECT_EQ(wires.total_sent(), kRanks - 1);  // one probe over each link
}

}  // namespace
}  // namespace tiergen
