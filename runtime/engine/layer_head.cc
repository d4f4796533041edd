// OutputHead: final norm (when the model has one), project_out (OPT-350m), then the LM head on the
// rows that need logits only (the last token of each sequence while generating).
#include "runtime/core/error.h"
#include "runtime/engine/layer.h"

namespace tiergen {
namespace {

class HeadLayer final : public Layer {
 public:
  HeadLayer(const ModelSpec& spec, const ArchitectureNames& names) : spec_(spec), names_(names) {}
  std::string name() const override { return "head"; }

  void load(WeightSource& src) override {
    if (!names_.final_norm.empty()) norm_.load(src, names_.final_norm, spec_, spec_.hidden_size);
    if (!names_.project_out.empty())
      project_out_.load(src, names_.project_out, spec_.word_embed_proj_dim, spec_.hidden_size, false);
    const Shape shape{spec_.vocab_size, spec_.word_embed_proj_dim};
    // Tied: HF ties lm_head to the input embedding even where a checkpoint also stores a copy.
    lm_head_ = src.get((spec_.tie_word_embeddings ? names_.embed : names_.lm_head) + ".weight", shape);
    tied_ = spec_.tie_word_embeddings;
  }
  // A tied head shares the embedding's bytes: count them once, in the embedding.
  size_t weight_bytes() const override {
    return norm_.bytes() + project_out_.bytes() + (tied_ ? 0 : lm_head_.nbytes());
  }

  std::vector<Tensor*> weights() override {
    std::vector<Tensor*> w;
    norm_.collect(w);
    project_out_.collect(w);
    w.push_back(&lm_head_);
    return w;
  }

  void forward(ForwardContext& ctx, kernels::LayerKv*) override {
    kernels::Backend& be = *ctx.backend;
    const int64_t T = ctx.num_tokens(), E = spec_.word_embed_proj_dim;
    Tensor h = ctx.hidden;  // (T, C)
    if (norm_.w.defined()) h = norm_(be, h, spec_);
    if (project_out_.w.defined()) {
      Tensor p = be.scratch({T, E}, ctx.act_dtype);
      project_out_.apply(be, p, h);
      h = p;
    }
    if (ctx.observer) ctx.observer(spec_.num_layers, h);
    // The LM head runs on the rows that need logits only (R = sequences while generating).
    const int64_t R = static_cast<int64_t>(ctx.plan.logit_rows.size());
    Tensor rows = be.scratch({R, E}, ctx.act_dtype);  // (R, E)
    be.gather_rows(rows, h, ctx.step.logit_rows);
    ctx.logits = be.scratch({R, spec_.vocab_size}, DType::F32);  // f32 for the sampler
    be.linear(ctx.logits, rows, lm_head_, nullptr);
  }

 private:
  const ModelSpec& spec_;
  const ArchitectureNames& names_;
  Norm norm_;
  Linear project_out_;
  Tensor lm_head_;
  bool tied_ = false;
};

}  // namespace

std::unique_ptr<Layer> make_head_layer(const ModelSpec& spec, const ArchitectureNames& names) {
  return std::make_unique<HeadLayer>(spec, names);
}

}  // namespace tiergen
