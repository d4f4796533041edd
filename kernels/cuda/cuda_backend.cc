// The CUDA backend: one device, one non-blocking stream, one cuBLAS handle bound to that stream.
// Every op is queued on the stream and returns without waiting; copy() to host memory and
// synchronize() are the only calls that wait. Ops from kernels/cuda/*.cu (see ops.h).
#include "kernels/cuda/cuda_backend.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_handles.h"
#include "kernels/cuda/ops.h"
#include "kernels/cuda/peer_link.h"
#include "runtime/core/error.h"

namespace tiergen::kernels::cuda {
namespace {

struct CudaFence final : Fence {
  Event event;
};

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(int device)
      : device_(device),
        stream_(device),
        load_(device),
        store_(device),
        cublas_(stream_.get()),
        workspace_(device),
        pool_(device) {
    cudaDeviceProp prop{};
    CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
    name_ = "cuda:" + std::to_string(device) + " " + prop.name;
  }

  // Queued work may still use the workspace or cuBLAS's buffers: drain before they are released.
  ~CudaBackend() override {
    for (const Stream* s : {&stream_, &load_, &store_}) (void)cudaStreamSynchronize(s->get());
  }

  DeviceKind kind() const override { return DeviceKind::Cuda; }
  std::string name() const override { return name_; }

  Tensor alloc(Shape shape, DType dtype) override {
    const size_t nbytes = static_cast<size_t>(shape_numel(shape)) * dtype_size(dtype);
    Tensor t(allocate_device(nbytes, device_), 0, std::move(shape), dtype);
    // Zeroed on our stream: every later use on this backend is ordered after it.
    CUDA_CHECK(cudaMemsetAsync(t.raw(), 0, nbytes, stream_.get()));
    return t;
  }

  Tensor scratch(Shape shape, DType dtype) override {
    const size_t nbytes = static_cast<size_t>(shape_numel(shape)) * dtype_size(dtype);
    return Tensor(pool_.allocate(nbytes), 0, std::move(shape), dtype);
  }

  // Returns once the host side is done: a host source may be reused, a host destination read. For
  // a pageable source cudaMemcpyAsync returns after staging it; a pinned source is read by DMA
  // later, so we wait for it (the overlapped weight/KV streaming path gets its own API with
  // events, not this one). Device-to-device copies are only queued.
  void copy(Tensor& dst, const Tensor& src) override {
    if (!dst.defined() || !src.defined() || dst.dtype() != src.dtype() || dst.numel() != src.numel())
      throw InternalError("copy: " + (src.defined() ? src.describe() : std::string("undefined")) + " into " +
                          (dst.defined() ? dst.describe() : std::string("undefined")));
    const bool dst_gpu = dst.tier() == Tier::Gpu, src_gpu = src.tier() == Tier::Gpu;
    for (const Tensor* t : {static_cast<const Tensor*>(&dst), &src})
      if (t->tier() != Tier::Gpu && !host_addressable(t->tier()))
        throw InternalError("copy: " + t->describe() + " is not addressable by the CUDA backend");
    const size_t n = src.nbytes();
    if (n == 0) return;
    activate();
    if (!dst_gpu && !src_gpu) {
      std::memcpy(dst.raw(), src.raw(), n);
    } else if (dst_gpu && src_gpu) {
      CUDA_CHECK(cudaMemcpyAsync(dst.raw(), src.raw(), n, cudaMemcpyDeviceToDevice, stream_.get()));
    } else if (dst_gpu) {
      CUDA_CHECK(cudaMemcpyAsync(dst.raw(), src.raw(), n, cudaMemcpyHostToDevice, stream_.get()));
      if (src.tier() == Tier::PinnedCpu) CUDA_CHECK(cudaStreamSynchronize(stream_.get()));
    } else {
      // Only the compute stream: a prefetch in flight on a transfer lane does not hold the host up.
      CUDA_CHECK(cudaMemcpyAsync(dst.raw(), src.raw(), n, cudaMemcpyDeviceToHost, stream_.get()));
      CUDA_CHECK(cudaStreamSynchronize(stream_.get()));
    }
  }

  Tensor alloc_host(Shape shape, DType dtype) override {
    const size_t nbytes = static_cast<size_t>(shape_numel(shape)) * dtype_size(dtype);
    return Tensor(allocate_pinned(nbytes), 0, std::move(shape), dtype);
  }

