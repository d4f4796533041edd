// NCCL point-to-point links for the pipeline's hidden states. Each link is a communicator of two
// ranks (the stage that sends and the next one), so a middle stage's receives from the previous
// stage and its sends to the next run on separate communicators and streams and never queue behind
// each other. Communicators are non-blocking (ncclConfig_t::blocking = 0): every call returns at
// once and is polled with ncclCommGetAsyncError against a deadline, then ncclCommAbort, so a peer
// that died or stopped is an error within the deadline instead of a kernel spinning forever.
//
// NCCL comes in through dlopen: the project does not link it, so the CUDA module loads on hosts
// without NCCL (a single GPU needs none) and a host can use the copy it has (a Python install's,
// say) through LD_LIBRARY_PATH or $TIERGEN_NCCL_LIBRARY.
#include "kernels/cuda/peer_link.h"

#include <dlfcn.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <thread>
#include <vector>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_handles.h"
#include "runtime/core/error.h"

#if __has_include(<nccl.h>)
#include <nccl.h>
#define TIERGEN_HAVE_NCCL_H 1
#endif

namespace tiergen::kernels::cuda {

#ifndef TIERGEN_HAVE_NCCL_H

std::unique_ptr<PeerConnector> make_nccl_connector(int, cudaStream_t, std::string& why_not) {
  why_not = "this tiergen was built without NCCL's header (nccl.h)";
  return nullptr;
}

#else

namespace {

using Clock = std::chrono::steady_clock;

// The NCCL entry points the links use, from the library found at run time.
struct Nccl {
  ncclResult_t (*get_unique_id)(ncclUniqueId*) = nullptr;
  ncclResult_t (*init_rank_config)(ncclComm_t*, int, ncclUniqueId, int, ncclConfig_t*) = nullptr;
  ncclResult_t (*async_error)(ncclComm_t, ncclResult_t*) = nullptr;
  ncclResult_t (*finalize)(ncclComm_t) = nullptr;
  ncclResult_t (*destroy)(ncclComm_t) = nullptr;
  ncclResult_t (*abort)(ncclComm_t) = nullptr;
  ncclResult_t (*send)(const void*, size_t, ncclDataType_t, int, ncclComm_t, cudaStream_t) = nullptr;
  ncclResult_t (*recv)(void*, size_t, ncclDataType_t, int, ncclComm_t, cudaStream_t) = nullptr;
  const char* (*error_string)(ncclResult_t) = nullptr;
  const char* (*last_error)(ncclComm_t) = nullptr;
  std::string error;  // why NCCL cannot be used
};

// ncclCommInitRankConfig, ncclCommFinalize and non-blocking communicators came with 2.14.
constexpr int kOldestNccl = 21400;

const Nccl& nccl() {
  static const Nccl lib = [] {
    Nccl n;
    // NVLink SHARP serves collectives; these links are point to point, and its setup would reserve
    // multicast memory on every communicator. A user's own setting wins.
    setenv("NCCL_NVLS_ENABLE", "0", /*overwrite=*/0);
    std::vector<std::string> names;
    if (const char* env = std::getenv("TIERGEN_NCCL_LIBRARY"); env && *env) names.emplace_back(env);
    names.emplace_back("libnccl.so.2");
    names.emplace_back("libnccl.so");
    void* h = nullptr;
    std::string tried;
    for (const std::string& name : names) {
      h = dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL);  // never closed: communicators outlive nothing but it
      if (h) break;
      const char* why = dlerror();
      tried += (tried.empty() ? "" : "; ") + std::string(why ? why : name);
    }
    if (!h) {
      n.error = "NCCL could not be loaded (" + tried +
                "): put the folder of libnccl.so.2 on LD_LIBRARY_PATH or name the file in TIERGEN_NCCL_LIBRARY";
      return n;
    }
    auto sym = [&](auto& fn, const char* name) {
      fn = reinterpret_cast<std::remove_reference_t<decltype(fn)> >(dlsym(h, name));
      if (!fn && n.error.empty()) n.error = std::string("the NCCL library lacks ") + name;
    };
    ncclResult_t (*version)(int*) = nullptr;
    sym(version, "ncclGetVersion");
    int v = 0;
    if (version && version(&v) == ncclSuccess && v < kOldestNccl) {
      n.error = "NCCL " + std::to_string(v) + " is too old: the links need 2.14 or later";
      return n;
    }
    sym(n.get_unique_id, "ncclGetUniqueId");
    sym(n.init_rank_config, "ncclCommInitRankConfig");
    sym(n.async_error, "ncclCommGetAsyncError");
    sym(n.finalize, "ncclCommFinalize");
    sym(n.destroy, "ncclCommDestroy");
    sym(n.abort, "ncclCommAbort");
    sym(n.send, "ncclSend");
    sym(n.recv, "ncclRecv");
    sym(n.error_string, "ncclGetErrorString");
    sym(n.last_error, "ncclGetLastError");
    return n;
  }();
  return lib;
}

std::string host_name() {
  char buf[256] = {};
  if (gethostname(buf, sizeof(buf) - 1) != 0) return "unknown-host";
  return buf;
}

// The host as NCCL tells hosts apart: $NCCL_HOSTID where it is set, else the host name and the boot
// id (two containers of one machine may share a name, never a boot id). Two ranks with the same
// host and bus id are one device to NCCL, which then refuses to join them, so tiergen sends their
// hidden states through host memory instead; ranks that set NCCL_HOSTID apart are apart for both.
std::string host_identity() {
  if (const char* id = std::getenv("NCCL_HOSTID"); id && *id) return std::string("NCCL_HOSTID=") + id;
  std::string boot;
  if (std::FILE* f = std::fopen("/proc/sys/kernel/random/boot_id", "r")) {
    char buf[64] = {};
    if (std::fgets(buf, sizeof buf, f)) boot = buf;
    std::fclose(f);
  }
  boot = boot.substr(0, 8);  // enough to tell boots apart, short enough to read in a message
  return host_name() + (boot.empty() ? "" : " (boot " + boot + ")");
}

void set_device(int device) {
  int current = -1;
  if (cudaGetDevice(&current) != cudaSuccess) (void)cudaGetLastError();
  if (current != device) CUDA_CHECK(cudaSetDevice(device));
}

class NcclLink final : public PeerLink {
 public:
  NcclLink(int device, cudaStream_t compute, const ncclUniqueId& id, int me, std::function<void()> poll)
      : device_(device), compute_(compute), stream_(device), me_(me), poll_(std::move(poll)) {
    set_device(device_);
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;
    const ncclResult_t r = nccl().init_rank_config(&comm_, 2, id, me_, &config);
    if (r != ncclSuccess && r != ncclInProgress) {
      const ncclComm_t made = comm_;  // a non-blocking init may have made one before it failed
      try {
        fail(r, "ncclCommInitRankConfig");
      } catch (...) {
        if (made) (void)nccl().abort(made);
        comm_ = nullptr;
        throw;
      }
    }
  }

