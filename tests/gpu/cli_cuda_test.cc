// `tiergen` on the GPU as a user runs it: --device cuda generates what the CPU generates (greedy, the
// demo model, float32), and the GPU's bad inputs fail before anything is allocated: a device index
// out of range, a run that does not fit in GPU memory. Skips where no GPU is visible.
#include <nlohmann/json.hpp>

#include "kernels/backend.h"
#include "launch/exit_codes.h"
#include "tests/testutil/cli.h"
#include "tests/testutil/testutil.h"

namespace tiergen {
namespace {

using testing::run_tiergen;

class CliCuda : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!kernels::cuda_available()) GTEST_SKIP() << "no CUDA device is visible (or this build has no CUDA backend)";
  }
};

TEST_F(CliCuda, GreedyFloat32MatchesTheCpu) {
  const std::string args =
      "generate --model " + testing::demo_model() + " --greedy --json -n 24 'Q: What is' 'You will'";
  const auto cpu = run_tiergen(args);
  const auto gpu = run_tiergen(args + " --device cuda --dtype float32");
  ASSERT_EQ(cpu.status, 0) << cpu.err;
  ASSERT_EQ(gpu.status, 0) << gpu.err;
  EXPECT_EQ(gpu.out, cpu.out);
  const auto half = run_tiergen(args + " --device cuda:0");  // the checkpoint's bf16
  ASSERT_EQ(half.status, 0) << half.err;
  EXPECT_NE(half.out.find("\"finish_reason\""), std::string::npos);
}

TEST_F(CliCuda, DeviceOutOfRangeIsUsage) {
  const auto r = run_tiergen("generate --model " + testing::demo_model() + " --device cuda:99 Hi");
  EXPECT_EQ(r.status, cli::kExitUsage) << r.err;
  EXPECT_NE(r.err.find("CUDA device 99 does not exist"), std::string::npos) << r.err;
}

TEST_F(CliCuda, RunsThatDoNotFitTheGpuFailBeforeAllocating) {
  // OPT-175B's 349 GB of fp16 weights: past any single GPU. The host budget is raised so that the GPU
  // check is the one that speaks.
  const auto r = run_tiergen("bench --device cuda --dummy opt-175b --cpu-mem 1000TB --prompt-len 8 --gen-len 1");
  EXPECT_EQ(r.status, cli::kExitMemory) << r.err;
  EXPECT_NE(r.err.find("of GPU memory"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("weights on the GPU 349 GB"), std::string::npos) << r.err;
  EXPECT_LT(r.seconds, 10.0);  // CUDA context creation included
}

}  // namespace
}  // namespace tiergen
