// `mpirun -np N tiergen generate`: CPU ranks on this machine (oversubscribed where N exceeds its
// cores). Every reference model and the demo model give exactly the single-process tokens, greedy and
// sampled, for several micro-batch counts and uneven layer splits; a rank stopped (SIGSTOP) or killed
// (SIGKILL) mid-run ends the whole job within a bounded time with the failing rank named; bad
// pipeline configurations are one clear error on every rank, before any weight is loaded.
#include <unistd.h>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <map>
#include <thread>

#include <nlohmann/json.hpp>

#include "comm/mpi_transport.h"
#include "tests/testutil/cli.h"
#include "tests/testutil/hf_reference.h"

namespace tiergen::testing {
namespace {

using namespace std::chrono_literals;

bool have_mpirun() { return comm::have_mpi() && std::system("command -v mpirun >/dev/null 2>&1") == 0; }

// mpirun for N ranks on this machine: as root too (CI containers), more ranks than cores, and
// without the single-copy shared-memory path that containers often forbid.
CliLimits mpirun(int n) {
  CliLimits l;
  l.launcher =
      "env OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl_vader_single_copy_mechanism=none"
      " mpirun --oversubscribe -np " +
      std::to_string(n);
  return l;
}

#define REQUIRE_MPIRUN() \
  if (!have_mpirun()) GTEST_SKIP() << "no MPI in this build or no mpirun on PATH"

struct Case {
  std::string model;
  std::string prompts;  // generate's prompt flags
};

std::vector<Case> cases() {
  std::vector<Case> out;
  for (const std::string& m : hf_reference_models()) {
    const auto ref = load_hf_reference(m);
    std::string flags;
    for (const HfCase& c : ref.cases) {
      std::string ids;
      for (int32_t id : c.ids) ids.append(ids.empty() ? "" : ",").append(std::to_string(id));
      flags.append(" --input-ids ").append(ids);
    }
    out.push_back({ref.dir.string(), flags});
  }
  out.push_back({demo_model(), " 'A fool' 'Q: What is the meaning of life?' 'You' 'The'"});
  return out;
}

int64_t decoder_layers(const std::string& dir) {
  return load_model_config(std::filesystem::path(dir) / "config.json").num_layers;
}

TEST(CliPipeline, EveryModelGivesTheSingleProcessTokens) {
  REQUIRE_MPIRUN();
  for (const Case& c : cases()) {
    const int64_t L = decoder_layers(c.model);
    for (const std::string mode : {" --greedy", " --sample --seed 11 --top-k 40"}) {
      const std::string args = "generate --model " + c.model + c.prompts + " -n 10 --ignore-eos --json" + mode;
      const CliRun alone = run_tiergen(args + " -b 2");
      ASSERT_EQ(alone.status, 0) << alone.err;
      struct Shape {
        int np;
        std::string flags;
      };
      std::vector<Shape> shapes = {{2, " -b 1"},
                                   {2, " -b 2 --micro-batches 1 --stage-layers " + std::to_string(L - 1)},
                                   {3, " -b 1 --micro-batches 4"}};
      if (L >= 4) shapes.push_back({4, " -b 1 --stage-layers 1,2," + std::to_string(L - 1)});
      for (const Shape& s : shapes) {
        if (s.np > L) continue;
        const CliRun piped = run_tiergen(args + s.flags + " --threads 1", "", mpirun(s.np));
        ASSERT_EQ(piped.status, 0) << piped.err;
        EXPECT_EQ(piped.out, alone.out) << c.model << mode << ", " << s.np << " ranks," << s.flags;
      }
    }
  }
}

// A long run of three ranks: the demo model, many tokens, one sequence per block.
const char* kLongRun =
    "generate --model %s -n 400 --ignore-eos -b 1 A B C D E F G H --threads 1 --comm-timeout 3s --load-timeout 20s";

std::string long_run() {
  char buf[512];
  std::snprintf(buf, sizeof buf, kLongRun, demo_model().c_str());
  return buf;
}

// A rank that stops answering (SIGSTOP: alive, silent) ends every other rank's wait at the
// deadline; the job ends non-zero, naming the rank and host waited for.
TEST(CliPipeline, StoppedRankEndsTheJobNamingIt) {
  REQUIRE_MPIRUN();
  TiergenProcess p(long_run(), "", mpirun(3));
  const pid_t r1 = mpi_rank_pid(p.pid(), 1);
  ASSERT_GT(r1, 0) << "rank 1 never started";
  std::this_thread::sleep_for(700ms);  // into the run
  ::kill(r1, SIGSTOP);
  const CliRun r = p.wait(60s);
  ::kill(r1, SIGKILL);  // if mpirun left it stopped
  EXPECT_NE(r.status, 0);
  EXPECT_LT(r.seconds, 30.0);
  EXPECT_NE(r.err.find("no message from rank 1 (host " + host_name() + ") within 3 s"), std::string::npos) << r.err;
}

// A rank killed outright: mpirun ends the job, naming the rank, within a bounded time.
TEST(CliPipeline, KilledRankEndsTheJobNamingIt) {
  REQUIRE_MPIRUN();
  TiergenProcess p(long_run(), "", mpirun(3));
  const pid_t r1 = mpi_rank_pid(p.pid(), 1);
  ASSERT_GT(r1, 0) << "rank 1 never started";
  std::this_thread::sleep_for(700ms);
  ::kill(r1, SIGKILL);
  const CliRun r = p.wait(60s);
  EXPECT_NE(r.status, 0);
  EXPECT_LT(r.seconds, 30.0);
  EXPECT_NE(r.err.find("rank 1"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("signal 9"), std::string::npos) << r.err;
}

// Bad configurations: one clear error, printed by every rank, before anything is loaded.
TEST(CliPipeline, BadConfigurationsAreOneErrorOnEveryRank) {
  REQUIRE_MPIRUN();
  const std::string model = " --model " + hf_model_dir("opt-tiny").string() + " --input-ids 5,6,7 -n 4";
  auto every_rank = [](const CliRun& r, const std::string& what, int n) {
    size_t count = 0;
    for (size_t at = r.err.find(what); at != std::string::npos; at = r.err.find(what, at + 1)) ++count;
    EXPECT_EQ(count, static_cast<size_t>(n)) << r.err;
  };
  CliRun r = run_tiergen("generate" + model, "", mpirun(4));  // opt-tiny has 3 decoder layers
  EXPECT_EQ(r.status, 2) << r.err;
  every_rank(r, "a pipeline of 4 stages for a model of 3 decoder layers: each stage needs at least one layer", 4);
  r = run_tiergen("generate" + model + " --stage-layers 2,1", "", mpirun(3));
  EXPECT_EQ(r.status, 2) << r.err;
  every_rank(r, "stage boundaries must increase", 3);
  r = run_tiergen("generate" + model + " --stage-layers 1,2", "", mpirun(2));
  every_rank(r, "2 stages need 1 first layers", 2);
  // A budget that does not fit: every rank checks its own plan, and every rank says which failed.
  r = run_tiergen("generate" + model + " --cpu-mem 1KB", "", mpirun(2));
  EXPECT_EQ(r.status, 3) << r.err;
  every_rank(r, "rank 0 (host " + host_name() + "): ", 2);
  EXPECT_EQ(r.err.find("loaded"), std::string::npos) << r.err;
  r = run_tiergen("generate" + model + " --comm-timeout 0s", "", mpirun(2));
  EXPECT_EQ(r.status, 2) << r.err;
  every_rank(r, "--comm-timeout: '0s' is not a duration", 2);
  // Hidden states over NCCL between CPU ranks: refused on every rank, naming the pair, before any
  // weight is loaded.
  r = run_tiergen("generate" + model + " --stage-link nccl", "", mpirun(2));
  EXPECT_EQ(r.status, 2) << r.err;
  every_rank(r,
             "--stage-link nccl: the hidden states rank 0 (host " + host_name() + ") -> rank 1 (host " + host_name() +
                 ") cannot go over NCCL: rank 0 (host " + host_name() + "): cpu",
             2);
  EXPECT_EQ(r.err.find("loaded"), std::string::npos) << r.err;
  r = run_tiergen("generate" + model + " --stage-link mpi", "", mpirun(2));
  EXPECT_EQ(r.status, 2) << r.err;
  every_rank(r, "--stage-link must be auto, host or nccl, got 'mpi'", 2);
}

// bench over a pipeline: rank 0 reports every run once, counting all the blocks in flight.
TEST(CliPipeline, BenchRunsOverAPipeline) {
  REQUIRE_MPIRUN();
  const CliRun r = run_tiergen("bench --dummy opt-125m --batch-size 2 --prompt-len 16 --gen-len 4 --threads 1 --json",
                               "", mpirun(2));
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("pipeline: 2 stages, 2 blocks in flight; this is stage 0 of 2"), std::string::npos) << r.out;
  size_t runs = 0;
  for (size_t at = r.out.find("total throughput:"); at != std::string::npos;
       at = r.out.find("total throughput:", at + 1))
    ++runs;
  EXPECT_EQ(runs, 1u) << r.out;
  // 2 blocks of 2 sequences, 4 tokens each: 4 x 3 decode tokens.
  EXPECT_NE(r.out.find("\"batch_size\":2"), std::string::npos) << r.out;
  // The bound of a pipeline: its slowest stage's pace, each stage measuring its own rates.
  EXPECT_NE(r.out.find("roofline bound (the slowest stage's pace): total "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\"roofline_total_tokens_per_s\":"), std::string::npos) << r.out;
  // Each stage's busy and idle time over the timed run.
  EXPECT_NE(r.out.find("pipeline stages (their time over the run):\nstage 0, rank 0 (host "), std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("stage 1, rank 1 (host "), std::string::npos) << r.out;
}

// Stages with their own offloading policies (weights on disk, KV cache split over host memory and
// disk) give the single-process tokens; each reports its times, and --trace writes one trace per
// rank and a merged one with a process per rank.
TEST(CliPipeline, OffloadedStagesTimesAndAMergedTrace) {
  REQUIRE_MPIRUN();
  TempDir tmp;
  write_file(tmp / "off.yaml",
             "stages:\n  - device: cpu\n    threads: 1\n"
             "  - device: cpu\n    percent: [0, 0, 100, 0, 100, 0]\n    threads: 1\n"
             "  - device: cpu\n    percent: [0, 50, 0, 50, 100, 0]\n    threads: 1\n");
  const std::string args = "generate --model " + demo_model() + " 'A fool' 'You' -n 8 --ignore-eos --json -b 1";
  const CliRun alone = run_tiergen(args);
  ASSERT_EQ(alone.status, 0) << alone.err;
  const std::string trace = (tmp / "run.json").string();
  const CliRun r = run_tiergen(args + " --cluster-config " + (tmp / "off.yaml").string() + " --offload-dir " +
                                   tmp.path().string() + " --trace " + trace,
                               "", mpirun(3));
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, alone.out);
  for (int s = 0; s < 3; ++s)
    EXPECT_NE(r.err.find("stage " + std::to_string(s) + ", rank " + std::to_string(s) + " (host " + host_name() +
                         "): computing "),
              std::string::npos)
        << r.err;
  for (int s = 0; s < 3; ++s) EXPECT_TRUE(std::filesystem::exists(tmp / ("run.rank" + std::to_string(s) + ".json")));
  const nlohmann::json merged = nlohmann::json::parse(read_file(trace)).at("traceEvents");
  std::map<int, std::string> names;
  std::map<int, std::map<int, std::string>> tracks;
  for (const auto& e : merged)
    if (e.at("ph") == "M" && e.at("name") == "process_name")
      names[e.at("pid").get<int>()] = e.at("args").at("name").get<std::string>();
    else if (e.at("ph") == "M")
      tracks[e.at("pid").get<int>()][e.at("tid").get<int>()] = e.at("args").at("name").get<std::string>();
  std::map<int, std::map<std::string, int>> spans;
  for (const auto& e : merged)
    if (e.at("ph") == "X") spans[e.at("pid").get<int>()][tracks[e.at("pid").get<int>()][e.at("tid").get<int>()]]++;
  ASSERT_EQ(names.size(), 3u) << r.err;
  for (int s = 0; s < 3; ++s) {
    EXPECT_EQ(names[s].rfind("stage " + std::to_string(s) + ", rank " + std::to_string(s), 0), 0u) << names[s];
    EXPECT_GE(spans[s]["steps"], 8) << s;  // a prefill and decode steps for each of two blocks
  }
  EXPECT_GT(spans[1]["disk I/O"], 0);  // its weights stream from disk
  EXPECT_EQ(spans[0]["disk I/O"], 0);
}

// Each stage cuts rank 0's blocks into GPU batches of its own size (gpu_batch_size in the cluster
// config; stage 0's also sizes the blocks): the tokens are the single process's.
TEST(CliPipeline, StagesCutBlocksIntoTheirOwnGpuBatches) {
  REQUIRE_MPIRUN();
  TempDir tmp;
  write_file(tmp / "cuts.yaml",
             "stages:\n  - device: cpu\n    threads: 1\n    gpu_batch_size: 3\n"
             "  - device: cpu\n    threads: 1\n    gpu_batch_size: 1\n"
             "  - device: cpu\n    threads: 1\n    gpu_batch_size: 2\n    percent: [0, 50, 0, 50, 100, 0]\n");
  const std::string args =
      "generate --model " + demo_model() + " 'A fool' 'You' 'The' 'Q: What is' -n 6 --ignore-eos --json";
  const CliRun alone = run_tiergen(args + " -b 3");
  ASSERT_EQ(alone.status, 0) << alone.err;
  const CliRun r =
      run_tiergen(args + " --cluster-config " + (tmp / "cuts.yaml").string() + " --offload-dir " + tmp.path().string(),
                  "", mpirun(3));
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, alone.out);
}