  // cudaMemcpyDefault: the pointers say the direction (unified addressing). A pageable host side
  // is staged by the driver; the offloading engine passes pinned buffers (alloc_host).
  void copy_async(Tensor& dst, const Tensor& src, Lane lane) override {
    if (!dst.defined() || !src.defined() || dst.dtype() != src.dtype() || dst.numel() != src.numel())
      throw InternalError("copy_async: " + (src.defined() ? src.describe() : std::string("undefined")) + " into " +
                          (dst.defined() ? dst.describe() : std::string("undefined")));
    if (src.nbytes() == 0) return;
    activate();
    CUDA_CHECK(cudaMemcpyAsync(dst.raw(), src.raw(), src.nbytes(), cudaMemcpyDefault, lane_stream(lane)));
  }

  std::shared_ptr<Fence> record(Lane lane) override {
    activate();
    auto f = std::make_shared<CudaFence>();
    CUDA_CHECK(cudaEventRecord(f->event.get(), lane_stream(lane)));
    return f;
  }

  void wait(Lane lane, const std::shared_ptr<Fence>& fence) override {
    if (!fence) return;
    activate();
    CUDA_CHECK(cudaStreamWaitEvent(lane_stream(lane), fence_event(fence), 0));
  }

  // Polled, so that a device that stops answering is a DeviceError after `deadline`, not a hang.
  void host_wait(const std::shared_ptr<Fence>& fence, std::chrono::milliseconds deadline,
                 const std::string& what) override {
    if (!fence) return;
    const auto start = std::chrono::steady_clock::now();
    for (int polls = 0;; ++polls) {
      const cudaError_t e = cudaEventQuery(fence_event(fence));
      if (e == cudaSuccess) return;
      if (e != cudaErrorNotReady) CUDA_CHECK(e);
      if (std::chrono::steady_clock::now() - start > deadline)
        throw DeviceError(what + ": the GPU did not finish within " +
                          std::to_string(std::chrono::duration_cast<std::chrono::seconds>(deadline).count()) + " s");
      if (polls < 1000)
        std::this_thread::yield();
      else
        std::this_thread::sleep_for(std::chrono::microseconds(20));
    }
  }

  void on_lane(Lane lane, std::function<void()> fn) override {
    activate();
    auto* owned = new std::function<void()>(std::move(fn));
    const cudaError_t e = cudaLaunchHostFunc(
        lane_stream(lane),
        [](void* p) {
          std::unique_ptr<std::function<void()>> f(static_cast<std::function<void()>*>(p));
          (*f)();
        },
        owned);
    if (e != cudaSuccess) delete owned;
    CUDA_CHECK(e);
  }

  std::optional<uint64_t> free_memory() const override {
    CUDA_CHECK(cudaSetDevice(device_));
    size_t free = 0, total = 0;
    CUDA_CHECK(cudaMemGetInfo(&free, &total));
    return free;
  }

  std::optional<uint64_t> peak_memory() const override { return peak_device_bytes(device_); }
  void reset_peak_memory() override { reset_peak_device_bytes(device_); }
  void set_memory_limit(std::optional<uint64_t> bytes) override { set_device_memory_limit(device_, bytes.value_or(0)); }

  void synchronize() override {
    activate();
    for (const Stream* s : {&load_, &store_, &stream_}) CUDA_CHECK(cudaStreamSynchronize(s->get()));
  }

  PeerConnector* peers(std::string& why_not) override {
    if (!peers_tried_) {
      peers_tried_ = true;
      peers_ = make_nccl_connector(device_, stream_.get(), peers_why_not_);
    }
    why_not = peers_why_not_;
    return peers_.get();
  }

  void linear(Tensor& out, const Tensor& x, const Tensor& w, const Tensor* bias) override {
    activate();
    cuda::linear(stream_.get(), cublas_.get(), workspace_, out, x, w, bias);
  }
  void linear_act(Tensor& out, const Tensor& x, const Tensor& w, const Tensor* bias, Act act) override {
    if (act != Act::Relu) return Backend::linear_act(out, x, w, bias, act);
    activate();
    cuda::linear(stream_.get(), cublas_.get(), workspace_, out, x, w, bias, /*relu=*/true);
  }
  void linear_stacked(Tensor& out, const Tensor& x, const Tensor& w, const Tensor* bias) override {
    activate();
    if (!cuda::linear_stacked(stream_.get(), cublas_.get(), workspace_, out, x, w, bias))
      Backend::linear_stacked(out, x, w, bias);
  }
  void linear_add_(Tensor& out, const Tensor& x, const Tensor& w, const Tensor* bias) override {
    activate();
    if (!cuda::linear_accumulate(stream_.get(), cublas_.get(), workspace_, out, x, w, bias))
      Backend::linear_add_(out, x, w, bias);
  }
  void rms_norm(Tensor& out, const Tensor& x, const Tensor& w, float eps) override {
    activate();
    cuda::rms_norm(stream_.get(), out, x, w, eps);
  }

