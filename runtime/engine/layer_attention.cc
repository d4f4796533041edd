// Self-attention layer: norm (pre-LN) -> q, k, v -> RoPE -> append k, v to the cache -> causal
// attention (GQA, ALiBi) -> output projection -> residual add (-> norm, post-LN). With as many kv
// heads as query heads, q, k and v are one stacked projection (one batched GEMM on the GPU).
#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/lane_span.h"
#include "runtime/core/error.h"
#include "runtime/core/trace.h"
#include "runtime/engine/layer.h"

namespace tiergen {
namespace {

// BLOOM's fused query_key_value rows are (n_heads, 3, head_dim): gather them into separate q, k, v
// projections once at load time, so the forward pass is the same for every family.
Tensor gather_rows(const Tensor& fused, int64_t n_heads, int64_t head_dim, int which) {
  // weight (n_heads * 3 * head_dim, C) -> (n_heads * head_dim, C); bias (n_heads * 3 * head_dim) likewise
  Shape shape = fused.shape();
  shape[0] = n_heads * head_dim;
  Tensor out = Tensor::empty(shape, fused.dtype());
  const size_t row = static_cast<size_t>(fused.numel() / fused.dim(0)) * dtype_size(fused.dtype());
  for (int64_t h = 0; h < n_heads; ++h)
    std::memcpy(static_cast<char*>(out.raw()) + h * head_dim * row,
                static_cast<const char*>(fused.raw()) + (h * 3 + which) * head_dim * row, head_dim * row);
  return out;
}

class AttentionLayer final : public Layer {
 public:
  AttentionLayer(const ModelSpec& spec, const ArchitectureNames& names, int64_t index)
      : spec_(spec),
        names_(names.layer(index)),
        interleaved_(names.qkv_interleaved_per_head),
        stacked_(spec.num_kv_heads == spec.num_heads),
        index_(index) {}
  std::string name() const override { return "layers." + std::to_string(index_) + ".attention"; }
  int64_t decoder_index() const override { return index_; }
  int64_t kv_elems_per_token() const override { return 2 * spec_.num_kv_heads * spec_.head_dim; }

  void load(WeightSource& src) override {
    const int64_t C = spec_.hidden_size, D = spec_.head_dim;
    const int64_t q_out = spec_.num_heads * D, kv_out = spec_.num_kv_heads * D;
    norm_.load(src, names_.attn_norm, spec_, C);
    if (!names_.qkv.empty()) {
      if (!interleaved_) throw UnsupportedError(name() + ": fused qkv without the per-head layout");
      Tensor w = src.get(names_.qkv + ".weight", {q_out + 2 * kv_out, C});
      Tensor b = spec_.qkv_bias ? src.get(names_.qkv + ".bias", {q_out + 2 * kv_out}) : Tensor();
      Linear* parts[3] = {&q_, &k_, &v_};
      for (int i = 0; i < 3; ++i) {
        parts[i]->w = gather_rows(w, spec_.num_heads, D, i);
        if (b.defined()) parts[i]->b = gather_rows(b, spec_.num_heads, D, i);
      }
      if (stacked_) {
        qkv_.stack({q_.w, k_.w, v_.w}, b.defined() ? std::vector<Tensor>{q_.b, k_.b, v_.b} : std::vector<Tensor>{});
        q_ = k_ = v_ = Linear{};
      }
    } else if (stacked_) {
      qkv_.load(src, {names_.q, names_.k, names_.v}, q_out, C, spec_.qkv_bias);
    } else {
      q_.load(src, names_.q, q_out, C, spec_.qkv_bias);
      k_.load(src, names_.k, kv_out, C, spec_.qkv_bias);
      v_.load(src, names_.v, kv_out, C, spec_.qkv_bias);
    }
    o_.load(src, names_.o, C, q_out, spec_.o_bias);
  }
  size_t weight_bytes() const override {
    return norm_.bytes() + qkv_.bytes() + q_.bytes() + k_.bytes() + v_.bytes() + o_.bytes();
  }

  std::vector<Tensor*> weights() override {
    std::vector<Tensor*> w;
    for (WeightAndBias* p : std::initializer_list<WeightAndBias*>{&norm_, &qkv_, &q_, &k_, &v_, &o_}) p->collect(w);
    return w;
  }

