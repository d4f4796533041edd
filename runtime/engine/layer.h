// Layers of the generic decoder-only transformer and the context they run in. A model is the list
//   [InputEmbed, (Attention_i, Mlp_i) x L, OutputHead]
// and a Stage (stage/) runs a contiguous range of it. Every computation goes through the Backend.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "kernels/backend.h"
#include "runtime/engine/weights.h"
#include "runtime/model/architecture.h"
#include "runtime/model/spec.h"

namespace tiergen {

// What one GPU batch keeps between steps when its KV cache lives in host memory
// (--cpu-cache-compute): pinned staging for the queries crossing to the host and the attention
// output crossing back (pinned memory is slow to allocate, so the Stage keeps it across steps),
// and the device tensors that copies on the Store lane still read, with the fence after them.
struct HostAttentionState {
  Tensor q_staging, out_staging;             // U8 pinned buffers, grown as needed
  Tensor in_flight[3];                       // device q, k, v read by the Store lane's copies
  std::shared_ptr<kernels::Fence> stored;    // after those copies
  bool pending = false;                      // forward() left the attention to finish()
  std::chrono::milliseconds deadline = std::chrono::seconds(600);  // the longest wait for the copies
};

// Drops the device rows the Store lane may still read, after ordering the compute stream behind
// those copies: the device pool hands freed memory to later compute at once.
void release_host_rows(kernels::Backend& be, HostAttentionState& st);

struct ForwardContext {
  kernels::Backend* backend = nullptr;
  kernels::StepPlan plan;        // the step's layout, built once by the caller
  kernels::StepTensors step;     // the plan in the backend's tier, uploaded once by Stage::forward
  DType act_dtype = DType::F32;  // activations (and the residual stream) in this run
  Tensor rope_inv_freq;          // F32 (head_dim / 2) for this step (RoPE models), set by Stage::forward
  Tensor alibi_slopes;           // F32 (n_heads) (ALiBi models), set by Stage::forward
  Tensor hidden;                 // (T, C) act_dtype on the backend: the activations flowing through
  // Where the KV cache lives when that is not `backend` (a GPU run's cache in host memory,
  // --cpu-cache-compute): new keys and values are written there and decode attention runs there,
  // over the plan and ALiBi slopes in its tier. Null: the cache is in backend's tier.
  kernels::Backend* cache_backend = nullptr;
  kernels::StepTensors cache_step;
  Tensor cache_alibi_slopes;
  HostAttentionState* host = nullptr;  // this batch's host-side state, with cache_backend
  Tensor logits;                 // (logit_rows, V) F32, written by the output head
  // Optional: sees the hidden state after the embedding (index 0), after each decoder layer
  // (index i+1, after its MLP), and after the final norm (index num_layers, replacing the last).
  std::function<void(int64_t index, const Tensor& hidden)> observer;

