// The CUDA backend: one device, one non-blocking stream, one cuBLAS handle bound to that stream.
// Every op is queued on the stream and returns without waiting; copy() to host memory and
// synchronize() are the only calls that wait. Ops from kernels/cuda/*.cu (see ops.h).
#include "kernels/cuda/cuda_backend.h"

#include <algorithm>
#include <cstring>
#include <string>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_handles.h"
#include "kernels/cuda/ops.h"
#include "runtime/core/error.h"

namespace tiergen::kernels::cuda {
namespace {

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(int device)
      : device_(device), stream_(device), cublas_(stream_.get()), workspace_(device), pool_(device) {
    cudaDeviceProp prop{};
    CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
    name_ = "cuda:" + std::to_string(device) + " " + prop.name;
  }

  // Queued work may still use the workspace or cuBLAS's buffers: drain before they are released.
  ~CudaBackend() override { (void)cudaStreamSynchronize(stream_.get()); }

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
      if (src.tier() == Tier::PinnedCpu) synchronize();
    } else {
      CUDA_CHECK(cudaMemcpyAsync(dst.raw(), src.raw(), n, cudaMemcpyDeviceToHost, stream_.get()));
      synchronize();
    }
  }

  std::optional<uint64_t> free_memory() const override {
    CUDA_CHECK(cudaSetDevice(device_));
    size_t free = 0, total = 0;
    CUDA_CHECK(cudaMemGetInfo(&free, &total));
    return free;
  }

  std::optional<uint64_t> peak_memory() const override { return peak_device_bytes(device_); }
  void reset_peak_memory() override { reset_peak_device_bytes(device_); }

  void synchronize() override {
    activate();
    CUDA_CHECK(cudaStreamSynchronize(stream_.get()));
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
  // the tensors handed back are views of one device buffer. Both buffers grow only. The staging
  // buffer is rewritten only after the previous step's copy has completed (its event).
  StepTensors upload_step(const StepPlan& plan) override {
    activate();
    const std::vector<int32_t>* parts[] = {&plan.token_ids, &plan.positions, &plan.row_slot, &plan.q_begin,
                                           &plan.q_len,     &plan.kv_len,    &plan.slot,     &plan.logit_rows};
    size_t total = 0;
    for (const auto* p : parts) total += p->size();
    const size_t nbytes = std::max<size_t>(total, 1) * sizeof(int32_t);
    CUDA_CHECK(cudaEventSynchronize(step_copied_.get()));
    if (!step_host_ || step_host_->nbytes() < nbytes) step_host_ = allocate_pinned(2 * nbytes);
    if (!step_device_ || step_device_->nbytes() < nbytes) {
      CUDA_CHECK(cudaStreamSynchronize(stream_.get()));  // queued kernels may still read the old one
      step_device_ = allocate_device(2 * nbytes, device_);
    }
    auto* host = static_cast<int32_t*>(step_host_->data());
    StepTensors out;
    out.plan = &plan;
    Tensor* views[] = {&out.token_ids, &out.positions, &out.row_slot, &out.q_begin,
                       &out.q_len,     &out.kv_len,    &out.slot,     &out.logit_rows};
    size_t at = 0;
    for (size_t i = 0; i < std::size(parts); ++i) {
      std::copy(parts[i]->begin(), parts[i]->end(), host + at);
      *views[i] = Tensor(step_device_, at * sizeof(int32_t), {static_cast<int64_t>(parts[i]->size())}, DType::I32);
      at += parts[i]->size();
    }
    CUDA_CHECK(
        cudaMemcpyAsync(step_device_->data(), host, total * sizeof(int32_t), cudaMemcpyHostToDevice, stream_.get()));
    CUDA_CHECK(cudaEventRecord(step_copied_.get(), stream_.get()));
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

  int device_;
  std::string name_;
  Stream stream_;  // declared first: destroyed last, after the handle and the workspace
  CublasHandle cublas_;
  Workspace workspace_;
  DevicePool pool_;
  Event step_copied_;                     // the last upload_step's copy
  std::shared_ptr<Storage> step_host_;    // pinned staging for the step metadata
  std::shared_ptr<Storage> step_device_;  // its device copy
  Tensor probe_sink_;                     // read_probe's never-written word
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
