// The rates a roofline bound is computed from (runtime/policy/roofline.h), measured on the backend
// that runs the workload, in the same process, just before it: dense GEMM FLOP/s in the run's
// dtypes, and the memory read rate of a streaming read. Each is the best of several
// timed trials, so the bound is as tight as the device showed it can be.
#pragma once

#include <cstdint>
#include <string>

#include "kernels/backend.h"
#include "runtime/policy/roofline.h"

namespace tiergen {

// Takes about a second on a GPU, a few on a small CPU. Leaves the backend's peak memory where it
// found it (its buffers are freed, the high-water mark reset).
// The GEMM is timed as the run's linear layers call it: activations of `activations`, weights of
// `weights` (the same 16-bit type on a GPU; f32 activations over the checkpoint's type on a CPU).
// With `offload` on a GPU, its host link (1 GiB from pinned memory on the Load lane) and the host's memory
// read rate are timed too.
// With `disk_dir` (the run's offload folder, when weights live on disk there), the disk's read rate
// is timed too: a file written there and read back with O_DIRECT in large blocks, one at a time and
// four at once (the better rate counts), then removed. IoError when the folder cannot hold it.
DeviceRates measure_rates(kernels::Backend& backend, DType activations, DType weights, bool offload = false,
                          const std::string& disk_dir = {});

// The disk's read rate in `dir`, bytes/s: `bytes` written to a file there and read back with
// O_DIRECT in blocks of `block` bytes by `readers` threads at once, the best of `trials` passes;
// the file is removed. IoError (naming the file) when it cannot be written or read.
double measure_disk_read(const std::string& dir, uint64_t bytes, size_t block, int trials, int readers = 1);

}  // namespace tiergen
