// MLP layer: norm (pre-LN) -> gated (SwiGLU: down(silu(gate x) * up x)) or plain
// (fc2(act(fc1 x))) -> residual add (-> norm, post-LN).
#include "runtime/core/error.h"
#include "runtime/engine/layer.h"

namespace tiergen {
namespace {

kernels::Act to_act(Activation a) {
  switch (a) {
    case Activation::Relu:
      return kernels::Act::Relu;
    case Activation::Gelu:
      return kernels::Act::Gelu;
    case Activation::GeluTanh:
      return kernels::Act::GeluTanh;
    case Activation::Silu:
      return kernels::Act::Silu;
  }
  throw InternalError("unknown activation");
}

class MlpLayer final : public Layer {
 public:
  MlpLayer(const ModelSpec& spec, const ArchitectureNames& names, int64_t index)
      : spec_(spec), names_(names.layer(index)), index_(index) {}
  std::string name() const override { return "layers." + std::to_string(index_) + ".mlp"; }
  int64_t decoder_index() const override { return index_; }

  void load(WeightSource& src) override {
    const int64_t C = spec_.hidden_size, F = spec_.intermediate_size;
    norm_.load(src, names_.mlp_norm, spec_, C);
    if (spec_.gated_mlp)
      gate_up_.load(src, {names_.fc1, names_.up}, F, C, spec_.mlp_bias);
    else
      fc1_.load(src, names_.fc1, F, C, spec_.mlp_bias);
    fc2_.load(src, names_.fc2, C, F, spec_.mlp_bias);
  }
  size_t weight_bytes() const override { return norm_.bytes() + gate_up_.bytes() + fc1_.bytes() + fc2_.bytes(); }

  std::vector<Tensor*> weights() override {
    std::vector<Tensor*> w;
    for (WeightAndBias* p : std::initializer_list<WeightAndBias*>{&norm_, &gate_up_, &fc1_, &fc2_}) p->collect(w);
    return w;
  }

  void forward(ForwardContext& ctx, kernels::LayerKv*) override {
    kernels::Backend& be = *ctx.backend;
    const int64_t T = ctx.num_tokens(), F = spec_.intermediate_size;
    Tensor& h = ctx.hidden;  // (T, C)
    const Tensor x = spec_.pre_norm ? norm_(be, h, spec_) : h;
    Tensor a;  // (T, F)
    if (spec_.gated_mlp) {
      if (spec_.activation != Activation::Silu) throw UnsupportedError(name() + ": gated MLP supports SiLU only");
      Tensor gate_up = be.scratch({2, T, F}, ctx.act_dtype);  // gate, then up
      gate_up_.apply(be, gate_up, x);
      a = gate_up.slice_rows(0, 1).reshape({T, F});
      be.silu_mul_(a, gate_up.slice_rows(1, 2).reshape({T, F}));
    } else {
      a = be.scratch({T, F}, ctx.act_dtype);
      fc1_.apply(be, a, x, to_act(spec_.activation));
    }
    fc2_.apply_add(be, h, a);  // h (T, C) += fc2 (a)
    if (!spec_.pre_norm) h = norm_(be, h, spec_);
    if (ctx.observer) ctx.observer(index_ + 1, h);
  }

 private:
  const ModelSpec& spec_;
  LayerNames names_;
  int64_t index_;
  Norm norm_;
  StackedLinear gate_up_;  // gated MLP: gate and up
  Linear fc1_, fc2_;       // fc1: plain MLP only
};

}  // namespace

std::unique_ptr<Layer> make_mlp_layer(const ModelSpec& spec, const ArchitectureNames& names, int64_t index) {
  return std::make_unique<MlpLayer>(spec, names, index);
}

}  // namespace tiergen
