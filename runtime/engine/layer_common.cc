#include <cmath>
#include <cstring>
#include <numbers>

#include "runtime/core/error.h"
#include "runtime/engine/layer.h"

namespace tiergen {

std::vector<std::unique_ptr<Layer>> build_layers(const ModelSpec& spec, const ArchitectureNames& names) {
  std::vector<std::unique_ptr<Layer>> layers;
  layers.push_back(make_embed_layer(spec, names));
  for (int64_t i = 0; i < spec.num_layers; ++i) {
    layers.push_back(make_attention_layer(spec, names, i));
    layers.push_back(make_mlp_layer(spec, names, i));
  }
  layers.push_back(make_head_layer(spec, names));
  return layers;
}

void Norm::load(WeightSource& src, const std::string& prefix, const ModelSpec& spec, int64_t dim) {
  w = src.get(prefix + ".weight", {dim});
  if (spec.norm_bias) b = src.get(prefix + ".bias", {dim});
}

void Norm::apply(kernels::Backend& be, Tensor& out, const Tensor& x, const ModelSpec& spec) const {
  if (spec.norm == NormKind::RmsNorm)
    be.rms_norm(out, x, w, static_cast<float>(spec.norm_eps));
  else
    be.layer_norm(out, x, w, b, static_cast<float>(spec.norm_eps));
}

Tensor Norm::operator()(kernels::Backend& be, const Tensor& x, const ModelSpec& spec) const {
  Tensor out = be.scratch(x.shape(), x.dtype());
  apply(be, out, x, spec);
  return out;
}

void Linear::load(WeightSource& src, const std::string& prefix, int64_t out, int64_t in, bool bias) {
  w = src.get(prefix + ".weight", {out, in});
  if (bias) b = src.get(prefix + ".bias", {out});
}

namespace {

// The tensors' rows one after another: parts of one dtype, each (rows_i, rest...) with the same rest.
Tensor stack_rows(const std::vector<Tensor>& parts) {
  TIERGEN_CHECK(!parts.empty(), "stack_rows: nothing to stack");
  Shape shape = parts.front().shape();
  int64_t rows = 0;
  for (const Tensor& p : parts) {
    TIERGEN_CHECK(p.dtype() == parts.front().dtype() && p.rank() == parts.front().rank(),
                  "stack_rows: parts of one dtype and rank");
    rows += p.dim(0);
  }
  shape[0] = rows;
  Tensor out = Tensor::empty(shape, parts.front().dtype());
  char* dst = static_cast<char*>(out.raw());
  for (const Tensor& p : parts) {
    std::memcpy(dst, p.raw(), p.nbytes());
    dst += p.nbytes();
  }
  return out;
}

}  // namespace

void StackedLinear::load(WeightSource& src, const std::vector<std::string>& prefixes, int64_t out, int64_t in,
                         bool bias) {
  std::vector<Tensor> ws, bs;
  for (const std::string& p : prefixes) {
    ws.push_back(src.get(p + ".weight", {out, in}));
    if (bias) bs.push_back(src.get(p + ".bias", {out}));
  }
  stack(ws, bs);
}

void StackedLinear::stack(const std::vector<Tensor>& weights, const std::vector<Tensor>& biases) {
  TIERGEN_CHECK(biases.empty() || biases.size() == weights.size(), "StackedLinear: a bias for every weight or none");
  w = stack_rows(weights);
  b = biases.empty() ? Tensor() : stack_rows(biases);
}

// transformers' rope init functions, in double and rounded once to f32.
std::vector<float> rope_inv_freq(const ModelSpec& spec, int64_t seq_len) {
  const int64_t dim = spec.head_dim;
  const RopeScaling& rs = spec.rope_scaling;
  double base = spec.rope_theta;
  if (rs.type == RopeScaling::Type::Dynamic) {
    const int64_t orig =
        rs.original_max_position_embeddings > 0 ? rs.original_max_position_embeddings : spec.max_position_embeddings;
    if (seq_len > orig)
      base *= std::pow(rs.factor * static_cast<double>(seq_len) / static_cast<double>(orig) - (rs.factor - 1.0),
                       static_cast<double>(dim) / static_cast<double>(dim - 2));
  }
  std::vector<float> out(static_cast<size_t>(dim / 2));
  for (int64_t i = 0; i < dim / 2; ++i) {
    // f32 exponent as transformers computes arange(0, dim, 2).float() / dim
    const float expo = static_cast<float>(2 * i) / static_cast<float>(dim);
    double inv = 1.0 / std::pow(base, static_cast<double>(expo));
    if (rs.type == RopeScaling::Type::Linear) {
      inv /= rs.factor;
    } else if (rs.type == RopeScaling::Type::Llama3) {
      const double orig = static_cast<double>(rs.original_max_position_embeddings);
      const double low_wavelen = orig / rs.low_freq_factor;
      const double high_wavelen = orig / rs.high_freq_factor;
      const double wavelen = 2.0 * std::numbers::pi / inv;
      if (wavelen > low_wavelen) {
        inv /= rs.factor;
      } else if (wavelen >= high_wavelen) {  // medium band: interpolate
        const double smooth = (orig / wavelen - rs.low_freq_factor) / (rs.high_freq_factor - rs.low_freq_factor);
        inv = (1.0 - smooth) * inv / rs.factor + smooth * inv;
      }
    }
    out[static_cast<size_t>(i)] = static_cast<float>(inv);
  }
  return out;
}

std::vector<float> alibi_slopes(int64_t n_heads) {
  // closest power of two below n: slopes base^1..base^p with base = 2^(-8/p); the remaining heads
  // take every other power of the next power of two's base.
  int64_t p = 1;
  while (p * 2 <= n_heads) p *= 2;
  std::vector<float> s;
  const double base = std::pow(2.0, -std::pow(2.0, -(std::log2(static_cast<double>(p)) - 3.0)));
  for (int64_t i = 1; i <= p; ++i) s.push_back(static_cast<float>(std::pow(base, static_cast<double>(i))));
  if (p != n_heads) {
    const double extra = std::pow(2.0, -std::pow(2.0, -(std::log2(static_cast<double>(2 * p)) - 3.0)));
    const int64_t remaining = std::min(p, n_heads - p);
    for (int64_t i = 0; i < remaining; ++i)
      s.push_back(static_cast<float>(std::pow(extra, static_cast<double>(1 + 2 * i))));
  }
  return s;
}

}  // namespace tiergen