// --cluster-config: the ready CPU files run and give the single-process tokens; the GPU ones parse
// (on a machine without a GPU every rank then says so, exit status 4, not a config error).
TEST(CliPipeline, ReadyClusterConfigs) {
  REQUIRE_MPIRUN();
  const std::string dir = (source_dir() / "cluster-configs").string();
  const std::string args = "generate --model " + demo_model() + " 'A fool' 'You' -n 8 --ignore-eos --json";
  const CliRun alone = run_tiergen(args);
  ASSERT_EQ(alone.status, 0) << alone.err;
  for (const char* f : {"cpu-2.yaml", "cpu-uneven.yaml"}) {
    const CliRun r = run_tiergen(args + " -b 1 --cluster-config " + dir + "/" + f, "", mpirun(2));
    ASSERT_EQ(r.status, 0) << f << ": " << r.err;
    EXPECT_EQ(r.out, alone.out) << f;
  }
  for (auto [f, n] : {std::pair{"gpu-1.yaml", 1},
                      {"gpu-2.yaml", 2},
                      {"gpu-4.yaml", 4},
                      {"nodes-2x1.yaml", 2},
                      {"heterogeneous-2.yaml", 2}}) {
    // The heterogeneous file cuts OPT-66B's 64 layers: checked on its shape (loading never starts).
    const std::string model_args =
        std::string(f) == "heterogeneous-2.yaml" ? "generate --dummy opt-66b --input-ids 1,2,3 -n 2" : args;
    const CliRun r = run_tiergen(model_args + " --cluster-config " + dir + "/" + f, "", mpirun(n));
    if (r.status == 0) continue;  // a machine with GPUs
    EXPECT_EQ(r.status, 4) << f << ": " << r.err;
    EXPECT_EQ(r.err.find(std::string(f) + ":"), std::string::npos) << f << ": " << r.err;
  }
}