  int64_t num_tokens() const { return plan.num_tokens(); }
};

struct WeightSpec {
  std::string name;
  Shape shape;
};

class Layer {
 public:
  virtual ~Layer() = default;
  virtual std::string name() const = 0;
  // Loads (views of) its weights from `src`; shapes come from the spec.
  virtual void load(WeightSource& src) = 0;
  // Bytes of the weights it holds.
  virtual size_t weight_bytes() const = 0;
  // Index of the decoder layer it belongs to, or -1 (embedding, head).
  virtual int64_t decoder_index() const { return -1; }
  // KV cache this layer needs per token (0 for layers without attention), in elements of K plus V.
  virtual int64_t kv_elems_per_token() const { return 0; }
  // Its weights, for placement: each is replaced by a copy in the compute tier and dtype
  // (Model::place). Tied weights appear once per layer that holds them; placement keeps them shared.
  virtual std::vector<Tensor*> weights() = 0;
  // Runs on ctx.hidden; `kv` is the layer's cache when kv_elems_per_token() > 0.
  virtual void forward(ForwardContext& ctx, kernels::LayerKv* kv) = 0;
  // Completes what forward() left to the host: attention over a KV cache in host memory waits for
  // its queries to cross, so the Stage runs forward() for every GPU batch of a layer and then
  // finish() for each, and the host attends to one batch while the GPU computes the others.
  virtual void finish(ForwardContext& ctx, kernels::LayerKv* kv) {
    (void)ctx;
    (void)kv;
  }
};

// The layer list of a model described by `spec` and `names`.
std::vector<std::unique_ptr<Layer>> build_layers(const ModelSpec& spec, const ArchitectureNames& names);

// Factories, one per layer kind (runtime/engine/layer_*.cc).
std::unique_ptr<Layer> make_embed_layer(const ModelSpec& spec, const ArchitectureNames& names);
std::unique_ptr<Layer> make_attention_layer(const ModelSpec& spec, const ArchitectureNames& names, int64_t index);
std::unique_ptr<Layer> make_mlp_layer(const ModelSpec& spec, const ArchitectureNames& names, int64_t index);
std::unique_ptr<Layer> make_head_layer(const ModelSpec& spec, const ArchitectureNames& names);

// Rotary frequencies (head_dim / 2) for sequences up to `seq_len` tokens (only "dynamic" scaling
// depends on it), per the config's rope_scaling.
std::vector<float> rope_inv_freq(const ModelSpec& spec, int64_t seq_len);
// ALiBi slopes (n_heads) as BLOOM defines them, including head counts that are not powers of 2.
std::vector<float> alibi_slopes(int64_t n_heads);

// A weight and its optional bias: the unit norms and projections hold.
struct WeightAndBias {
  Tensor w, b;
  size_t bytes() const { return (w.defined() ? w.nbytes() : 0) + (b.defined() ? b.nbytes() : 0); }
  void collect(std::vector<Tensor*>& out) {
    for (Tensor* t : {&w, &b})
      if (t->defined()) out.push_back(t);
  }
};

// A norm (RMSNorm or LayerNorm per spec) with its weights; shared by the layers.
struct Norm : WeightAndBias {
  void load(WeightSource& src, const std::string& prefix, const ModelSpec& spec, int64_t dim);
  void apply(kernels::Backend& be, Tensor& out, const Tensor& x, const ModelSpec& spec) const;
  // The normalised copy of x (M, C), in a new activation tensor of x's dtype.
  Tensor operator()(kernels::Backend& be, const Tensor& x, const ModelSpec& spec) const;
};

// A linear projection with optional bias: w (out, in), b (out).
struct Linear : WeightAndBias {
  void load(WeightSource& src, const std::string& prefix, int64_t out, int64_t in, bool bias);
  void apply(kernels::Backend& be, Tensor& y, const Tensor& x) const { be.linear(y, x, w, b.defined() ? &b : nullptr); }
  // y = act(x · w^T + b), fused where the backend can.
  void apply(kernels::Backend& be, Tensor& y, const Tensor& x, kernels::Act act) const {
    be.linear_act(y, x, w, b.defined() ? &b : nullptr, act);
  }
  // y += x · w^T + b: the projection and the residual add after it, fused where the backend can.
  void apply_add(kernels::Backend& be, Tensor& y, const Tensor& x) const {
    be.linear_add_(y, x, w, b.defined() ? &b : nullptr);
  }
};

// Projections of one input with the same shape, stacked into one weight (G * out, in) and bias
// (G * out): q, k and v of multi-head attention, gate and up of a gated MLP. One backend call
// computes them all (kernels::Backend::linear_stacked).
struct StackedLinear : WeightAndBias {
  // Loads the projections named by `prefixes`, each (out, in) with a bias (out) when `bias`.
  void load(WeightSource& src, const std::vector<std::string>& prefixes, int64_t out, int64_t in, bool bias);
  // Stacks projections already in memory (every weight (out, in), every bias (out) or none).
  void stack(const std::vector<Tensor>& weights, const std::vector<Tensor>& biases);
  // ys (G, M, out)[g] = x (M, in) · w_g^T + b_g.
  void apply(kernels::Backend& be, Tensor& ys, const Tensor& x) const {
    be.linear_stacked(ys, x, w, b.defined() ? &b : nullptr);
  }
};

}  // namespace tiergen
