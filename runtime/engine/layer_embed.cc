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

  std::vector<Tensor*> weights() override {
    std::vector<Tensor*> w = {&table_};
    if (pos_.defined()) w.push_back(&pos_);
    project_in_.collect(w);
    norm_.collect(w);
    return w;
  }

  void forward(ForwardContext& ctx, kernels::LayerKv*) override {
    kernels::Backend& be = *ctx.backend;
    const int64_t T = ctx.num_tokens();
    Tensor& h = ctx.hidden;  // (T, C)
    if (project_in_.w.defined()) {
      Tensor e = be.scratch({T, spec_.word_embed_proj_dim}, ctx.act_dtype);
      be.embedding(e, table_, ctx.step.token_ids, 0);
      project_in_.apply(be, h, e);
    } else {
      be.embedding(h, table_, ctx.step.token_ids, 0);
    }
    if (pos_.defined()) {  // positions were checked against the table by the generator
      Tensor pe = be.scratch({T, spec_.hidden_size}, ctx.act_dtype);
      be.embedding(pe, pos_, ctx.step.positions, static_cast<int32_t>(spec_.position_offset));
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
