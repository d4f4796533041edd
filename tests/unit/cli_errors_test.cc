// Bad input to the `tiergen` executable, one case per class of mistake a user makes: every case ends
// in one error line that names the problem and the exit status that launch/exit_codes.h gives its
// kind; none crashes, silently ignores a value, reads the wrong input, or takes memory or time first.
#include <nlohmann/json.hpp>
#include <regex>

#include "launch/exit_codes.h"
#include "tests/testutil/cli.h"
#include "tests/testutil/testutil.h"

namespace tiergen {
namespace {

using cli::exit_code;
using testing::CliRun;
using testing::demo_model;
using testing::run_tiergen;

// One error line on stderr naming `what`; the status is the table's for `kind`.
void expect_error(const CliRun& r, ErrorKind kind, const std::string& what) {
  EXPECT_EQ(r.status, exit_code(kind)) << "expected the exit status of " << error_kind_name(kind) << "\n" << r.err;
  EXPECT_EQ(r.err.rfind("tiergen: error: ", 0), 0u) << r.err;
  EXPECT_EQ(r.err.find('\n'), r.err.size() - 1) << "not one line: " << r.err;
  EXPECT_NE(r.err.find(what), std::string::npos) << "expected '" << what << "' in: " << r.err;
  EXPECT_TRUE(r.out.empty()) << "printed output before failing: " << r.out;
}

// Fails fast: the check runs before anything large is allocated or any work is done.
void expect_fast_and_small(const CliRun& r) {
  EXPECT_LT(r.seconds, 1.0) << r.err;
  EXPECT_LT(r.max_rss_kb, 100 * 1024) << r.err;
}

std::string generate(const std::string& args) { return "generate --model " + demo_model() + " " + args; }

// A copy of the demo model whose config.json / tokenizer.json a test may rewrite; the weights are
// linked, not copied.
struct ModelCopy {
  testing::TempDir dir;
  ModelCopy() {
    const std::filesystem::path src = demo_model();
    for (const char* f : {"config.json", "tokenizer.json", "generation_config.json"})
      testing::write_file(dir / f, testing::read_file(src / f));
    std::filesystem::create_symlink(src / "model.safetensors", dir / "model.safetensors");
  }
  void edit_config(const std::function<void(nlohmann::json&)>& change) {
    auto j = nlohmann::json::parse(testing::read_file(dir / "config.json"));
    change(j);
    testing::write_file(dir / "config.json", j.dump());
  }
  std::string path() const { return dir.path().string(); }
};

TEST(CliErrors, ThreadCountsAreBounded) {
  // 100000 threads crashed inside OpenMP; 40000 took 2 GB before failing.
  for (const char* n : {"100000", "40000", "-2", "x"}) {
    const CliRun r = run_tiergen(generate("--threads " + std::string(n) + " Hi"));
    expect_error(r, ErrorKind::InvalidArgument, "--threads: must be an integer from 0 to");
    expect_fast_and_small(r);
  }
  EXPECT_EQ(run_tiergen("bench --threads 100000 --dummy opt-125m").status, cli::kExitUsage);
  const CliRun ok = run_tiergen(generate("--threads 1 -n 2 Hi"));
  EXPECT_EQ(ok.status, 0) << ok.err;
}

TEST(CliErrors, OutOfRangeValuesAreErrorsNotDefaults) {
  // Each of these once ran as if the flag were absent (a sentinel meant "not set"), or wrapped.
  const std::pair<const char*, const char*> cases[] = {
      {"--top-p -1", "--top-p: must be a number in (0, 1]"},
      {"--top-p nan", "--top-p: must be a number in (0, 1]"},
      {"--top-p 1.5", "--top-p: must be a number in (0, 1]"},
      {"--temperature -0.5", "--temperature: must be a number >= 0"},
      {"--temperature nan", "--temperature: must be a number >= 0"},
      {"--temperature inf", "--temperature: must be a number >= 0"},
      {"--repetition-penalty -1", "--repetition-penalty: must be a number > 0"},
      {"--repetition-penalty nan", "--repetition-penalty: must be a number > 0"},
      {"--seed -1", "--seed: must be an integer from 0 to 18446744073709551615"},
      {"--seed 1e23", "--seed: must be an integer from 0 to 18446744073709551615"},
      {"--seed 18446744073709551616", "--seed: must be an integer from 0 to 18446744073709551615"},
      {"--top-k -3", "--top-k: must be an integer >= 0"},
      {"--max-new-tokens -5", "--max-new-tokens: must be an integer from 0 to"},
      {"--batch-size 0", "--batch-size: must be an integer from 1 to"},
      {"--cpu-mem 12XB", "--cpu-mem: '12XB' is not a size"},
  };
  const std::regex long_number("[0-9]{25,}");
  for (const auto& [flag, message] : cases) {
    const CliRun r = run_tiergen(generate(std::string(flag) + " --sample Hi"));
    expect_error(r, ErrorKind::InvalidArgument, message);
    // The range is said in words a person reads, not as DBL_MAX's 300 digits.
    EXPECT_FALSE(std::regex_search(r.err, long_number)) << r.err;
  }
  // The largest seed is a seed.
  EXPECT_EQ(run_tiergen(generate("--seed 18446744073709551615 --sample -n 2 Hi")).status, 0);
}

TEST(CliErrors, ConfigLayerCountIsBoundedAndCheckedAgainstTheCheckpoint) {
  ModelCopy m;
  m.edit_config([](nlohmann::json& j) { j["num_hidden_layers"] = 1000000000; });
  for (const std::string& cmd : {"info --model " + m.path(), "generate --model " + m.path() + " Hi"}) {
    const CliRun r = run_tiergen(cmd);
    expect_error(r, ErrorKind::Format, "num_hidden_layers' is 1000000000, beyond what any supported model has");
    expect_fast_and_small(r);
  }
  m.edit_config([](nlohmann::json& j) { j["num_hidden_layers"] = 9; });
  const CliRun r = run_tiergen("info --model " + m.path());
  expect_error(r, ErrorKind::Format, "the config says 9 decoder layers, but the checkpoint in");
  EXPECT_NE(r.err.find("holds 6 (no 'model.layers.6.self_attn.o_proj.weight')"), std::string::npos) << r.err;
}

TEST(CliErrors, NewTokensAreBoundedByTheContext) {
  // fortune-tiny is a Llama (RoPE) with 512 positions: once only OPT was refused past its context.
  for (const char* n : {"100000", "510"}) {
    const CliRun r = run_tiergen(generate("--max-new-tokens " + std::string(n) + " Hi"));
    expect_error(r, ErrorKind::InvalidArgument, "new tokens exceed the model's context of 512 tokens");
    EXPECT_NE(r.err.find("at most 509 new tokens fit"), std::string::npos) << r.err;
    expect_fast_and_small(r);
  }
  const CliRun r12 = run_tiergen(generate("--max-new-tokens 1000000000000 Hi"));
  expect_error(r12, ErrorKind::InvalidArgument, "--max-new-tokens: must be an integer from 0 to 2147483647");
  expect_fast_and_small(r12);
  // Every family with a context says so the same way.
  const std::string qwen = testing::hf_model_dir("qwen2-tiny").string();
  expect_error(run_tiergen("generate --model " + qwen + " --input-ids 1,2,3 -n 600"), ErrorKind::InvalidArgument,
               "exceed the model's context of 512 tokens");
  expect_error(run_tiergen("bench --dummy opt-125m --prompt-len 2040 --gen-len 32"), ErrorKind::InvalidArgument,
               "exceed the model's context of 2048 tokens");
  // Exactly at the context is allowed: 3 + 509 = 512.
  const CliRun edge = run_tiergen(generate("--max-new-tokens 509 --ignore-eos --json Hi"));
  ASSERT_EQ(edge.status, 0) << edge.err;
  EXPECT_EQ(nlohmann::json::parse(edge.out).at("output_ids").size(), 509u);
}

TEST(CliErrors, RunsThatDoNotFitFailBeforeAllocating) {
  // The whole run's memory (weights generated in place, KV cache, activations) against a budget.
  const CliRun kv = run_tiergen(generate("--max-new-tokens 500 --cpu-mem 1MB Hi"));
  expect_error(kv, ErrorKind::OutOfMemory, "this run needs 3.16 MB of host memory");
  for (const char* part : {"KV cache 3.09 MB (1 sequence x 503 tokens x 6.14 kB)", "1.00 MB is the --cpu-mem budget",
                           "Lower --max-new-tokens or --batch-size"})
    EXPECT_NE(kv.err.find(part), std::string::npos) << part << " in " << kv.err;
  expect_fast_and_small(kv);
  // 138 GB of dummy weights once filled memory for 24 s before failing.
  const CliRun big = run_tiergen("generate --dummy llama-2-70b --cpu-mem 16GB --input-ids 1,2,3");
  expect_error(big, ErrorKind::OutOfMemory, "this run needs 138 GB of host memory [weights 138 GB (F16");
  expect_fast_and_small(big);
  // The same with what the machine reports: OPT-175B's 349 GB exceeds the host this runs on.
  const CliRun probe = run_tiergen("bench --dummy opt-175b --prompt-len 8 --gen-len 1");
  expect_error(probe, ErrorKind::OutOfMemory, "this run needs 349 GB of host memory");
  EXPECT_NE(probe.err.find("available on this machine"), std::string::npos) << probe.err;
  expect_fast_and_small(probe);
  // BLOOM (ALiBi) has no context limit: 2^31 - 1 new tokens are refused by the memory plan.
  const std::string bloom = testing::hf_model_dir("bloom-tiny").string();
  const CliRun alibi = run_tiergen("generate --model " + bloom + " --input-ids 1,2 --max-new-tokens 2147483647");
  expect_error(alibi, ErrorKind::OutOfMemory, "KV cache");
  expect_fast_and_small(alibi);
}

TEST(CliErrors, PromptFilesAreNeverReplacedByStdin) {
  testing::TempDir tmp;
  testing::write_file(tmp / "empty.txt", "");
  testing::write_file(tmp / "blank.txt", "\n\n  \n");
  const std::string stdin_prompt = "a prompt on stdin\n";
  const std::pair<std::string, ErrorKind> cases[] = {
      {(tmp / "empty.txt").string(), ErrorKind::Format},
      {"/dev/null", ErrorKind::Format},
      {tmp.path().string(), ErrorKind::Io},
      {(tmp / "missing.txt").string(), ErrorKind::NotFound},
  };
  for (const auto& [file, kind] : cases) {
    const CliRun r = run_tiergen(generate("--prompt-file " + file), stdin_prompt);
    expect_error(r, kind, "prompt file '" + file + "'");
  }
  const CliRun dash = run_tiergen(generate("--prompt-file -"), "");
  expect_error(dash, ErrorKind::Format, "no prompts on stdin");
}

TEST(CliErrors, MissingFilesAreNamedInTheOrderThatMatters) {
  // A folder without config.json is named as such, not as a folder without a tokenizer.
  testing::TempDir dir;
  testing::write_file(dir / "tokenizer.json",
                      testing::read_file(std::filesystem::path(demo_model()) / "tokenizer.json"));
  const CliRun r = run_tiergen("generate --model " + dir.path().string() + " Hello");
  expect_error(r, ErrorKind::NotFound, "has no config.json");
}

TEST(CliErrors, TokenizerProblemsAreFoundAtLoadTime) {
  ModelCopy empty;
  auto tok = nlohmann::json::parse(testing::read_file(empty.dir / "tokenizer.json"));
  tok["model"]["vocab"] = nlohmann::json::object();
  tok["model"]["merges"] = nlohmann::json::array();
  tok["added_tokens"] = nlohmann::json::array();
  tok["post_processor"] = nullptr;
  testing::write_file(empty.dir / "tokenizer.json", tok.dump());
  for (const std::string& cmd :
       {"generate --model " + empty.path() + " Hello", "tokenize --model " + empty.path() + " Hello"})
    expect_error(run_tiergen(cmd), ErrorKind::Format, "model.vocab");

  // A tokenizer whose ids reach past the model's embedding table.
  ModelCopy small;
  small.edit_config([](nlohmann::json& j) { j["vocab_size"] = 1000; });
  const CliRun r = run_tiergen("generate --model " + small.path() + " Hello");
  expect_error(r, ErrorKind::Format, "tokenizer.json: token ids go up to 4095, beyond the model's vocabulary of 1000");
  expect_fast_and_small(r);
}

TEST(CliErrors, UnsupportedAndUsageStatusesFollowTheTable) {
  // Without a GPU (or without CUDA in the build) --device cuda is unsupported here, either way.
  expect_error(run_tiergen("bench --device cuda --dummy opt-125m"), ErrorKind::Unsupported, "CUDA");
  expect_error(run_tiergen("bench --device cuda:x --dummy opt-125m"), ErrorKind::InvalidArgument,
               "--device must be cpu, cuda or cuda:N, got 'cuda:x'");
  expect_error(run_tiergen(generate("--dtype float16 Hi")), ErrorKind::Unsupported,
               "--dtype float16: the CPU backend computes in float32");
  expect_error(run_tiergen("generate --dummy gpt-9 --input-ids 1"), ErrorKind::InvalidArgument, "gpt-9");
  const CliRun parse = run_tiergen("generate --no-such-flag");
  EXPECT_EQ(parse.status, cli::kExitUsage) << parse.err;
}

TEST(CliErrors, TokenizeAddsSpecialTokensAsGenerateDoes) {
  const CliRun with = run_tiergen("tokenize --model " + demo_model() + " Hello");
  const CliRun without = run_tiergen("tokenize --model " + demo_model() + " --no-special-tokens Hello");
  const CliRun gen = run_tiergen(generate("--json -n 1 Hello"));
  ASSERT_EQ(with.status, 0) << with.err;
  ASSERT_EQ(without.status, 0) << without.err;
  ASSERT_EQ(gen.status, 0) << gen.err;
  const auto ids = nlohmann::json::parse(with.out);
  EXPECT_EQ(ids, nlohmann::json::parse(gen.out).at("input_ids"));
  EXPECT_EQ(ids.at(0), 0);  // <|begin_of_text|>
  EXPECT_EQ(nlohmann::json::parse(without.out).size() + 1, ids.size());
}

}  // namespace
}  // namespace tiergen