  void forward(ForwardContext& ctx, kernels::LayerKv* kv) override {
    TIERGEN_CHECK(kv != nullptr, name() + " needs a KV cache");
    kernels::Backend& be = *ctx.backend;
    const int64_t T = ctx.num_tokens(), D = spec_.head_dim;
    const int64_t q_out = spec_.num_heads * D, kv_out = spec_.num_kv_heads * D;
    const DType dt = ctx.act_dtype;
    Tensor& h = ctx.hidden;  // (T, C)
    const Tensor x = spec_.pre_norm ? norm_(be, h, spec_) : h;
    Tensor q, k, v;  // (T, Hq*D), (T, Hkv*D), (T, Hkv*D)
    if (stacked_) {
      Tensor qkv = be.scratch({3, T, q_out}, dt);  // q, k, v one after another
      qkv_.apply(be, qkv, x);
      q = qkv.slice_rows(0, 1).reshape({T, q_out});
      k = qkv.slice_rows(1, 2).reshape({T, kv_out});
      v = qkv.slice_rows(2, 3).reshape({T, kv_out});
    } else {
      q = be.scratch({T, q_out}, dt);
      k = be.scratch({T, kv_out}, dt);
      v = be.scratch({T, kv_out}, dt);
      q_.apply(be, q, x);
      k_.apply(be, k, x);
      v_.apply(be, v, x);
    }
    if (spec_.position == PositionKind::Rope) {
      be.rope_(q, static_cast<int>(D), ctx.step.positions, ctx.rope_inv_freq);
      be.rope_(k, static_cast<int>(D), ctx.step.positions, ctx.rope_inv_freq);
    }
    kernels::AttentionShape shape;
    shape.n_heads = static_cast<int>(spec_.num_heads);
    shape.n_kv_heads = static_cast<int>(spec_.num_kv_heads);
    shape.head_dim = static_cast<int>(D);
    shape.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(D)));
    shape.alibi_slopes = ctx.alibi_slopes;
    Tensor attn = be.scratch({T, q_out}, dt);
    if (ctx.cache_backend && ctx.cache_backend != &be) {
      if (!send_to_host_cache(ctx, *kv, q, k, v, attn, shape)) return;  // finish() attends on the host
    } else {
      be.write_kv(*kv, k, v, ctx.step);
      be.attention(attn, q, *kv, ctx.step, shape);
    }
    project_out(ctx, attn);
  }

  // The decode attention forward() left: on the host, over the cache there, once q has crossed.
  void finish(ForwardContext& ctx, kernels::LayerKv* kv) override {
    if (!ctx.host || !ctx.host->pending) return;
    HostAttentionState& st = *ctx.host;
    kernels::Backend& be = *ctx.backend;
    const int64_t T = ctx.num_tokens(), q_out = spec_.num_heads * spec_.head_dim;
    const DType dt = ctx.act_dtype;
    {
      const trace::Span wait(trace::kHostAttention, "wait for queries");
      be.host_wait(st.stored, st.deadline, name() + ": copying queries and keys to host memory");
    }
    st.pending = false;
    for (Tensor& t : st.in_flight) t = Tensor();  // the copies are done: the device rows may go
    const Tensor qh = staged(st.q_staging, {T, q_out}, dt);
    Tensor out = Tensor::empty({T, q_out}, DType::F32);
    {
      const trace::Span span(trace::kHostAttention, name());
      ctx.cache_backend->attention(out, dt == DType::F32 ? qh : qh.to_f32(), *kv, ctx.cache_step, host_shape(ctx));
    }
    Tensor back = staged(st.out_staging, {T, q_out}, dt);
    if (dt == DType::F32)
      std::memcpy(back.raw(), out.raw(), out.nbytes());
    else
      kernels::convert_on_host(back, out);
    Tensor attn = be.scratch({T, q_out}, dt);
    // Queued behind this batch's compute; the staging is rewritten only after the next layer's
    // queries have crossed, which is after this copy.
    be.copy_async(attn, back, kernels::Lane::Compute);
    project_out(ctx, attn);
  }

