#include "runtime/generate/generator.h"

#include <algorithm>
#include <chrono>

#include "runtime/core/error.h"

namespace tiergen {

const char* finish_reason_name(FinishReason r) {
  switch (r) {
    case FinishReason::Length:
      return "length";
    case FinishReason::Eos:
      return "eos";
    case FinishReason::Stop:
      return "stop";
  }
  return "?";
}

Generator::Generator(Stage& stage, const Tokenizer* tokenizer, int64_t max_batch)
    : stage_(stage), tokenizer_(tokenizer), max_batch_(max_batch) {
  if (max_batch <= 0) throw InvalidArgumentError("batch size must be positive, got " + std::to_string(max_batch));
}

std::vector<Result> Generator::generate(const std::vector<Request>& requests, GenerateStats* stats) {
  for (size_t i = 0; i < requests.size(); ++i) {
    const Request& r = requests[i];
    if (r.input_ids.empty()) throw InvalidArgumentError("prompt " + std::to_string(i) + " has no tokens");
    if (r.max_new_tokens < 0)
      throw InvalidArgumentError("max new tokens must be >= 0, got " + std::to_string(r.max_new_tokens));
    const ModelSpec& spec = stage_.model().spec();
    const int64_t total = static_cast<int64_t>(r.input_ids.size()) + r.max_new_tokens;
    // Learned position tables end: refuse up front rather than fail halfway through a batch.
    if (spec.position == PositionKind::Learned && total > spec.max_position_embeddings)
      throw InvalidArgumentError("prompt " + std::to_string(i) + ": " + std::to_string(r.input_ids.size()) +
                                 " prompt tokens + " + std::to_string(r.max_new_tokens) +
                                 " new tokens exceed the model's " + std::to_string(spec.max_position_embeddings) +
                                 " positions");
    for (int32_t id : r.input_ids)
      if (id < 0 || id >= spec.vocab_size)
        throw InvalidArgumentError("prompt " + std::to_string(i) + ": token id " + std::to_string(id) +
                                   " is outside the model's vocabulary [0, " + std::to_string(spec.vocab_size) + ")");
    if (!r.stop_strings.empty() && !tokenizer_)
      throw InvalidArgumentError("stop strings need a tokenizer to decode the output");
    validate(r.sampling);
  }
  std::vector<Result> out(requests.size());
  GenerateStats local;
  for (size_t b = 0; b < requests.size(); b += static_cast<size_t>(max_batch_))
    run_block(requests, b, std::min(requests.size(), b + static_cast<size_t>(max_batch_)), out, local);
  if (stats) *stats = local;
  return out;
}

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

}  // namespace

void Generator::run_block(const std::vector<Request>& requests, size_t begin, size_t end, std::vector<Result>& out,
                          GenerateStats& stats) {
  const int64_t n = static_cast<int64_t>(end - begin);
  int64_t capacity = 1;
  for (size_t i = begin; i < end; ++i)
    capacity =
        std::max<int64_t>(capacity, static_cast<int64_t>(requests[i].input_ids.size()) + requests[i].max_new_tokens);
  stage_.allocate_cache(std::max(stage_.cache_slots(), n), std::max(stage_.cache_capacity(), capacity));
  kernels::Backend& be = stage_.backend();
  const ModelSpec& spec = stage_.model().spec();

  struct Live {
    size_t req;
    int64_t slot;
    int64_t len;                   // tokens already in the cache
    std::vector<int32_t> context;  // prompt + generated
    Rng rng;
    bool done;
  };
  std::vector<Live> live;
  for (size_t i = begin; i < end; ++i) {
    out[i] = Result{};
    out[i].input_ids = requests[i].input_ids;
    live.push_back({i, static_cast<int64_t>(i - begin), 0, requests[i].input_ids, Rng(requests[i].sampling.seed),
                    requests[i].max_new_tokens == 0});
  }

  for (bool prefill = true;; prefill = false) {
    // Build one ragged step over the unfinished sequences: the whole prompt first, then the last token.
    ForwardContext ctx;
    std::vector<Live*> active;
    for (Live& l : live) {
      if (l.done) continue;
      const int64_t n_new = static_cast<int64_t>(l.context.size()) - l.len;
      const int64_t row = ctx.num_tokens();
      ctx.seqs.push_back({row, n_new, l.len, l.slot});
      for (int64_t t = l.len; t < l.len + n_new; ++t) {
        ctx.token_ids.push_back(l.context[static_cast<size_t>(t)]);
        ctx.positions.push_back(t);
      }
      ctx.logit_rows.push_back(row + n_new - 1);
      active.push_back(&l);
    }
    if (active.empty()) break;
    const auto t0 = Clock::now();
    ctx.hidden = be.alloc({ctx.num_tokens(), spec.hidden_size}, DType::F32);
    stage_.forward(ctx);
    Tensor logits = Tensor::empty(ctx.logits.shape(), DType::F32);  // (active, V) on the host
    be.copy(logits, ctx.logits);
    (prefill ? stats.prefill_seconds : stats.decode_seconds) += seconds_since(t0);
    if (prefill) stats.prompt_tokens += ctx.num_tokens();

    for (size_t a = 0; a < active.size(); ++a) {
      Live& l = *active[a];
      const Request& req = requests[l.req];
      Result& res = out[l.req];
      l.len = static_cast<int64_t>(l.context.size());
      std::span<float> row(logits.data<float>() + a * spec.vocab_size, static_cast<size_t>(spec.vocab_size));
      const int32_t next = sample_next(row, l.context, req.sampling, l.rng);
      l.context.push_back(next);
      res.output_ids.push_back(next);
      ++stats.generated_tokens;
      if (std::find(req.eos_ids.begin(), req.eos_ids.end(), next) != req.eos_ids.end()) {
        res.finish = FinishReason::Eos;
        l.done = true;
      }
      // Decoding the whole output costs O(length): do it every step only where something reads the
      // text every step (stop strings, streaming), else once, when the sequence ends.
      const bool last = l.done || static_cast<int64_t>(res.output_ids.size()) >= req.max_new_tokens;
      if (tokenizer_ && (last || !req.stop_strings.empty() || on_token))
        res.text = tokenizer_->decode(res.output_ids, /*skip_special_tokens=*/true);
      for (const std::string& stop : req.stop_strings) {
        const size_t at = res.text.find(stop);
        if (!stop.empty() && at != std::string::npos) {
          res.text.resize(at);
          res.finish = FinishReason::Stop;
          l.done = true;
          break;
        }
      }
      if (static_cast<int64_t>(res.output_ids.size()) >= req.max_new_tokens) l.done = true;
      if (on_token) on_token(l.req, res);
    }
  }
}

}  // namespace tiergen
