#include "comm/pipeline.h"

#include <cstdio>
#include <cstring>
#include <exception>
#include <new>
#include <tuple>
#include <type_traits>

#include "runtime/core/error.h"
#include "runtime/core/trace.h"

namespace tiergen::comm {
namespace {

enum class Kind : uint32_t {
  Allocate = 1,
  Step = 2,
  Stop = 3,
  Output = 4,
  Status = 5,
  Shape = 6,
  Gather = 7,
  Report = 8
};

// Messages are flat: fixed-size fields and length-prefixed int32 vectors, in host byte order (every
// rank of a pipeline runs the same build on the same kind of CPU).
class Writer {
 public:
  explicit Writer(Kind k) { put(static_cast<uint32_t>(k)); }
  template <class T>
  void put(T v) {
    static_assert(std::is_trivially_copyable_v<T>);
    raw(&v, sizeof v);
  }
  void put(const std::vector<int32_t>& v) {
    put(static_cast<uint64_t>(v.size()));
    raw(v.data(), v.size() * sizeof(int32_t));
  }
  void put(const std::string& s) {
    put(static_cast<uint64_t>(s.size()));
    raw(s.data(), s.size());
  }
  void raw(const void* p, size_t n) {
    if (n == 0) return;
    const size_t at = bytes_.size();
    bytes_.resize(at + n);
    std::memcpy(bytes_.data() + at, p, n);
  }
  std::vector<std::byte> take() { return std::move(bytes_); }

 private:
  std::vector<std::byte> bytes_;
};

// Reads what Writer wrote; a message shorter than its fields say is the sender's fault, named.
class Reader {
 public:
  Reader(const std::vector<std::byte>& b, std::string from) : b_(b), from_(std::move(from)) {}
  template <class T>
  T get() {
    T v;
    std::memcpy(&v, take(sizeof v), sizeof v);
    return v;
  }
  std::vector<int32_t> ints() {
    const auto n = get<uint64_t>();
    if (n > (b_.size() - at_) / sizeof(int32_t)) bad();
    std::vector<int32_t> v(n);
    std::memcpy(v.data(), take(n * sizeof(int32_t)), n * sizeof(int32_t));
    return v;
  }
  std::string text() {
    const auto n = get<uint64_t>();
    if (n > b_.size() - at_) bad();
    const auto* p = reinterpret_cast<const char*>(take(n));
    return std::string(p, n);
  }
  Kind kind() { return static_cast<Kind>(get<uint32_t>()); }
  [[noreturn]] void bad() const {
    throw PeerError("a malformed message from " + from_ + " (" + std::to_string(b_.size()) + " bytes)");
  }
  const std::byte* rest() const { return b_.data() + at_; }
  size_t left() const { return b_.size() - at_; }