namespace tiergen {
namespace {

// --gpu-mem, --cpu-mem and --disk-mem: sizes, where each applies, and a disk budget the plan exceeds.
TEST(CliErrors, BudgetsAreSizesForTheirTier) {
  expect_error(run_tiergen(generate("-n 2 --gpu-mem 12XB Hi")), ErrorKind::InvalidArgument,
               "--gpu-mem: '12XB' is not a size");
  expect_error(run_tiergen(generate("-n 2 --cpu-mem -1GB Hi")), ErrorKind::InvalidArgument, "--cpu-mem");
  expect_error(run_tiergen(generate("-n 2 --gpu-mem 1GiB Hi")), ErrorKind::InvalidArgument,
               "--gpu-mem is a budget for --device cuda runs");
  testing::TempDir dir;
  const CliRun disk = run_tiergen(
      generate("-n 2 --percent 0 0 100 0 100 0 --disk-mem 10kB --offload-dir " + dir.path().string() + " Hi"));
  expect_error(disk, ErrorKind::Io, "of disk in " + dir.path().string());
  EXPECT_NE(disk.err.find("10.0 kB is the --disk-mem budget"), std::string::npos) << disk.err;
  expect_fast_and_small(disk);
  EXPECT_TRUE(std::filesystem::is_empty(dir.path())) << "wrote to the offload folder before failing";
}

// Writes that fail midway through the run, as on a disk that fills after the plan was checked (a
// file-size limit makes them fail: EFBIG, as ENOSPC would): one error naming the file and what to
// do, and no offload file left behind.
TEST(CliErrors, AWriteThatFailsMidRunIsAnErrorAndLeavesNothing) {
  testing::TempDir dir;
  const CliRun r = run_tiergen(generate("-n 2 --percent 0 0 100 0 100 0 --offload-dir " + dir.path().string() + " Hi"),
                               "", testing::CliLimits{uint64_t{1} << 20, ""});
  expect_error(r, ErrorKind::Io, "of " + dir.path().string() + "/tiergen-");
  for (const char* part : {"File too large", "the file size limit was reached", "--offload-dir"})
    EXPECT_NE(r.err.find(part), std::string::npos) << part << " in " << r.err;
  EXPECT_TRUE(std::filesystem::is_empty(dir.path())) << "offload files outlived the failed run";
}

TEST(CliErrors, OffloadPoliciesThatCannotRunAreNamed) {
  testing::TempDir dir;
  expect_error(run_tiergen(generate("-n 2 --percent 60 50 100 0 100 0 Hi")), ErrorKind::InvalidArgument,
               "weights on the GPU (60) and the CPU (50) add up to 110%");
  expect_error(run_tiergen(generate("-n 2 --percent 100 0 100 0 -5 0 Hi")), ErrorKind::InvalidArgument,
               "hg (activations on GPU) is -5");
  expect_error(run_tiergen(generate("-n 2 --percent 0 0 100 Hi")), ErrorKind::InvalidArgument, "--percent");
  expect_error(run_tiergen(generate("-n 2 --percent 100 0 100 0 0 0 Hi")), ErrorKind::Unsupported,
               "activations on disk are not supported yet");
  expect_error(run_tiergen(generate("-n 2 -b 8 --gpu-batch-size 2 --num-gpu-batches 3 Hi")), ErrorKind::InvalidArgument,
               "--batch-size 8 and --gpu-batch-size 2 x --num-gpu-batches 3 = 6 disagree");
  expect_error(run_tiergen(generate("-n 2 --gpu-batch-size 0 Hi")), ErrorKind::InvalidArgument, "--gpu-batch-size");
  // OPT-175B's decoder layers on disk: hundreds of GB, refused before anything is written.
  const CliRun big = run_tiergen("bench --dummy opt-175b --percent 0 0 100 0 100 0 --offload-dir " +
                                 dir.path().string() + " --prompt-len 8 --gen-len 1");
  expect_error(big, ErrorKind::Io, "of disk in " + dir.path().string());
  EXPECT_LT(big.seconds, 10.0);
  expect_error(
      run_tiergen(generate("-n 2 --percent 0 0 100 0 100 0 --offload-dir " + (dir / "missing").string() + " Hi")),
      ErrorKind::Io, "missing: No such file or directory");
  expect_error(run_tiergen(generate("-n 2 --trace " + (dir / "no" / "such" / "t.json").string() + " Hi")),
               ErrorKind::Io, "cannot write the trace file");
}

}  // namespace
}  // namespace tiergen
