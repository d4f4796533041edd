// The NCCL links (kernels/cuda/peer_link.cc). On a host with two GPUs: tensors arrive byte for byte,
// in order; a peer that sends nothing ends the receiver's wait at its deadline with the link
// aborted; `mpirun -np 2 tiergen generate --device cuda --stage-link nccl` gives the single GPU's
// tokens for every reference model. On any GPU, with processes that share it as NCCL hosts of their
// own: the same token equality for 2 and 3 stages, regrouping on the device, and a stopped rank
// ending the run at the deadline. Skips without NCCL (libnccl.so.2 on LD_LIBRARY_PATH) or mpirun.
#include <cuda_runtime.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <future>
#include <random>
#include <thread>

#include "comm/mpi_transport.h"
#include "kernels/backend.h"
#include "runtime/core/error.h"
#include "tests/testutil/cli.h"
#include "tests/testutil/hf_reference.h"
#include "tests/testutil/testutil.h"

namespace tiergen {
namespace {

using namespace std::chrono_literals;

int visible_gpus() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return n;
}

class NcclLinks : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!kernels::cuda_available() || visible_gpus() < 2) GTEST_SKIP() << "fewer than two GPUs are visible";
    for (int d = 0; d < 2; ++d) be_[d] = kernels::make_cuda_backend(d);
    std::string why;
    for (int d = 0; d < 2; ++d) {
      c_[d] = be_[d]->peers(why);
      if (!c_[d]) GTEST_SKIP() << why;
    }
  }

  // Joins a link from GPU 0 to GPU 1 (each end in its own thread: the join needs both).
  void join() {
    const std::vector<std::byte> key = c_[0]->new_key();
    auto other = std::async(std::launch::async, [&] { return c_[1]->join(key, 1, [] {}); });
    link_[0] = c_[0]->join(key, 0, [] {});
    link_[1] = other.get();
  }

  std::unique_ptr<kernels::Backend> be_[2];
  kernels::PeerConnector* c_[2] = {};
  std::unique_ptr<kernels::PeerLink> link_[2];
};

TEST_F(NcclLinks, AddressesNameTheHostAndTheBus) {
  EXPECT_NE(c_[0]->address(), c_[1]->address());
  EXPECT_NE(c_[0]->address().find('/'), std::string::npos) << c_[0]->address();
}

TEST_F(NcclLinks, TensorsArriveByteForByteInOrder) {
  join();
  std::mt19937 rng(5);
  std::vector<Tensor> sent_host;
  for (int64_t rows : {37, 1, 512}) {  // (T_b, C) hidden states of a few GPU batches
    Tensor h = Tensor::empty({rows, 96}, DType::F16);
    auto* p = static_cast<uint16_t*>(h.raw());
    for (int64_t i = 0; i < h.numel(); ++i) p[i] = static_cast<uint16_t>(rng());
    sent_host.push_back(h);
  }
  auto sender = std::async(std::launch::async, [&] {
    for (const Tensor& h : sent_host) {
      Tensor d = be_[0]->upload(h, DType::F16);
      if (!link_[0]->send(d, 30s)) return false;  // the link keeps d alive until it has gone
    }
    return link_[0]->wait(30s);
  });
  std::vector<Tensor> got;
  for (const Tensor& h : sent_host) {
    got.push_back(be_[1]->scratch(h.shape(), DType::F16));
    ASSERT_TRUE(link_[1]->recv(got.back(), 30s));
  }
  ASSERT_TRUE(link_[1]->wait(30s));
  ASSERT_TRUE(sender.get());
  for (size_t i = 0; i < got.size(); ++i) {
    Tensor back = Tensor::empty(got[i].shape(), DType::F16);
    be_[1]->copy(back, got[i]);  // on the compute stream, which waited for the receive
    EXPECT_EQ(std::memcmp(back.raw(), sent_host[i].raw(), back.nbytes()), 0) << "tensor " << i;
  }
}

TEST_F(NcclLinks, ASilentPeerEndsTheWaitAtTheDeadline) {
  join();
  // The join itself completes with both ends waiting.
  auto joined = std::async(std::launch::async, [&] { return link_[0]->wait(30s); });
  ASSERT_TRUE(link_[1]->wait(30s));
  ASSERT_TRUE(joined.get());
  Tensor x = be_[1]->scratch({64, 96}, DType::F16);
  ASSERT_TRUE(link_[1]->recv(x, 30s));
  const auto start = std::chrono::steady_clock::now();
  EXPECT_FALSE(link_[1]->wait(500ms));  // GPU 0 never sends
  EXPECT_LT(std::chrono::steady_clock::now() - start, 10s);
  EXPECT_THROW_WITH((void)link_[1]->recv(x, 1s), DeviceError, "was aborted");
  be_[1]->synchronize();  // nothing is left spinning on the device
}

