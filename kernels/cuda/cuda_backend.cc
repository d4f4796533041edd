// The CUDA backend: one device, one non-blocking stream, one cuBLAS handle bound to that stream.
// Every op is queued on the stream and returns without waiting; copy() to host memory and
// synchronize() are the only calls that wait. Ops from kernels/cuda/*.cu (see ops.h).
#include "kernels/cuda/cuda_backend.h"

#include <cstring>
#include <string>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_handles.h"
#include "kernels/cuda/ops.h"
#include "runtime/core/error.h"

namespace tiergen::kernels::cuda {
namespace {

[[noreturn]] void not_yet(const char* op) {
  throw UnsupportedError(std::string(op) + " is not implemented on the CUDA backend yet");
}

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(int device)
      : device_(device), stream_(device), cublas_(stream_.get()), workspace_(device) {
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

  void synchronize() override {
    activate();
    CUDA_CHECK(cudaStreamSynchronize(stream_.get()));
  }

  void linear(Tensor& out, const Tensor& x, const Tensor& w, const Tensor* bias) override {
    activate();
    cuda::linear(stream_.get(), cublas_.get(), workspace_, out, x, w, bias);
  }
  void rms_norm(Tensor& out, const Tensor& x, const Tensor& w, float eps) override {
    activate();
    cuda::rms_norm(stream_.get(), out, x, w, eps);
  }

  // The remaining ops come with the next GPU issue, each with its conformance cases.
  void layer_norm(Tensor&, const Tensor&, const Tensor&, const Tensor&, float) override {
    not_yet("layer_norm");
  }
  void embedding(Tensor&, const Tensor&, std::span<const int32_t>) override { not_yet("embedding"); }
  void add_(Tensor&, const Tensor&) override { not_yet("add_"); }
  void activation_(Tensor&, Act) override { not_yet("activation_"); }
  void silu_mul_(Tensor&, const Tensor&) override { not_yet("silu_mul_"); }
  void rope_(Tensor&, int, std::span<const int64_t>, std::span<const float>) override { not_yet("rope_"); }
  void write_rows(Tensor&, int64_t, const Tensor&) override { not_yet("write_rows"); }
  void attention(Tensor&, const Tensor&, std::span<const AttentionSeq>, const AttentionParams&) override {
    not_yet("attention");
  }

 private:
  // The calling thread may have another device current (several backends in one thread); the
  // stream belongs to device_, and launching on it from another device is an error. cudaSetDevice
  // to the already-current device costs nanoseconds.
  void activate() { CUDA_CHECK(cudaSetDevice(device_)); }

  int device_;
  std::string name_;
  Stream stream_;  // declared first: destroyed last, after the handle and the workspace
  CublasHandle cublas_;
  Workspace workspace_;
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
    throw InvalidArgumentError("CUDA device " + std::to_string(device) + " does not exist (" +
                               std::to_string(n) + " visible)");
  return std::make_unique<CudaBackend>(device);
}

}  // namespace tiergen::kernels::cuda
