// --percent, --gpu-batch-size, --num-gpu-batches, --offload-dir, --no-overlap, --pin-weight,
// --cpu-cache-compute: FlexGen's offloading flags, made into an OffloadPolicy and the objects that
// carry it out: the weight stream (stage/weight_stream.h), the KV cache's disk share
// (stage/kv_stream.h), the host attention backend, and the block schedule (stage/gpu_batch.h).
// What a policy can ask for that is not built is refused by name, never silently ignored.
#include <cstdlib>
#include <string>

#include "launch/commands.h"
#include "launch/flag_checks.h"
#include "runtime/core/error.h"
#include "runtime/core/trace.h"

namespace tiergen::cli {

void OffloadOptions::add_flags(CLI::App& cmd, bool runs) {
  cmd.add_option("--percent", percent,
                 "Placement, FlexGen's six percentages: weights on GPU, on CPU; KV cache on GPU, on CPU; "
                 "activations on GPU, on CPU (the rest of each on disk), e.g. 0 50 100 0 100 0")
      ->expected(6)
      ->allow_extra_args(false);
  cmd.add_option("--gpu-batch-size", gpu_batch_size,
                 "Sequences per GPU batch; a block is gpu-batch-size x num-gpu-batches sequences, run layer "
                 "by layer so each layer's weights are brought in once per block (replaces --batch-size)")
      ->check(integer_in(1, 1 << 20));
  cmd.add_option("--num-gpu-batches", num_gpu_batches, "GPU batches per block (default 1)")
      ->check(integer_in(1, 1 << 20));
  cmd.add_option("--offload-dir", offload_dir,
                 "Folder for what is placed on disk (a private subfolder is made in it and removed at the end; "
                 "default: $TMPDIR or /tmp)");
  cmd.add_flag("--cpu-cache-compute", cpu_cache_compute,
               "With --device cuda and the KV cache on the CPU: decode attention runs on the CPU, where the "
               "cache is, so the cache never crosses PCIe");
  cmd.add_flag("!--no-overlap", overlap,
               "Read the next layer's weights and KV cache from disk only when they are needed");
  cmd.add_option("--pin-weight", pin_weight,
                 "With --device cuda: keep the weights' CPU share in pinned memory (1, the default: copied to "
                 "the GPU at the link's rate) or in pageable memory (0)")
      ->check(CLI::IsMember({0, 1}));
  if (!runs) return;
  cmd.add_option("--trace", trace_file,
                 "Write a Chrome/Perfetto trace of the run (one track per GPU stream, I/O thread and CPU "
                 "attention) to FILE; open it in ui.perfetto.dev. bench traces its last timed run");
}

TraceFile::TraceFile(const std::string& path) : on_(!path.empty()) {
  if (on_) trace::start(path);
}

void TraceFile::close() {
  if (!on_) return;
  on_ = false;
  trace::stop();
}

TraceFile::~TraceFile() {
  try {
    close();  // a failed run's trace is still written: it shows where the run was
  } catch (const std::exception&) {
  }
}

std::optional<OffloadPolicy> OffloadOptions::policy(bool cuda) const {
  if (percent.empty()) return std::nullopt;
  OffloadPolicy p;
  set_percent(p, percent);
  p.overlap = overlap;
  p.cpu_cache_compute = cpu_cache_compute;
  p.pin_weight = pin_weight != 0;
  const char* tmp = std::getenv("TMPDIR");
  p.offload_dir = offload_dir.empty() ? (tmp && *tmp ? tmp : "/tmp") : offload_dir;
  if (cuda && p.activations.gpu != 100)
    throw UnsupportedError("--percent " + p.describe() +
                           ": on --device cuda the activations are on the GPU for now (hg = 100)");
  if (cuda && p.cache.gpu != 100 && !(p.cache.cpu == 100 && p.cpu_cache_compute))
    throw UnsupportedError("--percent " + p.describe() +
                           ": on --device cuda the KV cache is all on the GPU (cg = 100) or all on the CPU with "
                           "--cpu-cache-compute (cc = 100) for now");
  if (p.activations.disk() > 0)
    throw UnsupportedError(
        "--percent: activations on disk are not supported yet (their GPU and CPU shares must add up to 100)");
  return p;
}

std::vector<int64_t> OffloadOptions::blocks(const std::vector<int64_t>& batches, bool batch_given) const {
  if (!gpu_batch_size) return batches;
  const int64_t block = *gpu_batch_size * num_gpu_batches;
  for (int64_t b : batches)
    if (batch_given && b != block)
      throw InvalidArgumentError("--batch-size " + std::to_string(b) + " and --gpu-batch-size " +
                                 std::to_string(*gpu_batch_size) + " x --num-gpu-batches " +
                                 std::to_string(num_gpu_batches) + " = " + std::to_string(block) +
                                 " disagree: give one of them");
  return {block};
}

int64_t OffloadOptions::gpu_batch(int64_t block) const {
  return gpu_batch_size ? *gpu_batch_size : (block + num_gpu_batches - 1) / num_gpu_batches;
}

LayerLoaded OffloadOptions::Active::on_loaded() const {
  if (!weights) return {};
  return [w = weights.get()](size_t index, Layer& layer) { w->adopt(index, layer); };
}

OffloadOptions::Active OffloadOptions::prepare(const OffloadPolicy& p, kernels::Backend& backend,
                                               const ComputePlacement& compute) const {
  Active a;
  const bool gpu = compute.tier == Tier::Gpu;
  if (p.weights.disk() > 0 || p.cache.disk() > 0) a.dir = std::make_unique<io::OffloadDir>(p.offload_dir);
  // On a CPU what is not on disk is already where it computes; on a GPU what is not on the GPU streams.
  if (gpu ? p.weights.gpu < 100 : p.weights.disk() > 0)
    a.weights = std::make_unique<WeightStream>(backend, gpu ? std::optional<DType>(compute.weights) : std::nullopt,
                                               p.weights, a.dir.get(), p.overlap);
  if (a.weights) a.weights->pin_host_weights(p.pin_weight);
  return a;
}

void OffloadOptions::attach(const OffloadPolicy& p, Active& a, Stage& stage) const {
  if (a.weights) {
    a.weights->finish();
    stage.set_weight_stream(a.weights.get());
  }
  if (stage.backend().kind() == kernels::DeviceKind::Cuda && p.cache.cpu == 100) {
    a.host = kernels::make_cpu_backend();
    stage.set_cache_backend(a.host.get());
  }
  if (p.cache.disk() > 0) {
    a.cache = std::make_unique<KvStream>(stage.kv_widths(), stage.dtypes().kv_cache, p.cache, *a.dir, p.overlap);
    stage.set_kv_stream(a.cache.get());
  }
}

}  // namespace tiergen::cli
