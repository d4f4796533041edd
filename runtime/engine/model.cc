#include "runtime/engine/model.h"

#include "runtime/core/error.h"

namespace tiergen {

Model::Model(const ModelSpec& spec, WeightSource& weights)
    : spec_(spec), names_(architecture_names(spec_)), source_(weights.describe()) {
  layers_ = build_layers(spec_, names_);
  for (auto& layer : layers_) layer->load(weights);
}

std::unique_ptr<Model> Model::load(const std::filesystem::path& dir) {
  if (!std::filesystem::is_directory(dir))
    throw NotFoundError("model folder '" + dir.string() + "' does not exist or is not a directory");
  ModelSpec spec = load_model_config(dir / "config.json");
  auto weights = checkpoint_weights(Checkpoint::open(dir));
  return std::make_unique<Model>(spec, *weights);
}

std::unique_ptr<Model> Model::dummy(const ModelSpec& spec, DType dtype, uint64_t seed) {
  auto weights = dummy_weights(dtype, seed);
  return std::make_unique<Model>(spec, *weights);
}

size_t Model::weight_bytes() const {
  size_t n = 0;
  for (const auto& layer : layers_) n += layer->weight_bytes();
  return n;
}

}  // namespace tiergen
