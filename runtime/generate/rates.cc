#include "runtime/generate/rates.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <exception>
#include <thread>
#include <vector>

#include "runtime/engine/weights.h"
#include "runtime/io/disk_file.h"

namespace tiergen {
namespace {

using Clock = std::chrono::steady_clock;

// The best rate (units per second) of `trials` timings, each of `op` repeated until at least
// `min_seconds` passed; `units` per call of op.
template <typename Op>
double best_rate(kernels::Backend& be, Op op, double units, int trials, double min_seconds) {
  op();  // first call: kernels loaded, algorithms chosen, pages touched
  be.synchronize();
  double best = 0;
  for (int t = 0; t < trials; ++t) {
    int calls = 0;
    const auto t0 = Clock::now();
    double elapsed = 0;
    do {
      op();
      ++calls;
      be.synchronize();
      elapsed = std::chrono::duration<double>(Clock::now() - t0).count();
    } while (elapsed < min_seconds);
    best = std::max(best, units * calls / elapsed);
  }
  return best;
}

}  // namespace

double measure_disk_read(const std::string& dir, uint64_t bytes, size_t block, int trials, int readers) {
  block = io::round_up_direct(block);
  readers = std::max(readers, 1);
  const uint64_t blocks = std::max<uint64_t>(bytes / block, static_cast<uint64_t>(readers));
  bytes = blocks * block;
  const std::string path = dir + "/rates.disk-probe." + std::to_string(::getpid());
  // Removed however the probe ends (the offload folder's own cleanup covers a signal).
  struct Remove {
    const std::string& p;
    ~Remove() { ::unlink(p.c_str()); }
  } remove{path};
  io::DiskFile f(path);
  std::vector<io::AlignedBuffer> bufs;
  for (int r = 0; r < readers; ++r) bufs.emplace_back(block);
  std::memset(bufs[0].data(), 0x5a, block);  // written data, not a sparse file's holes
  for (uint64_t at = 0; at < bytes; at += block) f.write(at, bufs[0].data(), block);
  // Reader r reads blocks r, r + readers, ...: `readers` requests in flight at once, as a disk
  // needs to reach its rate (one large O_DIRECT read is cut into requests the device serves in
  // parallel too, so the weight stream's one reader of whole tensors gets more than one small one).
  const auto read_share = [&](int r) {
    for (uint64_t b = static_cast<uint64_t>(r); b < blocks; b += static_cast<uint64_t>(readers))
      f.read(b * block, bufs[static_cast<size_t>(r)].data(), block);
  };
  double best = 0;
  for (int t = 0; t < trials; ++t) {
    const auto t0 = Clock::now();
    std::vector<std::exception_ptr> errors(static_cast<size_t>(readers));
    {
      std::vector<std::jthread> threads;
      for (int r = 1; r < readers; ++r)
        threads.emplace_back([&, r] {
          try {
            read_share(r);
          } catch (...) {
            errors[static_cast<size_t>(r)] = std::current_exception();
          }
        });
      read_share(0);
    }
    for (const auto& e : errors)
      if (e) std::rethrow_exception(e);
    const double s = std::chrono::duration<double>(Clock::now() - t0).count();
    best = std::max(best, static_cast<double>(bytes) / s);
  }
  return best;
}

DeviceRates measure_rates(kernels::Backend& be, DType activations, DType weights, bool offload,
                          const std::string& disk_dir) {
  const bool gpu = be.kind() == kernels::DeviceKind::Cuda;
  DeviceRates r;
  {
    // A square GEMM large enough to reach the device's peak: 8192^3 (1.1 TFLOP) on a GPU, 1024^3
    // on a CPU (its peak is reached far sooner, and a small CI host would take seconds per call).
    // The operands hold random values (the dummy weights' distribution), not zeros: a GPU's tensor
    // cores draw less power on zero operands and run at higher clocks, so a GEMM over zeros (what
    // alloc gives) times up to a fifth faster than one over a model's numbers on an H100, and a
    // bound from that rate is one no run could reach.
    const int64_t n = gpu ? 8192 : 1024;
    const auto values = dummy_weights(DType::F32, /*seed=*/1);
    const Tensor x = be.upload(values->get("rates.x", {n, n}), activations);
    const Tensor w = be.upload(values->get("rates.w", {n, n}), weights);
    Tensor out = be.scratch({n, n}, activations);
    r.gemm_flops = best_rate(
        be, [&] { be.linear(out, x, w, nullptr); }, 2.0 * static_cast<double>(n * n * n), 3, gpu ? 0.05 : 0.2);
  }
  {
    // Far larger than any cache: 2 GiB on a GPU where half its free memory allows, 512 MiB on a CPU.
    uint64_t bytes = gpu ? uint64_t{2} << 30 : uint64_t{512} << 20;
    if (const auto free = be.free_memory()) bytes = std::min<uint64_t>(bytes, *free / 2);
    bytes = std::max<uint64_t>(bytes / 16 * 16, 16);
    const Tensor buf = be.alloc({static_cast<int64_t>(bytes / 4)}, DType::F32);
    r.read_bytes = best_rate(
        be, [&] { be.read_probe(buf); }, static_cast<double>(bytes), 3, gpu ? 0.05 : 0.2);
  }
  if (offload && gpu) {  // the weights not resident on the GPU cross this link
    const int64_t bytes = int64_t{1} << 30;
    Tensor host = be.alloc_host({bytes}, DType::U8);
    Tensor dev = be.alloc({bytes}, DType::U8);
    r.link_bytes = best_rate(
        be, [&] { be.copy_async(dev, host, kernels::Lane::Load); }, static_cast<double>(bytes), 3, 0.1);
  }
  if (offload && gpu) {  // a GPU run's KV cache in host memory is read there
    auto cpu = kernels::make_cpu_backend();
    const Tensor buf = Tensor::empty({int64_t{1} << 28}, DType::F32);  // 1 GiB, pages touched
    r.host_read_bytes = best_rate(
        *cpu, [&] { cpu->read_probe(buf); }, static_cast<double>(buf.nbytes()), 3, 0.2);
  }
  if (!disk_dir.empty()) {  // weights read from disk each pass: 1 GiB on a GPU host, 256 MiB on a CPU
    // The disk's best rate, whatever the pattern: blocks of 64 MiB one at a time and four at once.
    // The weight stream reads whole tensors, which the kernel cuts into requests served in
    // parallel; one 64 MiB reader alone undercounts what that gets (2.0 GB/s against 2.4 on an
    // NVMe disk), and a bound below what a run reaches is no bound.
    const uint64_t bytes = gpu ? uint64_t{1} << 30 : uint64_t{256} << 20;
    r.disk_read_bytes = std::max(measure_disk_read(disk_dir, bytes, size_t{64} << 20, 2, 1),
                                 measure_disk_read(disk_dir, bytes, size_t{64} << 20, 2, 4));
  }
  be.reset_peak_memory();
  return r;
}

}  // namespace tiergen