  ~NcclLink() override {
    if (!comm_) return;
    // A clean end finalizes (bounded); anything still in flight, or a finalize that does not end,
    // is aborted. Destructors never throw.
    bool clean = !failed_;
    try {
      reap();
      // A join still under way (the run ended before the probe) cannot be finalized: aborted below.
      clean = clean && pending_.empty() && settle(Clock::now() + std::chrono::seconds(2), false);
      if (clean) {
        const ncclResult_t r = nccl().finalize(comm_);
        clean = (r == ncclSuccess || r == ncclInProgress) && settle(Clock::now() + std::chrono::seconds(2), false);
      }
    } catch (const std::exception&) {
      clean = false;
    }
    if (comm_) (void)(clean ? nccl().destroy(comm_) : nccl().abort(comm_));
    comm_ = nullptr;
  }

  NcclLink(const NcclLink&) = delete;
  NcclLink& operator=(const NcclLink&) = delete;

  bool send(const Tensor& x, std::chrono::milliseconds timeout) override { return transfer(x, timeout, /*out=*/true); }
  bool recv(Tensor& x, std::chrono::milliseconds timeout) override { return transfer(x, timeout, /*out=*/false); }

  bool wait(std::chrono::milliseconds timeout) override {
    const auto deadline = Clock::now() + timeout;
    if (!settle(deadline, true)) return false;
    for (int polls = 0;; ++polls) {
      reap();
      if (pending_.empty()) return true;
      // A transfer whose peer is gone never completes: its error (or the deadline) ends the wait.
      if (!settle(deadline, true)) return false;
      if (Clock::now() >= deadline) {
        abort();
        return false;
      }
      poll_checked();
      nap(polls);
    }
  }