  // The plan's eight int32 arrays are packed into one pinned staging buffer and sent in one copy;
  // the tensors handed back are views of one device buffer, which they keep alive.
  StepTensors upload_step(const StepPlan& plan) override {
    activate();
    const std::vector<int32_t>* parts[] = {&plan.token_ids, &plan.positions, &plan.row_slot, &plan.q_begin,
                                           &plan.q_len,     &plan.kv_len,    &plan.slot,     &plan.logit_rows};
    size_t total = 0;
    for (const auto* p : parts) total += p->size();
    const size_t nbytes = std::max<size_t>(total, 1) * sizeof(int32_t);
    // A block's GPU batches each upload a plan and all stay live through the step: each gets its own
    // device copy (from the stream-ordered pool) and the next of a ring of pinned staging buffers,
    // which is rewritten only once its last copy is done.
    if (staging_.empty())
      for (int i = 0; i < kStagingRing; ++i) staging_.push_back(std::make_unique<Staging>());
    Staging& st = *staging_[staging_next_++ % staging_.size()];
    CUDA_CHECK(cudaEventSynchronize(st.copied.get()));
    if (!st.host || st.host->nbytes() < nbytes) st.host = allocate_pinned(2 * nbytes);
    const std::shared_ptr<Storage> device = pool_.allocate(nbytes);
    auto* host = static_cast<int32_t*>(st.host->data());
    StepTensors out;
    out.plan = &plan;
    Tensor* views[] = {&out.token_ids, &out.positions, &out.row_slot, &out.q_begin,
                       &out.q_len,     &out.kv_len,    &out.slot,     &out.logit_rows};
    size_t at = 0;
    for (size_t i = 0; i < std::size(parts); ++i) {
      std::copy(parts[i]->begin(), parts[i]->end(), host + at);
      *views[i] = Tensor(device, at * sizeof(int32_t), {static_cast<int64_t>(parts[i]->size())}, DType::I32);
      at += parts[i]->size();
    }
    CUDA_CHECK(cudaMemcpyAsync(device->data(), host, total * sizeof(int32_t), cudaMemcpyHostToDevice, stream_.get()));
    CUDA_CHECK(cudaEventRecord(st.copied.get(), stream_.get()));
    return out;
  }

