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

  void forward(ForwardContext& ctx, LayerKvCache*) override {
    kernels::Backend& be = *ctx.backend;
    const int64_t T = ctx.num_tokens(), E = spec_.word_embed_proj_dim;
    Tensor h = ctx.hidden;  // (T, C)
    if (norm_.w.defined()) h = norm_(be, h, spec_);
    if (project_out_.w.defined()) {
      Tensor p = be.alloc({T, E}, DType::F32);
      project_out_.apply(be, p, h);
      h = p;
    }
    if (ctx.observer) ctx.observer(spec_.num_layers, h);
    const int64_t R = static_cast<int64_t>(ctx.logit_rows.size());
    Tensor rows = be.alloc({R, E}, DType::F32);  // (R, E): the rows that need logits
    for (int64_t r = 0; r < R; ++r) {
      const int64_t src_row = ctx.logit_rows[r];
      TIERGEN_CHECK(src_row >= 0 && src_row < T, "logit row out of range");
      Tensor dst = rows.slice_rows(r, r + 1);
      be.copy(dst, h.slice_rows(src_row, src_row + 1));
    }
    ctx.logits = be.alloc({R, spec_.vocab_size}, DType::F32);
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
