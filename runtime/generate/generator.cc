#include "runtime/generate/generator.h"

#include <algorithm>
#include <chrono>
#include <deque>

#include "runtime/core/error.h"
#include "runtime/generate/run_plan.h"

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

Generator::Generator(Executor& executor, const Tokenizer* tokenizer, int64_t max_batch)
    : exec_(executor), tokenizer_(tokenizer), max_batch_(max_batch) {
  if (max_batch <= 0) throw InvalidArgumentError("batch size must be positive, got " + std::to_string(max_batch));
}

Generator::Generator(Stage& stage, const Tokenizer* tokenizer, int64_t max_batch, int64_t gpu_batch_size)
    : owned_(std::make_unique<LocalPipeline>(std::vector<Stage*>{&stage}, gpu_batch_size)),
      exec_(*owned_),
      tokenizer_(tokenizer),
      max_batch_(max_batch) {
  if (max_batch <= 0) throw InvalidArgumentError("batch size must be positive, got " + std::to_string(max_batch));
}

std::vector<Result> Generator::generate(const std::vector<Request>& requests, GenerateStats* stats) {
  validate_requests(exec_.spec(), requests, tokenizer_ != nullptr);
  if (requests.empty()) return {};
  // One cache for the whole run, sized by what its requests can use (the plan the CLI checked).
  const int waves = exec_.max_in_flight();
  const RunShape shape = run_shape(requests, max_batch_, waves);
  exec_.allocate_cache(shape.cache_slots, shape.cache_capacity, shape.block_slots);
  std::vector<Result> out(requests.size());
  GenerateStats local;
  const size_t per_wave = static_cast<size_t>(max_batch_) * static_cast<size_t>(waves);
  for (size_t b = 0; b < requests.size(); b += per_wave)
    run_wave(requests, b, std::min(requests.size(), b + per_wave), out, local);
  if (stats) *stats = local;
  return out;
}

namespace {

using Clock = std::chrono::steady_clock;

// Output text, special tokens skipped. Ids the tokenizer lacks (a model's vocabulary is often padded
// past the tokenizer's) decode to nothing, as in Hugging Face tokenizers, rather than ending the run.
std::string decode_output(const Tokenizer& tok, const std::vector<int32_t>& ids) {
  std::vector<int32_t> known;
  known.reserve(ids.size());
  for (int32_t id : ids)
    if (tok.id_to_token(id)) known.push_back(id);
  return tok.decode(known, /*skip_special_tokens=*/true);
}

}  // namespace

void Generator::run_wave(const std::vector<Request>& requests, size_t begin, size_t end, std::vector<Result>& out,
                         GenerateStats& stats) {
  const ModelSpec& spec = exec_.spec();

  struct Live {
    size_t req;
    int64_t slot;
    int64_t len;                   // tokens already in the cache
    std::vector<int32_t> context;  // prompt + generated
    Rng rng;
    bool done;
  };
  // A block of the wave: its sequences, and those of its step in flight.
  struct Block {
    std::vector<Live> live;
    std::vector<Live*> active;
    bool prefill = true, greedy = false;
    int64_t tokens = 0;  // of the step in flight
  };
  const size_t batch = static_cast<size_t>(max_batch_);
  std::vector<Block> blocks((end - begin + batch - 1) / batch);
  for (size_t i = begin; i < end; ++i) {
    out[i] = Result{};
    out[i].input_ids = requests[i].input_ids;
    // Block k of the wave owns slots [k * max_batch, ...): its steps never touch another's cache.
    blocks[(i - begin) / batch].live.push_back({i, static_cast<int64_t>(i - begin), 0, requests[i].input_ids,
                                                Rng(requests[i].sampling.seed), requests[i].max_new_tokens == 0});
  }

  // Builds and submits the block's next step: the whole prompt first, then the last token of each
  // unfinished sequence. False when the block has nothing left to run.
  auto submit = [&](Block& blk) {
    kernels::StepPlan plan;
    blk.active.clear();
    for (Live& l : blk.live) {
      if (l.done) continue;
      const std::span<const int32_t> fresh(l.context.data() + l.len, l.context.size() - static_cast<size_t>(l.len));
      const int64_t row = plan.add_sequence(fresh, l.len, l.slot);
      plan.logit_rows.push_back(static_cast<int32_t>(row + static_cast<int64_t>(fresh.size()) - 1));
      blk.active.push_back(&l);
    }
    if (blk.active.empty()) return false;
    // Plain greedy rows need only their argmax, taken where the logits are: R ids cross to the
    // host instead of R x V floats, and the host does not scan them.
    blk.greedy = std::all_of(blk.active.begin(), blk.active.end(), [&](const Live* l) {
      const SamplingParams& p = requests[l->req].sampling;
      return !p.do_sample && p.repetition_penalty == 1.0;
    });
    blk.tokens = plan.num_tokens();
    exec_.submit(plan, blk.greedy);
    return true;
  };

  // Steps come back in the order they went in: the oldest block's first. Each is sampled and that
  // block's next step submitted at once, while the other blocks' steps are still running.
  // A step's time runs from the previous step's last token chosen to its own: what a user waits
  // for, sampling and bookkeeping included (with one block in flight: plan, compute, sampling).
  // An executor may run a step inside submit() (a pipeline of one): the clock starts before the
  // first submit, and each step's time is taken before the next step is submitted.
  auto t0 = Clock::now();
  std::deque<Block*> in_flight;
  for (Block& blk : blocks)
    if (submit(blk)) in_flight.push_back(&blk);
  while (!in_flight.empty()) {
    Block& blk = *in_flight.front();
    in_flight.pop_front();
    StepOutput step = exec_.collect();
    if (blk.prefill) stats.prompt_tokens += blk.tokens;

    for (size_t a = 0; a < blk.active.size(); ++a) {
      Live& l = *blk.active[a];
      const Request& req = requests[l.req];
      Result& res = out[l.req];
      l.len = static_cast<int64_t>(l.context.size());
      int32_t next = 0;
      if (blk.greedy) {
        next = step.ids[a];
      } else {
        std::span<float> row(step.logits.data<float>() + a * spec.vocab_size, static_cast<size_t>(spec.vocab_size));
        next = sample_next(row, l.context, req.sampling, l.rng);
      }
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
        res.text = decode_output(*tokenizer_, res.output_ids);
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
    const auto now = Clock::now();
    (blk.prefill ? stats.prefill_seconds : stats.decode_seconds) += std::chrono::duration<double>(now - t0).count();
    t0 = now;
    blk.prefill = false;
    if (on_step) on_step(stats);
    if (submit(blk)) in_flight.push_back(&blk);
  }
}

}  // namespace tiergen
