// RAII owners of the CUDA resources a backend holds (as TensorRT-LLM's runtime does): device memory
// behind a Storage of Tier::Gpu, a stream, a cuBLAS handle. Destructors never throw; a release that
// fails at process teardown (the runtime already unloaded) is ignored, there is nobody to tell.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <memory>

#include "runtime/core/block_pool.h"
#include "runtime/core/tensor.h"

namespace tiergen::kernels::cuda {

// `nbytes` of device memory on `device` (cudaMalloc; uninitialised), freed with cudaFree when the
// last Tensor viewing it goes away. A failed allocation is an OutOfMemoryError naming the size and
// the device's free memory.
std::shared_ptr<Storage> allocate_device(size_t nbytes, int device);

// The most device memory this process has held from cudaMalloc at once on `device` (allocations
// through allocate_device and DevicePool), as FlexGen reports its peak GPU memory.
uint64_t peak_device_bytes(int device);
// Starts the high-water mark over from what is held now.
void reset_peak_device_bytes(int device);
// From now on an allocation that would take this process's cudaMalloc'ed bytes on `device` past
// `bytes` fails with OutOfMemoryError instead (0: no limit): what a --gpu-mem budget promises,
// also where the card has more.
void set_device_memory_limit(int device, uint64_t bytes);

// `nbytes` of page-locked host memory (cudaHostAlloc), Tier::PinnedCpu: the source of async H2D
// copies that the DMA engine reads while the host goes on. Freed with cudaFreeHost.
std::shared_ptr<Storage> allocate_pinned(size_t nbytes);

// A CUDA event without timing (the cheap kind), to order streams and to know when a copy is done.
class Event {
 public:
  Event();
  ~Event();
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  cudaEvent_t get() const { return event_; }

 private:
  cudaEvent_t event_ = nullptr;
};

// A non-blocking stream: it never synchronizes with the legacy default stream, so work queued by
// other libraries on stream 0 cannot serialise ours.
class Stream {
 public:
  explicit Stream(int device);
  ~Stream();
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  cudaStream_t get() const { return stream_; }

 private:
  cudaStream_t stream_ = nullptr;
};

// A cuBLAS handle bound to one stream, with reductions kept in the compute type (f32).
class CublasHandle {
 public:
  explicit CublasHandle(cudaStream_t stream);
  ~CublasHandle();
  CublasHandle(const CublasHandle&) = delete;
  CublasHandle& operator=(const CublasHandle&) = delete;
  cublasHandle_t get() const { return handle_; }

 private:
  cublasHandle_t handle_ = nullptr;
};

// Device memory for activations, reused across steps: a block freed by its last Tensor goes back to
// a free list keyed by its (rounded) size instead of to cudaFree, and the next request of that size
// takes it. Every step of a run asks for the same sizes, so after the first step of a block shape
// nothing is cudaMalloc'ed. Reuse is safe without events because the backend queues all work on one
// stream: a kernel that reads a block to be reused was queued before the kernel that overwrites it.
// Contents are uninitialised. When cudaMalloc fails, the cached blocks are released and it retries.
class DevicePool {
 public:
  explicit DevicePool(int device);
  std::shared_ptr<Storage> allocate(size_t nbytes) { return pool_.get(nbytes); }
  // Returns every cached block to the driver.
  void release_cached() { pool_.trim(); }
  uint64_t cached_bytes() const { return pool_.cached_bytes(); }

 private:
  BlockPool pool_;  // the free lists, over cudaMalloc / cudaFree on one device
};

// A grow-only device scratch buffer owned by one backend and used on its stream only. It grows to
// the largest request seen and is then reused, so after the first steps of a run no op allocates:
// nothing is cudaMalloc'ed inside the generation loop (docs/architecture.md, "Backends").
class Workspace {
 public:
  explicit Workspace(int device) : device_(device) {}
  // At least `nbytes` of device memory. When the buffer must grow, `stream` is drained first so no
  // queued kernel still reads the old one when it is freed.
  void* get(size_t nbytes, cudaStream_t stream);

 private:
  int device_;
  std::shared_ptr<Storage> buf_;
};

}  // namespace tiergen::kernels::cuda