  // The caller's poll (another rank's failure report throws): the link is aborted before it goes on.
  void poll_checked() {
    try {
      poll_();
    } catch (...) {
      abort();
      throw;
    }
  }

 private:
  struct Pending {
    std::unique_ptr<Event> done;
    Tensor held;  // kept alive until the transfer is over: the pool must not hand it out again
  };

  // Throws the library's error, the link aborted first: receives still queued would otherwise keep
  // the compute stream waiting forever.
  [[noreturn]] void fail(ncclResult_t r, const char* call) {
    failed_ = true;
    std::string why = nccl().error_string ? nccl().error_string(r) : "error " + std::to_string(static_cast<int>(r));
    const char* last = comm_ && nccl().last_error ? nccl().last_error(comm_) : nullptr;
    if (last && *last) why += " (" + std::string(last) + ")";
    abort();
    throw DeviceError(std::string(call) + " failed on " + host_name() + " cuda:" + std::to_string(device_) + ": " +
                      why);
  }

  void check_open() const {
    if (!comm_) throw DeviceError("the NCCL link on cuda:" + std::to_string(device_) + " was aborted after a timeout");
  }

  // Polls until NCCL has taken the last call (ncclInProgress: the join or a connection setup is
  // still under way); false, the link aborted, once the deadline has passed.
  bool settle(Clock::time_point deadline, bool polling) {
    check_open();
    for (int polls = 0;; ++polls) {
      ncclResult_t state = ncclSuccess;
      const ncclResult_t r = nccl().async_error(comm_, &state);
      if (r != ncclSuccess) fail(r, "ncclCommGetAsyncError");
      if (state == ncclSuccess) return true;
      if (state != ncclInProgress) fail(state, "the NCCL link");
      if (Clock::now() >= deadline) {
        abort();
        return false;
      }
      if (polling) poll_checked();
      nap(polls);
    }
  }

  bool transfer(const Tensor& x, std::chrono::milliseconds timeout, bool out) {
    if (out != (me_ == 0)) throw InternalError("an NCCL link's first rank sends, its second receives");
    if (x.tier() != Tier::Gpu) throw InternalError("an NCCL link moves GPU tensors, got " + x.describe());
    const auto deadline = Clock::now() + timeout;
    if (!settle(deadline, true)) return false;
    set_device(device_);
    reap();
    // After the compute work queued so far: the one that made x (a send), or the last reader of
    // the pool block that x reuses (a receive).
    CUDA_CHECK(cudaEventRecord(ready_.get(), compute_));
    CUDA_CHECK(cudaStreamWaitEvent(stream_.get(), ready_.get(), 0));
    const int peer = 1 - me_;
    const ncclResult_t r = out ? nccl().send(x.raw(), x.nbytes(), ncclUint8, peer, comm_, stream_.get())
                               : nccl().recv(x.raw(), x.nbytes(), ncclUint8, peer, comm_, stream_.get());
    if (r != ncclSuccess && r != ncclInProgress) fail(r, out ? "ncclSend" : "ncclRecv");
    // Queued on the stream only once NCCL has taken the call.
    if (!settle(deadline, true)) return false;
    Pending& p = pending_.emplace_back();
    p.done = free_events_.empty() ? std::make_unique<Event>() : take_event();
    p.held = x;
    CUDA_CHECK(cudaEventRecord(p.done->get(), stream_.get()));
    if (!out) CUDA_CHECK(cudaStreamWaitEvent(compute_, p.done->get(), 0));  // compute reads x after it came
    return true;
  }