// The address tells hosts apart as NCCL does: by $NCCL_HOSTID where it is set.
TEST(NcclAddress, FollowsNcclHostid) {
  if (!kernels::cuda_available()) GTEST_SKIP() << "no CUDA device is visible";
  std::string why;
  {
    auto be = kernels::make_cuda_backend(0);
    kernels::PeerConnector* c = be->peers(why);
    if (!c) GTEST_SKIP() << why;
    EXPECT_EQ(c->address().find("NCCL_HOSTID"), std::string::npos) << c->address();
    EXPECT_NE(c->address().find(testing::host_name()), std::string::npos) << c->address();
  }
  ASSERT_EQ(setenv("NCCL_HOSTID", "tiergen-test-a", 1), 0);
  auto be = kernels::make_cuda_backend(0);
  const std::string a = be->peers(why)->address();
  unsetenv("NCCL_HOSTID");
  EXPECT_EQ(a.rfind("NCCL_HOSTID=tiergen-test-a/", 0), 0u) << a;
}

std::string prompt_flags(const testing::HfReferenceModel& ref) {
  std::string prompts;
  for (const testing::HfCase& c : ref.cases) {
    std::string ids;
    for (int32_t id : c.ids) ids.append(ids.empty() ? "" : ",").append(std::to_string(id));
    prompts.append(" --input-ids ").append(ids);
  }
  return prompts;
}

bool can_run_nccl_pipeline(std::string& why) {
  if (!comm::have_mpi() || std::system("command -v mpirun >/dev/null 2>&1") != 0) {
    why = "no MPI in this build or no mpirun on PATH";
    return false;
  }
  auto be = kernels::make_cuda_backend(0);
  return be->peers(why) != nullptr;
}

#define REQUIRE_NCCL_PIPELINE()                                   \
  do {                                                            \
    std::string why_not;                                          \
    if (!can_run_nccl_pipeline(why_not)) GTEST_SKIP() << why_not; \
  } while (0)

// mpirun for `np` ranks on this machine, root allowed, without the single-copy shared-memory path
// that containers often forbid, each rank with NCCL's environment.
std::string mpirun(int np, const std::string& env = "", const std::string& forwarded = "") {
  return "env OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl_vader_single_copy_mechanism=none "
         "NCCL_NVLS_ENABLE=0 " +
         env + " mpirun --oversubscribe -x LD_LIBRARY_PATH -x NCCL_NVLS_ENABLE" + forwarded + " -np " +
         std::to_string(np);
}

// One GPU as `np` NCCL hosts: each rank sets its own NCCL_HOSTID, so NCCL (and tiergen, which tells
// hosts apart the same way) takes the processes for machines of their own and joins them over
// sockets on loopback. Slower than NVLink or PCIe between two GPUs, but every part of the links
// runs: the join and the probe, sends and receives ordered by events, regrouping on the device,
// the deadlines.
std::string hosts_on_one_gpu(int np) {
  return mpirun(np, "NCCL_SOCKET_IFNAME=lo NCCL_IB_DISABLE=1", " -x NCCL_SOCKET_IFNAME -x NCCL_IB_DISABLE") +
         " sh -c 'NCCL_HOSTID=tiergen-test-host-$OMPI_COMM_WORLD_RANK exec \"$0\" \"$@\"'";
}

// A cluster config of `np` stages on cuda:0, with the given GPU batches (none: the block's).
std::string one_gpu_stages(const testing::TempDir& tmp, int np, const std::vector<int>& gpu_batches = {}) {
  std::string yaml = "stages:\n";
  for (int i = 0; i < np; ++i) {
    yaml += "  - device: cuda:0\n";
    if (static_cast<size_t>(i) < gpu_batches.size())
      yaml += "    gpu_batch_size: " + std::to_string(gpu_batches[static_cast<size_t>(i)]) + "\n";
  }
  const std::string path = (tmp / ("stages-" + std::to_string(np) + ".yaml")).string();
  testing::write_file(path, yaml);
  return path;
}

