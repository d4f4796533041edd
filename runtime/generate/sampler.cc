#include "runtime/generate/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>

#include "runtime/core/error.h"

namespace tiergen {

void validate(const SamplingParams& p) {
  if (!(p.temperature > 0.0) || !std::isfinite(p.temperature))
    throw InvalidArgumentError("temperature must be > 0, got " + std::to_string(p.temperature) +
                               " (use greedy decoding for temperature 0)");
  if (p.top_k < 0) throw InvalidArgumentError("top-k must be >= 0, got " + std::to_string(p.top_k));
  if (!(p.top_p > 0.0 && p.top_p <= 1.0))
    throw InvalidArgumentError("top-p must be in (0, 1], got " + std::to_string(p.top_p));
  if (!(p.repetition_penalty > 0.0) || !std::isfinite(p.repetition_penalty))
    throw InvalidArgumentError("repetition penalty must be > 0, got " + std::to_string(p.repetition_penalty));
}

uint64_t Rng::next() {
  uint64_t x = (state_ += 0x9e3779b97f4a7c15ull);
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

double Rng::uniform() { return static_cast<double>(next() >> 11) * (1.0 / 9007199254740992.0); }

namespace {

int32_t argmax(std::span<const float> v) {
  return static_cast<int32_t>(std::max_element(v.begin(), v.end()) - v.begin());  // first maximum
}

}  // namespace

int32_t sample_next(std::span<float> logits, std::span<const int32_t> context, const SamplingParams& p, Rng& rng) {
  const int64_t V = static_cast<int64_t>(logits.size());
  if (V == 0) throw InternalError("sample_next: empty logits");
  if (p.repetition_penalty != 1.0) {
    const float pen = static_cast<float>(p.repetition_penalty);
    std::vector<int32_t> seen(context.begin(), context.end());
    std::sort(seen.begin(), seen.end());
    seen.erase(std::unique(seen.begin(), seen.end()), seen.end());
    for (int32_t id : seen)
      if (id >= 0 && id < V) logits[id] = logits[id] < 0 ? logits[id] * pen : logits[id] / pen;
  }
  if (!p.do_sample) return argmax(logits);

  const float inv_t = static_cast<float>(1.0 / p.temperature);
  for (float& x : logits) x *= inv_t;
  // Candidates sorted by logit, descending (stable: lower id first on ties).
  std::vector<int32_t> order(static_cast<size_t>(V));
  std::iota(order.begin(), order.end(), 0);
  size_t keep = order.size();
  if (p.top_k > 0 && p.top_k < V) {
    // HF keeps every token whose logit is >= the k-th largest.
    std::nth_element(order.begin(), order.begin() + (p.top_k - 1), order.end(),
                     [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
    const float kth = logits[order[p.top_k - 1]];
    keep = static_cast<size_t>(std::partition(order.begin(), order.end(), [&](int32_t a) { return logits[a] >= kth; }) -
                               order.begin());
  }
  std::stable_sort(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(keep),
                   [&](int32_t a, int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); });
  const float mx = logits[order[0]];
  std::vector<double> prob(keep);
  double total = 0;
  for (size_t i = 0; i < keep; ++i) total += prob[i] = std::exp(static_cast<double>(logits[order[i]] - mx));
  if (p.top_p < 1.0) {
    // Smallest prefix whose mass reaches top_p (at least one token).
    double cum = 0;
    size_t n = 0;
    while (n < keep) {
      cum += prob[n] / total;
      ++n;
      if (cum >= p.top_p) break;
    }
    keep = n;
    total = std::accumulate(prob.begin(), prob.begin() + static_cast<std::ptrdiff_t>(keep), 0.0);
  }
  double r = rng.uniform() * total;
  for (size_t i = 0; i < keep; ++i) {
    r -= prob[i];
    if (r < 0) return order[i];
  }
  return order[keep - 1];
}

}  // namespace tiergen