  void layer_norm(Tensor& out, const Tensor& x, const Tensor& w, const Tensor& b, float eps) override {
    activate();
    cuda::layer_norm(stream_.get(), out, x, w, b, eps);
  }
  void embedding(Tensor& out, const Tensor& table, const Tensor& ids, int32_t offset) override {
    activate();
    check_numel("embedding", "ids", ids, out.dim(0));
    cuda::embedding(stream_.get(), out, table, ids.data<int32_t>(), offset);
  }
  void add_(Tensor& x, const Tensor& y) override {
    activate();
    cuda::add_(stream_.get(), x, y);
  }
  void activation_(Tensor& x, Act act) override {
    activate();
    cuda::activation_(stream_.get(), x, act);
  }
  void silu_mul_(Tensor& gate, const Tensor& up) override {
    activate();
    cuda::silu_mul_(stream_.get(), gate, up);
  }
  void rope_(Tensor& x, int head_dim, const Tensor& positions, const Tensor& inv_freq) override {
    activate();
    check_numel("rope_", "positions", positions, x.dim(0));
    check_numel("rope_", "inv_freq", inv_freq, head_dim / 2);
    cuda::rope_(stream_.get(), x, head_dim, positions.data<int32_t>(), inv_freq.data<float>());
  }
  void write_kv(LayerKv& cache, const Tensor& k, const Tensor& v, const StepTensors& step) override {
    activate();
    cuda::write_kv(stream_.get(), cache.k, cache.v, cache.capacity, k, v, step.row_slot.data<int32_t>(),
                   step.positions.data<int32_t>());
  }
  void attention(Tensor& out, const Tensor& q, const LayerKv& cache, const StepTensors& step,
                 const kernels::AttentionShape& shape) override {
    activate();
    SeqMeta seqs;
    seqs.q_begin = step.q_begin.data<int32_t>();
    seqs.q_len = step.q_len.data<int32_t>();
    seqs.kv_len = step.kv_len.data<int32_t>();
    seqs.slot = step.slot.data<int32_t>();
    seqs.num_seqs = static_cast<int>(step.plan->num_seqs());
    seqs.max_q_len = step.plan->max_q_len();
    seqs.max_kv_len = step.plan->max_kv_len();
    cuda::AttentionShape s;
    s.n_heads = shape.n_heads;
    s.n_kv_heads = shape.n_kv_heads;
    s.head_dim = shape.head_dim;
    s.scale = shape.scale;
    s.alibi_slopes = shape.alibi_slopes.defined() ? shape.alibi_slopes.data<float>() : nullptr;
    cuda::attention(stream_.get(), workspace_, out, q, cache.k, cache.v, cache.capacity, seqs, s);
  }
  void gather_rows(Tensor& out, const Tensor& x, const Tensor& rows) override {
    activate();
    check_numel("gather_rows", "rows", rows, out.dim(0));
    cuda::gather_rows(stream_.get(), out, x, rows.data<int32_t>());
  }
  void argmax_rows(Tensor& ids, const Tensor& logits) override {
    activate();
    check_numel("argmax_rows", "ids", ids, logits.dim(0));
    cuda::argmax_rows(stream_.get(), ids.data<int32_t>(), logits);
  }
  void read_probe(const Tensor& x) override {
    activate();
    if (!probe_sink_.defined()) probe_sink_ = alloc({1}, DType::I32);
    cuda::read_probe(stream_.get(), x, static_cast<unsigned*>(probe_sink_.raw()));
  }

 private:
  // The calling thread may have another device current (several backends in one thread); the
  // stream belongs to device_, and launching on it from another device is an error. Every op calls
  // this, so it asks first: cudaGetDevice reads the runtime's per-thread state, while cudaSetDevice
  // goes to the driver (its context) even when the device is already current. No cached copy of
  // the current device: anything else in the thread (cuBLAS, another backend, the caller) may set it.
  void activate() {
    int current = -1;
    if (cudaGetDevice(&current) != cudaSuccess) {
      (void)cudaGetLastError();  // not this op's error: let cudaSetDevice report what is wrong
      current = -1;
    }
    if (current != device_) CUDA_CHECK(cudaSetDevice(device_));
  }

  cudaStream_t lane_stream(Lane lane) const {
    return lane == Lane::Load ? load_.get() : lane == Lane::Store ? store_.get() : stream_.get();
  }
  static cudaEvent_t fence_event(const std::shared_ptr<Fence>& f) {
    const auto* c = dynamic_cast<const CudaFence*>(f.get());
    if (!c) throw InternalError("a fence from another backend");
    return c->event.get();
  }

  int device_;
  std::string name_;
  Stream stream_;        // declared first: destroyed last, after the handle and the workspace
  Stream load_, store_;  // the transfer lanes
  CublasHandle cublas_;
  Workspace workspace_;
  DevicePool pool_;
  struct Staging {  // pinned staging for one step plan's upload
    std::shared_ptr<Storage> host;
    Event copied;  // its last copy to the device
  };
  static constexpr int kStagingRing = 8;
  std::vector<std::unique_ptr<Staging>> staging_;
  size_t staging_next_ = 0;
  Tensor probe_sink_;                     // read_probe's never-written word
  std::unique_ptr<PeerConnector> peers_;  // NCCL, made on the first ask
  std::string peers_why_not_;
  bool peers_tried_ = false;
};

}  // namespace

bool device_available() {
  int n = 0;
  // No driver (CI) or no visible device is an error code here, never an exception.
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();
    return false;
  }
  return n > 0;
}

std::unique_ptr<Backend> make_backend(int device) {
  int n = 0;
  const cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();
    throw UnsupportedError(std::string("no CUDA device is usable: ") + cudaGetErrorString(err));
  }
  if (device < 0 || device >= n)
    throw InvalidArgumentError("CUDA device " + std::to_string(device) + " does not exist (" + std::to_string(n) +
                               " visible)");
  return std::make_unique<CudaBackend>(device);
}

}  // namespace tiergen::kernels::cuda