// Every reference model, greedy and sampled: the pipeline over NCCL (`launcher`, `flags`) gives the
// tokens of one GPU alone.
void expect_the_one_gpu_tokens(const std::string& launcher, int np, const std::string& flags) {
  testing::CliLimits pipeline;
  pipeline.launcher = launcher;
  for (const std::string& m : testing::hf_reference_models()) {
    const auto ref = testing::load_hf_reference(m);
    if (load_model_config(ref.dir / "config.json").num_layers < np) continue;
    for (const std::string mode : {" --greedy", " --sample --seed 11 --top-k 40"}) {
      const std::string args = "generate --device cuda --model " + ref.dir.string() + prompt_flags(ref) +
                               " -n 10 --ignore-eos --json" + mode;
      const testing::CliRun alone = testing::run_tiergen(args + " -b 1");
      ASSERT_EQ(alone.status, 0) << alone.err;
      const testing::CliRun piped = testing::run_tiergen(args + flags + " --stage-link nccl", "", pipeline);
      ASSERT_EQ(piped.status, 0) << m << mode << ": " << piped.err;
      EXPECT_EQ(piped.out, alone.out) << m << mode << ", " << np << " ranks," << flags;
      EXPECT_NE(piped.err.find("over NCCL for stage 0 -> 1"), std::string::npos) << piped.err;
    }
  }
}

// mpirun -np 2 over NCCL between two GPUs gives the single GPU's tokens.
TEST(CliCudaPipeline, TwoGpusOverNcclGiveTheOneGpuTokens) {
  if (!kernels::cuda_available() || visible_gpus() < 2) GTEST_SKIP() << "fewer than two GPUs are visible";
  REQUIRE_NCCL_PIPELINE();
  expect_the_one_gpu_tokens(mpirun(2), 2, " -b 1");
}

// The same over NCCL between processes that share one GPU as hosts of their own: two stages, and
// three (the middle one receives and sends on two links), with one and with several micro-batches.
TEST(CliCudaPipeline, HostsSharingOneGpuOverNcclGiveTheOneGpuTokens) {
  if (!kernels::cuda_available()) GTEST_SKIP() << "no CUDA device is visible";
  REQUIRE_NCCL_PIPELINE();
  testing::TempDir tmp;
  expect_the_one_gpu_tokens(hosts_on_one_gpu(2), 2, " -b 1 --cluster-config " + one_gpu_stages(tmp, 2));
  expect_the_one_gpu_tokens(hosts_on_one_gpu(3), 3,
                            " -b 1 --micro-batches 3 --cluster-config " + one_gpu_stages(tmp, 3));
}

// Stages with GPU batches of their own regroup the rows they receive over NCCL on the device.
TEST(CliCudaPipeline, StagesRegroupRowsReceivedOverNccl) {
  if (!kernels::cuda_available()) GTEST_SKIP() << "no CUDA device is visible";
  REQUIRE_NCCL_PIPELINE();
  testing::TempDir tmp;
  const std::string args = "generate --device cuda --model " + testing::demo_model() +
                           " 'A fool' 'You' 'The' 'Q: What is' -n 6 --ignore-eos --json";
  const testing::CliRun alone = testing::run_tiergen(args + " -b 3");
  ASSERT_EQ(alone.status, 0) << alone.err;
  testing::CliLimits pipeline;
  pipeline.launcher = hosts_on_one_gpu(3);
  const testing::CliRun r = testing::run_tiergen(
      args + " --stage-link nccl --cluster-config " + one_gpu_stages(tmp, 3, {3, 1, 2}), "", pipeline);
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, alone.out);
  EXPECT_NE(r.err.find("over NCCL for stage 0 -> 1, stage 1 -> 2"), std::string::npos) << r.err;
}

// A rank stopped (SIGSTOP) mid-run over NCCL: the others end at the deadline, naming it, and the
// job exits non-zero within a bounded time (nothing left spinning on the device).
TEST(CliCudaPipeline, AStoppedRankEndsANcclPipelineNamingIt) {
  if (!kernels::cuda_available()) GTEST_SKIP() << "no CUDA device is visible";
  REQUIRE_NCCL_PIPELINE();
  testing::TempDir tmp;
  std::string prompts;
  for (int i = 0; i < 64; ++i) prompts += " 'A fool and'";
  testing::CliLimits pipeline;
  pipeline.launcher = hosts_on_one_gpu(2);
  testing::TiergenProcess p("generate --device cuda --model " + testing::demo_model() + prompts +
                                " -n 200 --ignore-eos -b 1 --stage-link nccl --comm-timeout 3s --load-timeout 60s "
                                "--cluster-config " +
                                one_gpu_stages(tmp, 2),
                            "", pipeline);
  const pid_t r1 = testing::mpi_rank_pid(p.pid(), 1);
  ASSERT_GT(r1, 0) << "rank 1 never started";
  std::this_thread::sleep_for(4s);  // past the CUDA start and the join, into the run
  ::kill(r1, SIGSTOP);
  const testing::CliRun r = p.wait(120s);
  ::kill(r1, SIGKILL);  // if mpirun left it stopped
  EXPECT_NE(r.status, 0) << r.err;
  EXPECT_LT(r.seconds, 60.0);
  EXPECT_NE(r.err.find("rank 1"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace tiergen
