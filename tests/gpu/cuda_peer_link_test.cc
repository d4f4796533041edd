// The NCCL links between two GPUs (kernels/cuda/peer_link.cc), on a host with two: tensors arrive
// byte for byte, in order; a peer that sends nothing ends the receiver's wait at its deadline with
// the link aborted; and `mpirun -np 2 tiergen generate --device cuda --stage-link nccl` gives the
// single GPU's tokens for every reference model. Skips with fewer than two GPUs, without NCCL
// (libnccl.so.2 on LD_LIBRARY_PATH) or without mpirun.
#include <cuda_runtime.h>

#include <chrono>
#include <cstring>
#include <future>
#include <random>

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

// mpirun -np 2 over NCCL gives the single GPU's tokens.
TEST(CliCudaPipeline, TwoGpusOverNcclGiveTheOneGpuTokens) {
  if (!kernels::cuda_available() || visible_gpus() < 2) GTEST_SKIP() << "fewer than two GPUs are visible";
  if (!comm::have_mpi() || std::system("command -v mpirun >/dev/null 2>&1") != 0)
    GTEST_SKIP() << "no MPI in this build or no mpirun on PATH";
  {
    auto be = kernels::make_cuda_backend(0);
    std::string why;
    if (!be->peers(why)) GTEST_SKIP() << why;
  }
  testing::CliLimits mpirun;
  mpirun.launcher =
      "env OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 NCCL_NVLS_ENABLE=0 mpirun --oversubscribe -x "
      "LD_LIBRARY_PATH -x NCCL_NVLS_ENABLE -np 2";
  for (const std::string& m : testing::hf_reference_models()) {
    const auto ref = testing::load_hf_reference(m);
    std::string prompts;
    for (const testing::HfCase& c : ref.cases) {
      std::string ids;
      for (int32_t id : c.ids) ids.append(ids.empty() ? "" : ",").append(std::to_string(id));
      prompts.append(" --input-ids ").append(ids);
    }
    for (const std::string mode : {" --greedy", " --sample --seed 11 --top-k 40"}) {
      const std::string args =
          "generate --device cuda --model " + ref.dir.string() + prompts + " -n 10 --ignore-eos --json -b 1" + mode;
      const testing::CliRun alone = testing::run_tiergen(args);
      ASSERT_EQ(alone.status, 0) << alone.err;
      const testing::CliRun piped = testing::run_tiergen(args + " --stage-link nccl", "", mpirun);
      ASSERT_EQ(piped.status, 0) << piped.err;
      EXPECT_EQ(piped.out, alone.out) << m << mode;
      EXPECT_NE(piped.err.find("over NCCL for stage 0 -> 1"), std::string::npos) << piped.err;
    }
  }
}

}  // namespace
}  // namespace tiergen