TEST(CliPipeline, BadClusterConfigs) {
  REQUIRE_MPIRUN();
  TempDir tmp;
  const std::string args = "generate --model " + demo_model() + " A -n 2 --cluster-config ";
  auto with = [&](const std::string& name, const std::string& yaml, int n) {
    write_file(tmp / name, yaml);
    return run_tiergen(args + (tmp / name).string(), "", mpirun(n));
  };
  CliRun r = with("three.yaml", "stages:\n  - device: cpu\n  - device: cpu\n  - device: cpu\n", 2);
  EXPECT_EQ(r.status, 2) << r.err;
  EXPECT_NE(r.err.find("describes 3 stages, but mpirun started 2 ranks: start it with mpirun -np 3"), std::string::npos)
      << r.err;
  r = with("typo.yaml", "stages:\n  - device: cpu\n    gpu_memory: 24GiB\n  - device: cpu\n", 2);
  EXPECT_EQ(r.status, 1) << r.err;
  EXPECT_NE(r.err.find("typo.yaml:3: unknown key 'gpu_memory' in a stage"), std::string::npos) << r.err;
  r = with("bad.yaml", "stages: [device: cpu\n", 2);
  EXPECT_EQ(r.status, 1) << r.err;
  EXPECT_NE(r.err.find("bad.yaml:"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("not YAML"), std::string::npos) << r.err;
  r = with("half.yaml", "stages:\n  - device: cpu\n  - device: cpu\n    first_layer: 2\n  - device: cpu\n", 3);
  EXPECT_EQ(r.status, 1) << r.err;
  EXPECT_NE(r.err.find("first_layer is given for 1 of the 2 stages after the first"), std::string::npos) << r.err;
  r = with("cut.yaml", "stages:\n  - device: cpu\n  - device: cpu\n    gpu_batch_size: 0\n", 2);
  EXPECT_EQ(r.status, 1) << r.err;
  EXPECT_NE(r.err.find("cut.yaml:4: gpu_batch_size must be 1 to 1048576"), std::string::npos) << r.err;
  r = with("size.yaml", "stages:\n  - device: cpu\n    cpu_mem: lots\n  - device: cpu\n", 2);
  EXPECT_EQ(r.status, 2) << r.err;
  EXPECT_NE(r.err.find("size.yaml:3: cpu_mem: 'lots' is not a size"), std::string::npos) << r.err;
  // One stage's budget too small: every rank stops before loading, naming rank 1.
  r = with("small.yaml", "stages:\n  - device: cpu\n  - device: cpu\n    cpu_mem: 1KB\n", 2);
  EXPECT_EQ(r.status, 3) << r.err;
  size_t named = 0;
  for (size_t at = r.err.find("rank 1 (host "); at != std::string::npos; at = r.err.find("rank 1 (host ", at + 1))
    ++named;
  EXPECT_EQ(named, 2u) << r.err;
  r = run_tiergen(args + (tmp / "missing.yaml").string(), "", mpirun(2));
  EXPECT_EQ(r.status, 1) << r.err;
  EXPECT_NE(r.err.find("does not exist"), std::string::npos) << r.err;
}

// Stages that differ and give no cuts share the layers by their estimated cost, each within what
// its budget holds: here stage 0's budget holds at most 3 of OPT-125M's 12 layers (F16 dummy
// weights: 79 MB of tables and 14 MB a layer), so it takes at most 3 whatever the rates say.
TEST(CliPipeline, UnequalStagesAreBalancedWithinTheirBudgets) {
  REQUIRE_MPIRUN();
  TempDir tmp;
  write_file(tmp / "bal.yaml",
             "stages:\n  - device: cpu\n    cpu_mem: 120MiB\n    threads: 1\n"
             "  - device: cpu\n    cpu_mem: 4GiB\n    threads: 1\n");
  const std::string args = "generate --dummy opt-125m --input-ids 1,2,3 --input-ids 5,6 -n 4 --json";
  const CliRun alone = run_tiergen(args);
  ASSERT_EQ(alone.status, 0) << alone.err;
  const CliRun r = run_tiergen(args + " --cluster-config " + (tmp / "bal.yaml").string(), "", mpirun(2));
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, alone.out);
  const std::string note = "layers balanced by each stage's estimated decode step: stage 0: ";
  const size_t at = r.err.find(note);
  ASSERT_NE(at, std::string::npos) << r.err;
  const int first = std::stoi(r.err.substr(at + note.size()));
  EXPECT_GE(first, 1) << r.err;
  EXPECT_LE(first, 3) << r.err;
  EXPECT_NE(r.err.find("stage 1: " + std::to_string(12 - first) + " layers"), std::string::npos) << r.err;
  // Equal stages keep the equal split and print nothing about it.
  const CliRun equal = run_tiergen(args, "", mpirun(2));
  ASSERT_EQ(equal.status, 0) << equal.err;
  EXPECT_EQ(equal.err.find("balanced"), std::string::npos) << equal.err;
}

