// The `tiergen` executable end to end: outputs a tool can parse, and bad input ending in one clear
// error line with a non-zero exit (never a crash or a stack dump).
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "tests/testutil/cli.h"
#include "tests/testutil/testutil.h"

namespace tiergen {
namespace {

using testing::CliRun;
CliRun tiergen(const std::string& args, const std::string& input = "") { return testing::run_tiergen(args, input); }
std::string model() { return testing::demo_model(); }

// Exactly one line on stderr, starting "tiergen: error:" and containing `what`.
void expect_one_error_line(const CliRun& r, int status, const std::string& what) {
  EXPECT_EQ(r.status, status) << r.err;
  ASSERT_FALSE(r.err.empty());
  EXPECT_EQ(r.err.rfind("tiergen: error: ", 0), 0u) << r.err;
  EXPECT_EQ(r.err.find('\n'), r.err.size() - 1) << "more than one line: " << r.err;
  EXPECT_NE(r.err.find(what), std::string::npos) << r.err;
}

TEST(Cli, GenerateJsonHasIdsAndText) {
  const CliRun r = tiergen("generate --model " + model() + " --json --greedy -n 5 'Hello' 'A fool'");
  ASSERT_EQ(r.status, 0) << r.err;
  std::istringstream lines(r.out);
  std::string line;
  int n = 0;
  while (std::getline(lines, line)) {
    const auto j = nlohmann::json::parse(line);
    EXPECT_EQ(j.at("index").get<int>(), n);
    EXPECT_EQ(j.at("input_ids").at(0).get<int>(), 0);  // the post-processor's <|begin_of_text|>
    EXPECT_EQ(j.at("output_ids").size(), 5u);
    EXPECT_TRUE(j.at("text").is_string());
    EXPECT_EQ(j.at("finish_reason"), "length");
    ++n;
  }
  EXPECT_EQ(n, 2);
}

TEST(Cli, InputIdsStdinAndPromptFileAgree) {
  const CliRun ids = tiergen("generate --model " + model() + " --json --greedy -n 6 --input-ids 0,41,471,80");
  const CliRun text = tiergen("generate --model " + model() + " --json --greedy -n 6 Hello");
  const CliRun in = tiergen("generate --model " + model() + " --json --greedy -n 6", "Hello\n");
  testing::TempDir tmp;
  testing::write_file(tmp / "p.txt", "Hello\n");
  const CliRun file =
      tiergen("generate --model " + model() + " --json --greedy -n 6 --prompt-file " + (tmp / "p.txt").string());
  for (const CliRun* r : {&ids, &text, &in, &file}) ASSERT_EQ(r->status, 0) << r->err;
  const auto out_ids = nlohmann::json::parse(ids.out).at("output_ids");
  EXPECT_EQ(nlohmann::json::parse(text.out).at("input_ids"), nlohmann::json::parse(ids.out).at("input_ids"));
  EXPECT_EQ(nlohmann::json::parse(text.out).at("output_ids"), out_ids);
  EXPECT_EQ(nlohmann::json::parse(in.out).at("output_ids"), out_ids);
  EXPECT_EQ(nlohmann::json::parse(file.out).at("output_ids"), out_ids);
}

TEST(Cli, RepeatedFlagsTakeOneValueEach) {
  // --input-ids and --stop take one value per occurrence: a prompt after them stays a prompt.
  const CliRun r = tiergen("generate --model " + model() +
                           " --json --greedy -n 2 --input-ids 0,41 --stop zz --stop yy "
                           "--input-ids 0,42 Hello");
  ASSERT_EQ(r.status, 0) << r.err;
  std::istringstream lines(r.out);
  std::string line;
  std::vector<nlohmann::json> rows;
  while (std::getline(lines, line)) rows.push_back(nlohmann::json::parse(line));
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[0].at("prompt"), "Hello");  // text prompts first, then token-id prompts
  EXPECT_EQ(rows[1].at("input_ids"), nlohmann::json::parse("[0, 41]"));
  EXPECT_EQ(rows[2].at("input_ids"), nlohmann::json::parse("[0, 42]"));
}

TEST(Cli, TokenizeAndDetokenizeRoundTrip) {
  const CliRun t = tiergen("tokenize --model " + model() + " 'Hello world'");
  ASSERT_EQ(t.status, 0) << t.err;
  const auto ids = nlohmann::json::parse(t.out);
  ASSERT_FALSE(ids.empty());
  std::string list;
  for (const auto& id : ids) {  // appended piecewise: `"," + to_string(...)` trips GCC 12's bogus -Wrestrict
    if (!list.empty()) list += ',';
    list += std::to_string(id.get<int>());
  }
  // tokenize adds the BOS token (as generate does); detokenize shows it unless told to skip it.
  const CliRun d = tiergen("detokenize --model " + model() + " " + list);
  ASSERT_EQ(d.status, 0) << d.err;
  EXPECT_EQ(d.out, "<|begin_of_text|>Hello world\n");
  const CliRun skip = tiergen("detokenize --skip-special-tokens --model " + model() + " " + list);
  ASSERT_EQ(skip.status, 0) << skip.err;
  EXPECT_EQ(skip.out, "Hello world\n");
}

TEST(Cli, InfoDescribesTheModel) {
  const CliRun r = tiergen("info --json --model " + model());
  ASSERT_EQ(r.status, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j.at("family"), "llama");
  EXPECT_EQ(j.at("layers"), 6);
  EXPECT_EQ(j.at("parameters"), 5475584);
}

TEST(Cli, BenchPrintsFlexGenLinesAndJson) {
  const CliRun r = tiergen("bench --device cpu --dummy opt-125m --batch-size 1,2 --prompt-len 8 --gen-len 3 --json");
  ASSERT_EQ(r.status, 0) << r.err;
  for (const char* line :
       {"model size:", "peak cpu mem:", "prefill latency:", "decode throughput:", "total throughput:"})
    EXPECT_NE(r.out.find(line), std::string::npos) << line;
  std::istringstream lines(r.out);
  std::string line;
  std::vector<int> batches;
  while (std::getline(lines, line))
    if (!line.empty() && line[0] == '{') {
      const auto j = nlohmann::json::parse(line);
      batches.push_back(j.at("batch_size").get<int>());
      EXPECT_GT(j.at("total_tokens_per_s").get<double>(), 0.0);
      // The bound is at least what was measured (within the noise of timing a tiny run).
      EXPECT_GT(j.at("roofline_total_tokens_per_s").get<double>(), 0.5 * j.at("total_tokens_per_s").get<double>());
      EXPECT_GT(j.at("gemm_flops_per_s").get<double>(), 0.0);
      EXPECT_GT(j.at("read_bytes_per_s").get<double>(), 0.0);
      // The process's own peak: at least OPT-125M's weights, at most what the OS saw it hold.
      const auto peak = j.at("peak_cpu_bytes").get<uint64_t>();
      EXPECT_GT(peak, uint64_t{125000000} * 2);
      EXPECT_LE(peak, static_cast<uint64_t>(r.max_rss_kb) * 1024);
    }
  EXPECT_EQ(batches, (std::vector<int>{1, 2}));
  EXPECT_NE(r.out.find("roofline rates: GEMM"), std::string::npos);
  EXPECT_NE(r.out.find("measured / bound: total"), std::string::npos);
  expect_one_error_line(tiergen("bench --dummy opt-125m --prompt-len 2047 --gen-len 4"), 2, "context of 2048 tokens");
  expect_one_error_line(tiergen("bench --device cuda --dummy opt-125m"), 4, "CUDA");
}

TEST(Cli, BadUsageIsOneLineExit2) {
  expect_one_error_line(tiergen("generate --bogus"), 2, "--bogus");
  expect_one_error_line(tiergen("frobnicate"), 2, "frobnicate");
  expect_one_error_line(tiergen("generate --model " + model() + " --top-p 2 --sample x"), 2, "top-p");
  expect_one_error_line(tiergen("generate --model " + model() + " --max-new-tokens -3 x"), 2, "max-new-tokens");
  expect_one_error_line(tiergen("generate --model " + model() + " --input-ids 1,x,3"), 2, "'x' is not a token id");
  expect_one_error_line(tiergen("generate --model " + model() + " --input-ids 99999"), 2,
                        "outside the model's vocabulary");
  expect_one_error_line(tiergen("generate --model " + model() + " --greedy --sample x"), 2, "excludes");
  expect_one_error_line(tiergen("generate x"), 2, "--model DIR or --dummy PRESET");
  expect_one_error_line(tiergen("info --dummy gpt-9"), 2, "gpt-9");
  expect_one_error_line(tiergen("generate --model " + model() + ""), 2, "no prompts");
}

TEST(Cli, BadModelsAreOneLineExit1) {
  expect_one_error_line(tiergen("generate --model /nonexistent/model x"), 1, "/nonexistent/model");
  testing::TempDir dir;
  testing::write_file(dir / "config.json", "{\"model_type\": \"llama\"");
  expect_one_error_line(tiergen("info --model " + dir.path().string()), 1, "config.json");
  testing::write_file(dir / "config.json", testing::read_file(std::filesystem::path(model()) / "config.json"));
  expect_one_error_line(tiergen("info --model " + dir.path().string()), 1, "model.safetensors");
  testing::write_file(dir / "model.safetensors", "garbage");
  expect_one_error_line(tiergen("info --model " + dir.path().string()), 1, "model.safetensors");
  expect_one_error_line(tiergen("tokenize --model " + dir.path().string() + " hi"), 1, "tokenizer.json");
  expect_one_error_line(tiergen("generate --model " + model() + " --prompt-file /nonexistent/prompts.txt"), 1,
                        "/nonexistent/prompts.txt");
}

}  // namespace
}  // namespace tiergen

