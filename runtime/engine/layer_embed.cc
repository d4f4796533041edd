// InputEmbed: token ids -> hidden (T, C). OPT: embedding at word_embed_proj_dim, project_in, plus
// learned positions (offset 2). BLOOM: embedding then LayerNorm. Others: the embedding alone.
#include "runtime/core/error.h"
#include "runtime/engine/layer.h"

namespace tiergen {
namespace {

class EmbedLayer final : public Layer {
 public:
  EmbedLayer(const ModelSpec& spec, const ArchitectureNames& names) : spec_(spec), names_(names) {}
  std::string name() const override { return "embed"; }

  void load(WeightSource& src) override {
    table_ = src.get(names_.embed + ".weight", {spec_.vocab_size, spec_.word_embed_proj_dim});
    if (!names_.pos_embed.empty())
      pos_ = src.get(names_.pos_embed + ".weight",
                     {spec_.max_position_embeddings + spec_.position_offset, spec_.hidden_size});
    if (!names_.project_in.empty())
      project_in_.load(src, names_.project_in, spec_.hidden_size, spec_.word_embed_proj_dim, false);
    if (!names_.embed_norm.empty()) norm_.load(src, names_.embed_norm, spec_, spec_.hidden_size);
  }
  size_t weight_bytes() const override {
    return table_.nbytes() + (pos_.defined() ? pos_.nbytes() : 0) + project_in_.bytes() + norm_.bytes();
  }
  const Tensor& table() const { return table_; }

  void forward(ForwardContext& ctx, LayerKvCache*) override {
    kernels::Backend& be = *ctx.backend;
    const int64_t T = ctx.num_tokens();
    Tensor& h = ctx.hidden;  // (T, C)
    if (project_in_.w.defined()) {
      Tensor e = be.alloc({T, spec_.word_embed_proj_dim}, DType::F32);
      be.embedding(e, table_, ctx.token_ids);
      project_in_.apply(be, h, e);
    } else {
      be.embedding(h, table_, ctx.token_ids);
    }
    if (pos_.defined()) {
      std::vector<int32_t> idx(static_cast<size_t>(T));
      for (int64_t t = 0; t < T; ++t) {
        const int64_t p = ctx.positions[t];
        if (p >= spec_.max_position_embeddings)
          throw InvalidArgumentError("position " + std::to_string(p) +
                                     " is past the model's max_position_embeddings (" +
                                     std::to_string(spec_.max_position_embeddings) + ")");
        idx[t] = static_cast<int32_t>(p + spec_.position_offset);
      }
      Tensor pe = be.alloc({T, spec_.hidden_size}, DType::F32);
      be.embedding(pe, pos_, idx);
      be.add_(h, pe);
    }
    if (norm_.w.defined()) h = norm_(be, h, spec_);
    if (ctx.observer) ctx.observer(0, h);
  }

 private:
  const ModelSpec& spec_;
  const ArchitectureNames& names_;
  Tensor table_, pos_;
  Linear project_in_;
  Norm norm_;
};

}  // namespace

std::unique_ptr<Layer> make_embed_layer(const ModelSpec& spec, const ArchitectureNames& names) {
  return std::make_unique<EmbedLayer>(spec, names);
}

}  // namespace tiergen
