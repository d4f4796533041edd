#include "runtime/engine/model.h"

#include <algorithm>
#include <map>
#include <utility>

#include "runtime/core/error.h"

namespace tiergen {
namespace {

// config.json's layer count against the checkpoint, before any per-layer structure is built: a
// config that claims more layers than the checkpoint holds is named here, not after allocating them.
void check_layer_count(const ModelSpec& spec, const ArchitectureNames& names, const WeightSource& weights,
                       const std::filesystem::path& config) {
  auto has_layer = [&](int64_t i) { return weights.contains(names.layer(i).o + ".weight"); };
  if (has_layer(spec.num_layers - 1)) return;
  int64_t present = 0;  // num_layers is bounded by the config parser, so this loop is short
  while (present < spec.num_layers && has_layer(present)) ++present;
  throw FormatError(config.string() + ": the config says " + std::to_string(spec.num_layers) +
                    " decoder layers, but the checkpoint in '" + weights.describe() + "' holds " +
                    std::to_string(present) + " (no '" + names.layer(present).o + ".weight')");
}

}  // namespace

Model::Model(const ModelSpec& spec, WeightSource& weights, const LayerLoaded& on_loaded, LayerSpan span)
    : spec_(spec), names_(architecture_names(spec_)), source_(weights.describe()) {
  layers_ = build_layers(spec_, names_);
  span_ = {std::min(span.begin, layers_.size()), std::min(span.end, layers_.size())};
  if (span_.begin >= span_.end)
    throw InvalidArgumentError("layers [" + std::to_string(span.begin) + ", " + std::to_string(span.end) +
                               ") hold none of the model's " + std::to_string(layers_.size()) + " layers");
  for (size_t i = span_.begin; i < span_.end; ++i) {
    layers_[i]->load(weights);
    if (on_loaded) on_loaded(i, *layers_[i]);
  }
}

std::unique_ptr<Model> Model::load(const std::filesystem::path& dir, const LayerLoaded& on_loaded, LayerSpan span) {
  if (!std::filesystem::is_directory(dir))
    throw NotFoundError("model folder '" + dir.string() + "' does not exist or is not a directory");
  ModelSpec spec = load_model_config(dir / "config.json");
  auto weights = checkpoint_weights(Checkpoint::open(dir));
  check_layer_count(spec, architecture_names(spec), *weights, dir / "config.json");
  return std::make_unique<Model>(spec, *weights, on_loaded, span);
}

std::unique_ptr<Model> Model::dummy(const ModelSpec& spec, DType dtype, uint64_t seed, const LayerLoaded& on_loaded,
                                    LayerSpan span) {
  auto weights = dummy_weights(dtype, seed);
  return std::make_unique<Model>(spec, *weights, on_loaded, span);
}

void Model::place(kernels::Backend& be, DType dtype) {
  std::map<std::pair<const void*, DType>, Tensor> placed;  // by source bytes: tied weights upload once
  for (auto& layer : layers_)
    for (Tensor* w : layer->weights()) {
      if (!w->defined()) continue;  // a layer another stage loads
      auto [it, fresh] = placed.try_emplace({w->raw(), w->dtype()});
      if (fresh) it->second = be.upload(*w, dtype);
      *w = it->second;
    }
  be.synchronize();
}

size_t Model::weight_bytes() const {
  size_t n = 0;
  for (const auto& layer : layers_) n += layer->weight_bytes();
  return n;
}

}  // namespace tiergen