namespace tiergen {
namespace {

// Weights and KV cache on disk (all, or split within tensors), in GPU batches, overlap on and off:
// the tokens of the run with everything in memory, and nothing left in the offload folder afterwards.
TEST(Cli, GenerateWithWeightsOnDiskGivesTheSameTokens) {
  const std::string base = "generate --model " + model() + " --json --greedy -n 6 ";
  const std::string prompts = "'A fool' Hello 'To be' 'The king'";
  const CliRun ref = tiergen(base + prompts);
  ASSERT_EQ(ref.status, 0) << ref.err;
  testing::TempDir dir;
  for (const std::string& placement :
       {"0 0 100 0 100 0", "20 15 100 0 100 0", "0 40 0 100 100 0", "100 0 0 0 100 0 --gpu-batch-size 1",
        "30 0 20 10 100 0 --gpu-batch-size 2 --num-gpu-batches 2", "100 0 100 0 100 0 --num-gpu-batches 3"})
    for (const std::string& overlap : {"", "--no-overlap "}) {
      const CliRun r =
          tiergen(base + "--percent " + placement + " --offload-dir " + dir.path().string() + " " + overlap + prompts);
      ASSERT_EQ(r.status, 0) << placement << ": " << r.err;
      EXPECT_EQ(r.out, ref.out) << placement << " " << overlap;
      EXPECT_TRUE(std::filesystem::is_empty(dir.path())) << "an offload folder outlived the run";
    }
}

// `tiergen plan` prints the run's memory per tier against the budgets, loading nothing: OPT-30B
// with FlexGen's 24 GB policy (20% of the decoder layers on the GPU, KV cache on the CPU, two GPU
// batches of 32). A budget the plan exceeds is marked in the table and is the command's error.
TEST(Cli, PlanShowsEachTierAgainstItsBudget) {
  const std::string base =
      "plan --dummy opt-30b --device cuda --percent 20 80 0 100 100 0 --cpu-cache-compute --gpu-batch-size 32 "
      "--num-gpu-batches 2 --cpu-mem 120GiB ";
  const CliRun fits = tiergen(base + "--gpu-mem 24GiB");
  ASSERT_EQ(fits.status, 0) << fits.err;
  // 64 sequences x 544 tokens x 2 (K, V) x 48 layers x 7168 x 2 bytes = 47.9 GB of KV cache.
  for (const char* part : {"block: 64 sequences (2 GPU batches of 32), 512 prompt + 32 new tokens each",
                           "of 25.8 GB (the --gpu-mem budget)", "host memory: 97.8 GB of 129 GB (the --cpu-mem budget)",
                           "weights in host memory (pinned)", "47.9 GB  100% of 64 sequences x 544 tokens x 1.38 MB",
                           "weight buffers", "fits: yes"})
    EXPECT_NE(fits.out.find(part), std::string::npos) << part << " in\n" << fits.out;
  EXPECT_EQ(fits.out.find("DOES NOT FIT"), std::string::npos) << fits.out;
  // Nothing of the 100 GB planned is allocated (a CUDA plan loads the GPU libraries to ask for free memory).
  EXPECT_LT(fits.max_rss_kb, 512 * 1024) << "plan allocated: " << fits.max_rss_kb << " kB";

  const CliRun small = tiergen(base + "--gpu-mem 8GiB");
  EXPECT_EQ(small.status, 3) << small.err;  // out of memory (launch/exit_codes.h)
  EXPECT_NE(small.out.find("of 8.59 GB (the --gpu-mem budget): DOES NOT FIT"), std::string::npos) << small.out;
  expect_one_error_line(small, 3, "of GPU memory");
  EXPECT_NE(small.err.find("8.59 GB is the --gpu-mem budget"), std::string::npos) << small.err;
  EXPECT_NE(small.err.find("Lower --gen-len"), std::string::npos) << small.err;
}

// SIGINT or SIGTERM while a run streams its weights from disk: the process ends by the signal, as
// it would have, and its offload folder is gone (OPT-125M's 340 MB of f32 decoder layers).
TEST(Cli, ASignalDuringARunRemovesTheOffloadFiles) {
  for (const int sig : {SIGINT, SIGTERM}) {
    testing::TempDir dir;
    testing::TiergenProcess run(
        "bench --dummy opt-125m --percent 0 0 100 0 100 0 --prompt-len 16 --gen-len 2000 "
        "--no-roofline --no-warmup --offload-dir " +
        dir.path().string());
    // Every layer's file written: the run is generating.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
    auto last_layer_written = [&] {
      for (const auto& sub : std::filesystem::directory_iterator(dir.path()))
        if (std::filesystem::exists(sub.path() / "layer-11")) return true;
      return false;
    };
    while (!last_layer_written() && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    ASSERT_TRUE(last_layer_written()) << "the run wrote no weights to " << dir.path();
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    run.signal(sig);
    const CliRun r = run.wait(std::chrono::seconds(180));
    EXPECT_EQ(r.status, 128 + sig) << r.err;
    EXPECT_TRUE(std::filesystem::is_empty(dir.path())) << "offload files outlived signal " << sig;
  }
}

// --progress: a line on stderr every so often (here after every step), stdout untouched.
TEST(Cli, ProgressLinesGoToStderr) {
  const std::string base = "generate --model " + model() + " --json --greedy --ignore-eos -n 12 ";
  const CliRun quiet = tiergen(base + "Hello 'A fool'");
  const CliRun r = tiergen(base + "--progress 0.000001 Hello 'A fool'");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, quiet.out);
  EXPECT_TRUE(quiet.err.empty()) << quiet.err;
  std::istringstream lines(r.err);
  std::string line;
  int n = 0;
  while (std::getline(lines, line)) {
    EXPECT_EQ(line.rfind("tiergen: ", 0), 0u) << line;
    EXPECT_NE(line.find(" of 24 tokens ("), std::string::npos) << line;
    EXPECT_NE(line.find(" token/s"), std::string::npos) << line;
    ++n;
  }
  EXPECT_EQ(n, 12);  // one per step: the prefill and 11 decode steps
  EXPECT_NE(r.err.find("tiergen: 24 of 24 tokens (100.0%)"), std::string::npos) << r.err;
  expect_one_error_line(tiergen(base + "--progress -1 Hi"), 2, "--progress");
}

// --trace writes a Chrome trace: one named track per engine, spans with times that nest in the
// run, and the run's tokens unchanged by tracing.
TEST(Cli, TraceShowsComputeAndDiskTracks) {
  testing::TempDir dir;
  const std::string base = "generate --model " + model() + " --json --greedy -n 3 --percent 0 50 100 0 100 0 ";
  const CliRun ref = tiergen(base + "Hello");
  const std::string path = (dir / "run.trace.json").string();
  const CliRun r = tiergen(base + "--trace " + path + " Hello");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, ref.out);
  const nlohmann::json t = nlohmann::json::parse(testing::read_file(path));
  std::map<int, std::string> tracks;
  std::map<std::string, int> spans;
  for (const auto& e : t.at("traceEvents"))
    if (e.at("ph") == "M") tracks[e.at("tid").get<int>()] = e.at("args").at("name").get<std::string>();
  for (const auto& e : t.at("traceEvents")) {
    if (e.at("ph") != "X") continue;
    EXPECT_GE(e.at("ts").get<double>(), 0.0);
    EXPECT_GE(e.at("dur").get<double>(), 0.0);
    spans[tracks.at(e.at("tid").get<int>())]++;
  }
  // A prefill and a decode step per further token.
  EXPECT_GE(spans["steps"], 3);
  EXPECT_GT(spans["compute"], spans["steps"]);  // a span per layer per step
  EXPECT_GT(spans["disk I/O"], 0);              // half the weights are read from disk each step
}

}  // namespace
}  // namespace tiergen