 private:
  const std::byte* take(size_t n) {
    if (n > b_.size() - at_) bad();
    const std::byte* p = b_.data() + at_;
    at_ += n;
    return p;
  }
  const std::vector<std::byte>& b_;
  std::string from_;
  size_t at_ = 0;
};

void put_plan(Writer& w, const kernels::StepPlan& p) {
  for (const auto* v :
       {&p.token_ids, &p.positions, &p.row_slot, &p.q_begin, &p.q_len, &p.kv_len, &p.slot, &p.logit_rows})
    w.put(*v);
}

kernels::StepPlan get_plan(Reader& r) {
  kernels::StepPlan p;
  for (auto* v : {&p.token_ids, &p.positions, &p.row_slot, &p.q_begin, &p.q_len, &p.kv_len, &p.slot, &p.logit_rows})
    *v = r.ints();
  const size_t T = p.token_ids.size(), S = p.q_len.size();
  if (p.positions.size() != T || p.row_slot.size() != T || p.q_begin.size() != S || p.kv_len.size() != S ||
      p.slot.size() != S)
    r.bad();
  return p;
}

// A step: the sampling mode, the dtype and GPU batch of the hidden states that follow (the sender's
// cut of the block, which the receiver's may differ from), and the block's layout.
std::vector<std::byte> step_message(const kernels::StepPlan& plan, bool greedy, DType act, int64_t batch_slots) {
  Writer w(Kind::Step);
  w.put(static_cast<uint8_t>(greedy));
  w.put(static_cast<uint32_t>(act));
  w.put(batch_slots);
  put_plan(w, plan);
  return w.take();
}

std::vector<std::byte> output_message(const StepOutput& out, bool greedy) {
  Writer w(Kind::Output);
  w.put(static_cast<uint8_t>(greedy));
  if (greedy) {
    w.put(out.ids);
  } else {
    w.put(static_cast<int64_t>(out.logits.dim(0)));
    w.raw(out.logits.raw(), out.logits.nbytes());
  }
  return w.take();
}

Kind expect(Reader& r, std::initializer_list<Kind> kinds) {
  const Kind k = r.kind();
  for (Kind ok : kinds)
    if (k == ok) return k;
  r.bad();
}

void put_times(Writer& w, const StageTimes& s) {
  w.put(static_cast<int32_t>(s.rank));
  for (double v : {s.compute_s, s.wait_s, s.wall_s}) w.put(v);
  w.put(s.where);
  w.put(s.trace_events);
}

StageTimes get_times(Reader& r) {
  StageTimes s;
  s.rank = r.get<int32_t>();
  for (double* v : {&s.compute_s, &s.wait_s, &s.wall_s}) *v = r.get<double>();
  s.where = r.text();
  s.trace_events = r.text();
  return s;
}

}  // namespace

std::vector<LayerSpan> stage_spans(int64_t num_layers, int stages, const std::vector<int64_t>& first_layers) {
  if (stages < 1) throw InvalidArgumentError("a pipeline needs at least one stage, got " + std::to_string(stages));
  if (stages > num_layers)
    throw InvalidArgumentError("a pipeline of " + std::to_string(stages) + " stages for a model of " +
                               std::to_string(num_layers) + " decoder layers: each stage needs at least one layer");
  std::vector<int64_t> starts = {0};
  if (first_layers.empty()) {
    // Even shares, the first stages taking one more where they do not divide.
    const int64_t base = num_layers / stages, extra = num_layers % stages;
    for (int s = 1; s < stages; ++s) starts.push_back(starts.back() + base + (s - 1 < extra ? 1 : 0));
  } else {
    if (static_cast<int>(first_layers.size()) != stages - 1)
      throw InvalidArgumentError(std::to_string(stages) + " stages need " + std::to_string(stages - 1) +
                                 " first layers (one per stage after the first), got " +
                                 std::to_string(first_layers.size()));
    for (int64_t f : first_layers) {
      if (f <= starts.back() || f >= num_layers)
        throw InvalidArgumentError("stage boundaries must increase within the model's decoder layers 1-" +
                                   std::to_string(num_layers - 1) + ", got " + std::to_string(f) + " after " +
                                   std::to_string(starts.back()));
      starts.push_back(f);
    }
  }
  std::vector<LayerSpan> spans;
  for (int s = 0; s < stages; ++s) {
    const int64_t a = starts[static_cast<size_t>(s)];
    const int64_t b = s + 1 < stages ? starts[static_cast<size_t>(s + 1)] : num_layers;
    // The layer list: [embed, (attention_i, mlp_i) x L, head].
    spans.push_back({s == 0 ? 0 : static_cast<size_t>(1 + 2 * a),
                     s + 1 == stages ? static_cast<size_t>(2 + 2 * num_layers) : static_cast<size_t>(1 + 2 * b)});
  }
  return spans;
}

std::pair<int64_t, int64_t> decoder_layers(LayerSpan span, int64_t num_layers) {
  // The layer list: [embed, (attention_i, mlp_i) x L, head]; decoder layer i is at 1 + 2i and 2 + 2i.
  const auto head = static_cast<size_t>(1 + 2 * num_layers);
  const int64_t first = span.begin == 0 ? 0 : static_cast<int64_t>(span.begin - 1) / 2;
  const int64_t end = span.end > head ? num_layers : static_cast<int64_t>(span.end - 1) / 2;
  return {first, end};
}

ModelEnds span_ends(LayerSpan span, int64_t num_layers) {
  return {span.begin == 0, span.end > static_cast<size_t>(1 + 2 * num_layers)};
}

std::string describe_span(LayerSpan span, int64_t num_layers) {
  const auto [first, end] = decoder_layers(span, num_layers);
  std::string s = end - first == 1 ? "decoder layer " + std::to_string(first)
                                   : "decoder layers " + std::to_string(first) + "-" + std::to_string(end - 1);
  const ModelEnds ends = span_ends(span, num_layers);
  if (ends.embedding) s += ", the embedding";
  if (ends.head) s += ", the head";
  return s;
}

void agree(Transport& t, const std::exception_ptr& mine, Duration timeout) {
  auto status = [&]() -> std::pair<ErrorKind, std::string> {
    try {
      std::rethrow_exception(mine);
    } catch (const Error& e) {
      return {e.kind(), e.what()};
    } catch (const std::bad_alloc&) {
      return {ErrorKind::OutOfMemory, "out of host memory"};
    } catch (const std::exception& e) {
      return {ErrorKind::Internal, e.what()};
    }
  };
  auto encode = [](bool failed, ErrorKind kind, const std::string& text) {
    Writer w(Kind::Status);
    w.put(static_cast<uint8_t>(failed));
    w.put(static_cast<uint32_t>(kind));
    w.put(text);
    return w.take();
  };
  bool failed = false;
  ErrorKind kind = ErrorKind::Internal;
  std::string text;
  auto note = [&](ErrorKind k, const std::string& what, int rank) {
    if (!failed) kind = k;
    failed = true;
    text += (text.empty() ? "" : "; ") + (t.size() > 1 ? t.describe(rank) + ": " : std::string()) + what;
  };
  ErrorKind my_kind = ErrorKind::Internal;
  std::string my_what;
  if (mine) {
    std::tie(my_kind, my_what) = status();
    note(my_kind, my_what, t.rank());
  }
  if (t.size() == 1) {
    if (mine) std::rethrow_exception(mine);
    return;
  }
  if (t.rank() == 0) {
    for (int r = 1; r < t.size(); ++r) {
      const auto bytes = t.recv(r, timeout);
      Reader rd(bytes, t.describe(r));
      expect(rd, {Kind::Status});
      const bool bad = rd.get<uint8_t>() != 0;
      const auto k = static_cast<ErrorKind>(rd.get<uint32_t>());
      const std::string what = rd.text();
      if (bad) note(k, what, r);
    }
    for (int r = 1; r < t.size(); ++r) t.send(r, encode(failed, kind, text));
  } else {
    t.send(0, encode(failed, my_kind, my_what));
    const auto bytes = t.recv(0, timeout);
    Reader rd(bytes, t.describe(0));
    expect(rd, {Kind::Status});
    failed = rd.get<uint8_t>() != 0;
    kind = static_cast<ErrorKind>(rd.get<uint32_t>());
    text = rd.text();
  }
  if (failed) throw Error(kind, text);
}

RunShape share_shape(Transport& t, const RunShape& shape, Duration timeout) {
  if (t.size() == 1) return shape;
  if (t.rank() == 0) {
    for (int r = 1; r < t.size(); ++r) {
      Writer w(Kind::Shape);
      w.put(shape);
      t.send(r, w.take());
    }
    return shape;
  }
  const auto bytes = t.recv(0, timeout);
  Reader rd(bytes, t.describe(0));
  expect(rd, {Kind::Shape});
  return rd.get<RunShape>();
}

std::vector<std::vector<std::byte>> all_gather(Transport& t, std::vector<std::byte> mine, Duration timeout) {
  std::vector<std::vector<std::byte>> all(static_cast<size_t>(t.size()));
  auto wrap = [](const std::vector<std::byte>& b) {
    Writer w(Kind::Gather);
    w.raw(b.data(), b.size());
    return w.take();
  };
  auto unwrap = [&](const std::vector<std::byte>& bytes, int from) {
    Reader rd(bytes, t.describe(from));
    expect(rd, {Kind::Gather});
    return std::vector<std::byte>(rd.rest(), rd.rest() + rd.left());
  };
  if (t.rank() == 0) {
    all[0] = std::move(mine);
    for (int r = 1; r < t.size(); ++r) all[static_cast<size_t>(r)] = unwrap(t.recv(r, timeout), r);
    for (int r = 1; r < t.size(); ++r)
      for (const auto& b : all) t.send(r, wrap(b));
    return all;
  }
  t.send(0, wrap(mine));
  for (int r = 0; r < t.size(); ++r) all[static_cast<size_t>(r)] = unwrap(t.recv(0, timeout), 0);
  return all;
}

std::vector<std::string> all_gather_text(Transport& t, const std::string& mine, Duration timeout) {
  const auto* p = reinterpret_cast<const std::byte*>(mine.data());
  std::vector<std::string> all;
  for (const auto& b : all_gather(t, std::vector<std::byte>(p, p + mine.size()), timeout))
    all.emplace_back(reinterpret_cast<const char*>(b.data()), b.size());
  return all;
}

PipelineExecutor::PipelineExecutor(Stage& stage, Transport& t, int64_t gpu_batch_size, int micro_batches,
                                   Duration timeout, StageLinks* links)
    : stage_(stage),
      t_(t),
      links_(links ? *links : host_links_),
      gpu_batch_size_(gpu_batch_size),
      micro_batches_(micro_batches),
      timeout_(timeout) {
  TIERGEN_CHECK(t.rank() == 0, "the pipeline's executor runs on rank 0");
  if (micro_batches < 1)
    throw InvalidArgumentError("micro-batch count must be positive, got " + std::to_string(micro_batches));
}

PipelineExecutor::~PipelineExecutor() {
  // Unwinding from an error: the other ranks must hear of the failure (reporting_failures tells
  // them), not a Stop that reads as a run that ended well.
  if (std::uncaught_exceptions() > 0) return;
  try {
    stop();
  } catch (const std::exception&) {  // the ranks that cannot be told end by their own deadline
  }
}

void PipelineExecutor::stop() {
  if (stopped_ || t_.size() == 1) return;
  stopped_ = true;
  t_.send(1, Writer(Kind::Stop).take());
  links_.flush(t_, timeout_);
  t_.flush(timeout_);
}

std::vector<StageTimes> PipelineExecutor::report(bool trace) {
  TIERGEN_CHECK(in_flight_ == 0 && done_.empty(), "a report between runs, with no step in flight");
  std::vector<StageTimes> all = {clock_.take(t_, trace)};
  if (t_.size() == 1) return all;
  // Down the pipeline, each rank adding its times; the last sends them all back.
  Writer w(Kind::Report);
  w.put(static_cast<uint8_t>(trace));
  t_.send(1, w.take());
  const int last = t_.size() - 1;
  const auto bytes = t_.recv(last, timeout_);
  Reader rd(bytes, t_.describe(last));
  expect(rd, {Kind::Report});
  rd.get<uint8_t>();
  for (int r = 1; r < t_.size(); ++r) all.push_back(get_times(rd));
  return all;
}

void PipelineExecutor::allocate_cache(int64_t slots, int64_t capacity, int64_t block_slots) {
  stage_.allocate_cache(slots, capacity, gpu_batch_size_, block_slots);
  if (t_.size() == 1) return;
  // Every rank lays its cache out alike (Stage::allocate_cache normalises the same four numbers the
  // same way), so that each cuts a step into the same GPU batches.
  Writer w(Kind::Allocate);
  for (int64_t v : {slots, capacity, gpu_batch_size_, block_slots}) w.put(v);
  t_.send(1, w.take());
}

void PipelineExecutor::submit(const kernels::StepPlan& plan, bool greedy) {
  const trace::Span span(trace::kSteps, "step of " + std::to_string(plan.num_tokens()) + " tokens");
  const auto from = std::chrono::steady_clock::now();
  std::vector<GpuBatch> batches = stage_.split(plan);
  stage_.forward_block(batches);
  if (t_.size() == 1) {
    done_.push_back(step_output(stage_.backend(), batches, plan.logit_rows.size(), spec().vocab_size, greedy));
    clock_.computed(from);
    return;
  }
  t_.send(1, step_message(plan, greedy, stage_.dtypes().activations, stage_.batch_slots()));
  links_.send(t_, stage_.backend(), batches, timeout_);
  clock_.computed(from);
  ++in_flight_;
}

StepOutput PipelineExecutor::collect() {
  if (t_.size() == 1) {
    TIERGEN_CHECK(!done_.empty(), "collect() without a submitted step");
    StepOutput out = std::move(done_.front());
    done_.pop_front();
    return out;
  }
  TIERGEN_CHECK(in_flight_ > 0, "collect() without a submitted step");
  const int last = t_.size() - 1;
  const auto from = std::chrono::steady_clock::now();
  const auto bytes = t_.recv(last, timeout_);
  clock_.waited(from);
  --in_flight_;
  Reader rd(bytes, t_.describe(last));
  expect(rd, {Kind::Output});
  StepOutput out;
  if (rd.get<uint8_t>() != 0) {
    out.ids = rd.ints();
    return out;
  }
  const auto rows = rd.get<int64_t>();
  const int64_t V = spec().vocab_size;
  if (rows < 0 || rd.left() != static_cast<size_t>(rows * V) * sizeof(float)) rd.bad();
  out.logits = Tensor::empty({rows, V}, DType::F32);  // (R, V) on the host
  std::memcpy(out.logits.raw(), rd.rest(), rd.left());
  return out;
}

void serve_stage(Stage& stage, Transport& t, Duration timeout, StageLinks* given, int64_t gpu_batch_size) {
  StageLinks host_links;
  StageLinks& links = given ? *given : host_links;
  reporting_failures(t, [&] {
    const int prev = t.rank() - 1, next = t.rank() + 1;
    const bool last = next == t.size();
    StageClock clock;
    for (;;) {
      auto from = std::chrono::steady_clock::now();
      std::vector<std::byte> msg = t.recv(prev, timeout);
      clock.waited(from);
      Reader rd(msg, t.describe(prev));
      switch (expect(rd, {Kind::Allocate, Kind::Step, Kind::Stop, Kind::Report})) {
        case Kind::Stop:
          if (!last) t.send(next, std::move(msg));
          links.flush(t, timeout);
          t.flush(timeout);
          return;
        case Kind::Report: {
          const bool trace = rd.get<uint8_t>() != 0;
          Writer w(Kind::Report);
          w.raw(msg.data() + sizeof(uint32_t), msg.size() - sizeof(uint32_t));  // the flag and the times so far
          put_times(w, clock.take(t, trace));
          t.send(last ? 0 : next, w.take());
          break;
        }
        case Kind::Allocate: {
          int64_t v[4];
          for (int64_t& x : v) x = rd.get<int64_t>();
          stage.allocate_cache(v[0], v[1], gpu_batch_size > 0 ? gpu_batch_size : v[2], v[3]);
          if (!last) t.send(next, std::move(msg));
          break;
        }
        default: {  // a step
          const bool greedy = rd.get<uint8_t>() != 0;
          const auto wire = static_cast<DType>(rd.get<uint32_t>());
          const auto sent_batch = rd.get<int64_t>();
          const kernels::StepPlan plan = get_plan(rd);
          if (sent_batch < 1) rd.bad();
          const trace::Span span(trace::kSteps, "step of " + std::to_string(plan.num_tokens()) + " tokens");
          std::vector<GpuBatch> batches = stage.split(plan);
          const std::vector<GpuBatch> sent = stage.split(plan, sent_batch);
          links.recv(t, stage, wire, sent, batches, clock, timeout);
          from = std::chrono::steady_clock::now();
          stage.forward_block(batches);
          if (last) {
            const StepOutput out =
                step_output(stage.backend(), batches, plan.logit_rows.size(), stage.model().spec().vocab_size, greedy);
            t.send(0, output_message(out, greedy));
          } else {
            t.send(next, step_message(plan, greedy, stage.dtypes().activations, stage.batch_slots()));
            links.send(t, stage.backend(), batches, timeout);
          }
          clock.computed(from);
        }
      }
    }
  });
}

}  // namespace tiergen::comm
