#include "kernels/cuda/cuda_handles.h"

#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <string>

#include "kernels/cuda/cuda_check.h"
#include "runtime/core/error.h"

namespace tiergen::kernels::cuda {
namespace {

// cudaFree needs no particular current device for memory from cudaMalloc, but keeping the owner's
// device current makes the release correct for any future pool or context-bound allocator too.
// Bytes this process holds from cudaMalloc, per device, and their high-water mark (peak_device_bytes).
constexpr int kMaxDevices = 64;
std::atomic<uint64_t> g_in_use[kMaxDevices];
std::atomic<uint64_t> g_peak[kMaxDevices];

std::atomic<uint64_t> g_limit[kMaxDevices];  // 0: none (set_device_memory_limit)

// Counts n bytes about to be taken from cudaMalloc; false (nothing counted) when they would pass
// the device's limit.
bool reserve(int device, size_t n) {
  if (device < 0 || device >= kMaxDevices) return true;
  const uint64_t now = g_in_use[device].fetch_add(n) + n;
  const uint64_t limit = g_limit[device].load();
  if (limit != 0 && now > limit) {
    g_in_use[device].fetch_sub(n);
    return false;
  }
  uint64_t peak = g_peak[device].load();
  while (now > peak && !g_peak[device].compare_exchange_weak(peak, now)) {
  }
  return true;
}

void unreserve(int device, size_t n) {
  if (device >= 0 && device < kMaxDevices) g_in_use[device].fetch_sub(n);
}

std::string over_limit(size_t n, int device) {
  const uint64_t in_use = device >= 0 && device < kMaxDevices ? g_in_use[device].load() : 0;
  return "allocating " + std::to_string(n) + " bytes on cuda:" + std::to_string(device) + " would pass its " +
         std::to_string(g_limit[device].load()) + "-byte limit (the --gpu-mem budget; " + std::to_string(in_use) +
         " bytes are in use): the memory plan underestimated this run, please report it";
}

void free_on(void* p, size_t n, int device) noexcept {
  unreserve(device, n);
  int current = -1;
  const bool switched =
      cudaGetDevice(&current) == cudaSuccess && current != device && cudaSetDevice(device) == cudaSuccess;
  (void)cudaFree(p);
  if (switched) (void)cudaSetDevice(current);
  (void)cudaGetLastError();  // a teardown error must not poison the next unrelated call
}

}  // namespace

std::shared_ptr<Storage> allocate_device(size_t nbytes, int device) {
  CUDA_CHECK(cudaSetDevice(device));
  void* p = nullptr;
  // cudaMalloc(0) may return null; one byte keeps every Storage's pointer valid and distinct.
  const size_t n = nbytes == 0 ? 1 : nbytes;
  if (!reserve(device, n)) throw OutOfMemoryError(over_limit(n, device));
  const cudaError_t err = cudaMalloc(&p, n);
  if (err != cudaSuccess) unreserve(device, n);
  if (err == cudaErrorMemoryAllocation) {
    (void)cudaGetLastError();  // clear it: an allocation failure is not sticky
    size_t free_b = 0, total_b = 0;
    (void)cudaMemGetInfo(&free_b, &total_b);
    throw OutOfMemoryError("cudaMalloc of " + std::to_string(nbytes) + " bytes on cuda:" + std::to_string(device) +
                           " failed: " + std::to_string(free_b) + " of " + std::to_string(total_b) + " bytes free");
  }
  CUDA_CHECK(err);
  return Storage::wrap(p, nbytes, Tier::Gpu, [p, n, device] { free_on(p, n, device); });
}

DevicePool::DevicePool(int device)
    : pool_(
          [device](size_t n) -> void* {
            void* p = nullptr;
            CUDA_CHECK(cudaSetDevice(device));
            if (!reserve(device, n)) return nullptr;  // the pool frees its cache and retries
            const cudaError_t err = cudaMalloc(&p, n);
            if (err != cudaSuccess) unreserve(device, n);
            if (err == cudaErrorMemoryAllocation) {
              (void)cudaGetLastError();  // not sticky: the pool frees its cache and retries
              return nullptr;
            }
            CUDA_CHECK(err);
            return p;
          },
          [device](void* p, size_t n) { free_on(p, n, device); }, Tier::Gpu,
          [device](size_t n) {
            if (device >= 0 && device < kMaxDevices && g_limit[device].load() != 0 &&
                g_in_use[device].load() + n > g_limit[device].load())
              return over_limit(n, device);
            size_t free_b = 0, total_b = 0;
            (void)cudaMemGetInfo(&free_b, &total_b);
            return "cudaMalloc of " + std::to_string(n) + " bytes on cuda:" + std::to_string(device) +
                   " failed: " + std::to_string(free_b) + " of " + std::to_string(total_b) + " bytes free";
          }) {}

uint64_t peak_device_bytes(int device) { return device >= 0 && device < kMaxDevices ? g_peak[device].load() : 0; }

void set_device_memory_limit(int device, uint64_t bytes) {
  if (device >= 0 && device < kMaxDevices) g_limit[device].store(bytes);
}

void reset_peak_device_bytes(int device) {
  if (device >= 0 && device < kMaxDevices) g_peak[device].store(g_in_use[device].load());
}

Stream::Stream(int device) {
  CUDA_CHECK(cudaSetDevice(device));
  CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
}

Stream::~Stream() {
  if (stream_) (void)cudaStreamDestroy(stream_);
}

CublasHandle::CublasHandle(cudaStream_t stream) {
  CUBLAS_CHECK(cublasCreate(&handle_));
  try {
    CUBLAS_CHECK(cublasSetStream(handle_, stream));
    // By default cuBLAS may reduce split-K partial sums in the output type (f16/bf16) for
    // mixed-precision GEMMs; the backend promises f32 accumulation, so forbid that.
    CUBLAS_CHECK(cublasSetMathMode(
        handle_, static_cast<cublasMath_t>(CUBLAS_DEFAULT_MATH | CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION)));
  } catch (...) {
    (void)cublasDestroy(handle_);
    throw;
  }
}

CublasHandle::~CublasHandle() {
  if (handle_) (void)cublasDestroy(handle_);
}

// Large buffers (the weights and KV cache a run keeps in host memory) are mapped with transparent
// huge pages where the kernel allows them, then pinned: the host attention reads the cache row by
// row across tens of GB, and 4 KiB pages would cost a TLB miss on nearly every row.
std::shared_ptr<Storage> allocate_pinned(size_t nbytes) {
  constexpr size_t kHuge = size_t{2} << 20;
  const auto fail = [nbytes](cudaError_t err) {
    (void)cudaGetLastError();
    return OutOfMemoryError("cannot pin " + std::to_string(nbytes) +
                            " bytes of host memory: " + cudaGetErrorString(err));
  };
  if (nbytes >= 16 * kHuge) {
    const size_t len = (nbytes + kHuge - 1) / kHuge * kHuge;
    void* p = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw OutOfMemoryError("cannot map " + std::to_string(nbytes) + " bytes of host memory");
    (void)madvise(p, len, MADV_HUGEPAGE);  // advice only: without THP the pages are small
    const cudaError_t err = cudaHostRegister(p, len, cudaHostRegisterDefault);
    if (err != cudaSuccess) {
      munmap(p, len);
      throw fail(err);
    }
    return Storage::wrap(p, nbytes, Tier::PinnedCpu, [p, len] {
      (void)cudaHostUnregister(p);
      munmap(p, len);
    });
  }
  void* p = nullptr;
  const cudaError_t err = cudaHostAlloc(&p, std::max<size_t>(nbytes, 1), cudaHostAllocDefault);
  if (err != cudaSuccess) throw fail(err);
  return Storage::wrap(p, nbytes, Tier::PinnedCpu, [p] { (void)cudaFreeHost(p); });
}

Event::Event() { CUDA_CHECK(cudaEventCreateWithFlags(&event_, cudaEventDisableTiming)); }
Event::~Event() {
  if (event_) (void)cudaEventDestroy(event_);
}

void* Workspace::get(size_t nbytes, cudaStream_t stream) {
  if (!buf_ || buf_->nbytes() < nbytes) {
    if (buf_) {
      CUDA_CHECK(cudaStreamSynchronize(stream));
      buf_.reset();
    }
    buf_ = allocate_device(nbytes, device_);
  }
  return buf_->data();
}

}  // namespace tiergen::kernels::cuda