  // Drops the transfers that are over, oldest first.
  void reap() {
    while (!pending_.empty()) {
      const cudaError_t e = cudaEventQuery(pending_.front().done->get());
      if (e == cudaErrorNotReady) return;
      CUDA_CHECK(e);
      free_events_.push_back(std::move(pending_.front().done));
      pending_.pop_front();
    }
  }

  std::unique_ptr<Event> take_event() {
    std::unique_ptr<Event> e = std::move(free_events_.back());
    free_events_.pop_back();
    return e;
  }

  // Ends the communicator and what is in flight on it; the held tensors go only after, since an
  // aborted kernel no longer touches them.
  void abort() {
    failed_ = true;
    if (comm_) (void)nccl().abort(comm_);
    comm_ = nullptr;
    // Since NCCL 2.23 an abort finishes in the background: the stream is drained (bounded once the
    // abort is set) before the held tensors may be handed out again.
    (void)cudaStreamSynchronize(stream_.get());
    pending_.clear();
  }

  static void nap(int polls) {
    if (polls < 1000)
      std::this_thread::yield();
    else
      std::this_thread::sleep_for(std::chrono::microseconds(50));
  }

  int device_;
  cudaStream_t compute_;
  Stream stream_;  // the link's own queue
  Event ready_;
  int me_;
  std::function<void()> poll_;
  ncclComm_t comm_ = nullptr;
  bool failed_ = false;
  std::deque<Pending> pending_;
  std::vector<std::unique_ptr<Event> > free_events_;
};

class NcclConnector final : public PeerConnector {
 public:
  NcclConnector(int device, cudaStream_t compute) : device_(device), compute_(compute) {
    char bus[64] = {};
    CUDA_CHECK(cudaDeviceGetPCIBusId(bus, sizeof bus, device));
    address_ = host_identity() + "/" + bus;
  }

  std::string address() const override { return address_; }

  std::vector<std::byte> new_key() override {
    ncclUniqueId id;
    const ncclResult_t r = nccl().get_unique_id(&id);
    if (r != ncclSuccess)
      throw DeviceError(std::string("ncclGetUniqueId failed on ") + host_name() + ": " + nccl().error_string(r));
    std::vector<std::byte> key(sizeof id);
    std::memcpy(key.data(), &id, sizeof id);
    return key;
  }

  std::unique_ptr<PeerLink> join(std::span<const std::byte> key, int me, std::function<void()> poll) override {
    ncclUniqueId id;
    if (key.size() != sizeof id)
      throw PeerError("an NCCL link key of " + std::to_string(key.size()) + " bytes, expected " +
                      std::to_string(sizeof id) + " (do both ranks run the same tiergen?)");
    if (me != 0 && me != 1) throw InternalError("an NCCL link joins ranks 0 and 1, not " + std::to_string(me));
    std::memcpy(&id, key.data(), sizeof id);
    return std::make_unique<NcclLink>(device_, compute_, id, me, std::move(poll));
  }

 private:
  int device_;
  cudaStream_t compute_;
  std::string address_;
};

}  // namespace

std::unique_ptr<PeerConnector> make_nccl_connector(int device, cudaStream_t compute, std::string& why_not) {
  if (!nccl().error.empty()) {
    why_not = nccl().error;
    return nullptr;
  }
  return std::make_unique<NcclConnector>(device, compute);
}

#endif

}  // namespace tiergen::kernels::cuda