 private:
  kernels::AttentionShape host_shape(const ForwardContext& ctx) const {
    kernels::AttentionShape shape;
    shape.n_heads = static_cast<int>(spec_.num_heads);
    shape.n_kv_heads = static_cast<int>(spec_.num_kv_heads);
    shape.head_dim = static_cast<int>(spec_.head_dim);
    shape.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(spec_.head_dim)));
    shape.alibi_slopes = ctx.cache_alibi_slopes;
    return shape;
  }

  // h (T, C) += the output projection of attn (T, Hq*D), then the post-LN norm.
  void project_out(ForwardContext& ctx, const Tensor& attn) const {
    kernels::Backend& be = *ctx.backend;
    Tensor& h = ctx.hidden;
    o_.apply_add(be, h, attn);
    if (!spec_.pre_norm) h = norm_(be, h, spec_);
  }

  // A view of `shape` at the start of a growable host staging buffer (pinned by the backend).
  static Tensor staged(const Tensor& buf, const Shape& shape, DType dt) {
    TIERGEN_CHECK(buf.nbytes() >= static_cast<size_t>(shape_numel(shape)) * dtype_size(dt), "host staging too small");
    return Tensor(buf.storage(), buf.offset_bytes(), shape, dt);
  }

  // The cache lives in host memory (ctx.cache_backend): each sequence's new key and value rows are
  // copied on the Store lane straight into its cache rows there, after the compute that made them.
  // A prefill (no sequence has cached tokens) then attends on the compute backend over a scratch
  // cache holding just those rows, since its queries are many: returns true, attn is done. A
  // decode step's few queries cross to the host instead (returns false: finish() attends there),
  // so the cache itself never crosses PCIe.
  bool send_to_host_cache(ForwardContext& ctx, kernels::LayerKv& kv, const Tensor& q, const Tensor& k,
                          const Tensor& v, Tensor& attn, const kernels::AttentionShape& shape) const {
    TIERGEN_CHECK(ctx.host != nullptr, name() + ": a KV cache in host memory needs the batch's host state");
    kernels::Backend& be = *ctx.backend;
    HostAttentionState& st = *ctx.host;
    const kernels::StepPlan& plan = ctx.plan;
    if (k.dtype() != kv.k.dtype())
      throw InternalError(name() + ": keys of " + std::string(dtype_name(k.dtype())) + " for a cache of " +
                          std::string(dtype_name(kv.k.dtype())));
    release_host_rows(be, st);  // the previous layer's rows, read by the Store lane until `stored`
    be.wait(kernels::Lane::Store, be.record(kernels::Lane::Compute));
    const kernels::LaneSpan span(be, kernels::Lane::Store, trace::kStore, name() + ": new keys and values to host");
    bool fresh = true;
    for (int64_t s = 0; s < plan.num_seqs(); ++s) {
      const int64_t n = plan.q_len[s], at = plan.slot[s] * kv.capacity + plan.kv_len[s] - n;
      for (auto [src, cache] : {std::pair{&k, &kv.k}, std::pair{&v, &kv.v}}) {
        Tensor dst = cache->slice_rows(at, at + n);
        be.copy_async(dst, src->slice_rows(plan.q_begin[s], plan.q_begin[s] + n), kernels::Lane::Store);
      }
      fresh = fresh && plan.kv_len[s] == n;
    }
    st.in_flight[0] = k;
    st.in_flight[1] = v;
    if (fresh) {
      st.stored = be.record(kernels::Lane::Store);
      int64_t slots = 0;
      for (int32_t slot : plan.slot) slots = std::max<int64_t>(slots, slot + 1);
      kernels::LayerKv scratch{be.scratch({slots * kv.capacity, k.dim(1)}, k.dtype()),
                               be.scratch({slots * kv.capacity, v.dim(1)}, v.dtype()), kv.capacity};
      be.write_kv(scratch, k, v, ctx.step);
      be.attention(attn, q, scratch, ctx.step, shape);
      return true;
    }
    grow(be, st.q_staging, q.nbytes());
    grow(be, st.out_staging, q.nbytes());
    Tensor qh = staged(st.q_staging, q.shape(), q.dtype());
    be.copy_async(qh, q, kernels::Lane::Store);
    st.in_flight[2] = q;
    st.stored = be.record(kernels::Lane::Store);
    st.pending = true;
    return false;
  }

  static void grow(kernels::Backend& be, Tensor& buf, size_t nbytes) {
    if (!buf.defined() || buf.nbytes() < nbytes) buf = be.alloc_host({static_cast<int64_t>(nbytes)}, DType::U8);
  }

  const ModelSpec& spec_;
  LayerNames names_;
  bool interleaved_;
  bool stacked_;  // q, k, v in qkv_ (as many kv heads as query heads), else in q_, k_, v_
  int64_t index_;
  Norm norm_;
  StackedLinear qkv_;
  Linear q_, k_, v_, o_;
};

}  // namespace

void release_host_rows(kernels::Backend& be, HostAttentionState& st) {
  if (!st.in_flight[0].defined()) return;
  be.wait(kernels::Lane::Compute, st.stored);
  for (Tensor& t : st.in_flight) t = Tensor();
}

std::unique_ptr<Layer> make_attention_layer(const ModelSpec& spec, const ArchitectureNames& names, int64_t index) {
  return std::make_unique<AttentionLayer>(spec, names, index);
}

}  // namespace tiergen