// `mpirun -np N tiergen plan`: every stage's layers and memory plan, its own policy and budgets,
// the layers balanced as a run would; a stage that does not fit is marked and is everyone's error;
// GPU stages on a machine without their GPUs are planned against their budgets, equal shares.
TEST(CliPipeline, PlanShowsEveryStage) {
  REQUIRE_MPIRUN();
  TempDir tmp;
  write_file(tmp / "off.yaml",
             "stages:\n  - device: cpu\n    cpu_mem: 120MiB\n    threads: 1\n"
             "  - device: cpu\n    percent: [0, 0, 100, 0, 100, 0]\n    threads: 1\n"
             "  - device: cpu\n    threads: 1\n");
  const std::string args = "plan --dummy opt-125m --prompt-len 16 --gen-len 4 -b 2 --offload-dir " +
                           tmp.path().string() + " --cluster-config ";
  CliRun r = run_tiergen(args + (tmp / "off.yaml").string(), "", mpirun(3));
  ASSERT_EQ(r.status, 0) << r.err;
  for (const char* part :
       {"pipeline: 3 stages\nlayers balanced by each stage's estimated decode step: stage 0: ",
        "stage 0 of 3 (rank 0 (host ", "stage 1 of 3 (rank 1 (host ", "stage 2 of 3 (rank 2 (host ",
        "policy: weights 0/0/100", "weights on disk", "3 blocks in flight", "fits: yes, every stage"})
    EXPECT_NE(r.out.find(part), std::string::npos) << part << " in\n" << r.out;
  // Stage 0's 120 MiB hold at most 3 of the 12 layers.
  const size_t at = r.out.find("stage 0 of 3 (rank 0 (host ");
  ASSERT_NE(at, std::string::npos);
  const std::string line = r.out.substr(at, r.out.find('\n', at) - at);
  EXPECT_TRUE(line.find("decoder layers 0-1,") != std::string::npos ||
              line.find("decoder layers 0-2,") != std::string::npos ||
              line.find("decoder layer 0,") != std::string::npos)
      << line;

  write_file(tmp / "small.yaml", "stages:\n  - device: cpu\n  - device: cpu\n    cpu_mem: 1MB\n    first_layer: 6\n");
  r = run_tiergen(args + (tmp / "small.yaml").string(), "", mpirun(2));
  EXPECT_EQ(r.status, 3) << r.err;
  EXPECT_NE(r.out.find("of 1.00 MB (the --cpu-mem budget): DOES NOT FIT"), std::string::npos) << r.out;
  EXPECT_NE(r.err.find("rank 1 (host "), std::string::npos) << r.err;
  EXPECT_EQ(r.out.find("fits: yes"), std::string::npos) << r.out;

  r = run_tiergen(
      "plan --dummy opt-30b --percent 25 75 0 100 100 0 --cpu-cache-compute -b 8 --cpu-mem 100GiB "
      "--cluster-config " +
          (source_dir() / "cluster-configs" / "gpu-2.yaml").string(),
      "", mpirun(2));
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("stage 1 of 2 (rank 1 (host " + host_name() + ")): decoder layers 24-47, the head"),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("GPU memory: 11.6 GB of 25.8 GB (the --gpu-mem budget)"), std::string::npos) << r.out;
}

TEST(CliPipeline, StageLayersNeedSeveralRanks) {
  const CliRun r = run_tiergen("generate --model " + demo_model() + " A --stage-layers 3");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.err.find("--stage-layers cuts a pipeline of several ranks: start it with mpirun -np N"),
            std::string::npos)
      << r.err;
}

}  // namespace
}  // namespace tiergen::testing
