// --percent, --offload-dir, --no-overlap: FlexGen's offloading flags. Built so far: the weights'
// share on disk with CPU compute (stage/weight_stream.h). Everything else a policy can ask for is
// refused by name until it is built, never silently ignored.
#include <cstdlib>

#include "launch/commands.h"
#include "runtime/core/error.h"

namespace tiergen::cli {

void OffloadOptions::add_flags(CLI::App& cmd) {
  cmd.add_option("--percent", percent,
                 "Placement, FlexGen's six percentages: weights on GPU, on CPU; KV cache on GPU, on CPU; "
                 "activations on GPU, on CPU (the rest of each on disk), e.g. 0 50 100 0 100 0")
      ->expected(6)
      ->allow_extra_args(false);
  cmd.add_option("--offload-dir", offload_dir,
                 "Folder for what is placed on disk (a private subfolder is made in it and removed at the end; "
                 "default: $TMPDIR or /tmp)");
  cmd.add_flag("!--no-overlap", overlap, "Read the next layer's weights from disk only when it is needed");
}

std::optional<OffloadPolicy> OffloadOptions::policy(bool cuda) const {
  if (percent.empty()) return std::nullopt;
  OffloadPolicy p;
  set_percent(p, percent);
  p.overlap = overlap;
  const char* tmp = std::getenv("TMPDIR");
  p.offload_dir = offload_dir.empty() ? (tmp && *tmp ? tmp : "/tmp") : offload_dir;
  const bool all_gpu = p.weights.gpu == 100 && p.cache.gpu == 100 && p.activations.gpu == 100;
  if (cuda && !all_gpu)
    throw UnsupportedError("--percent " + p.describe() +
                           ": on --device cuda everything is on the GPU for now (100 0 100 0 100 0); offloading "
                           "weights from the CPU or disk works with --device cpu");
  if (p.cache.disk() > 0 || p.activations.disk() > 0)
    throw UnsupportedError(
        "--percent: the KV cache and activations on disk are not supported yet (their GPU and "
        "CPU shares must add up to 100)");
  return p;
}

OffloadOptions::Active OffloadOptions::attach(const OffloadPolicy& p, const Model& model, Stage& stage) const {
  Active a;
  if (p.weights.disk() <= 0) return a;  // every weight in memory: nothing to stream
  a.dir = std::make_unique<io::OffloadDir>(p.offload_dir);
  a.stream = std::make_unique<WeightStream>(model, 0, model.layers().size(), p.weights, *a.dir, p.overlap);
  stage.set_weight_stream(a.stream.get());
  return a;
}

}  // namespace tiergen::cli
