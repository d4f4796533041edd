// Generation on the demo model (models/fortune-tiny): stop conditions, batching equal to running
// alone (also when sampling), and request validation.
#include "runtime/generate/generator.h"

#include <thread>

#include "runtime/core/error.h"
#include "runtime/generate/run_plan.h"
#include "tests/testutil/testutil.h"

namespace tiergen {
namespace {

class GeneratorTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const auto dir = testing::source_dir() / "models" / "fortune-tiny";
    model_ = Model::load(dir).release();
    tok_ = new Tokenizer(Tokenizer::from_file(dir / "tokenizer.json"));
  }
  static void TearDownTestSuite() {
    delete model_;
    delete tok_;
  }
  std::vector<Result> run(const std::vector<Request>& reqs, int64_t batch = 64) {
    auto be = kernels::make_cpu_backend();
    Stage stage(*model_, *be);
    Generator gen(stage, tok_, batch);
    return gen.generate(reqs);
  }
  Request req(const std::string& text, int64_t n, bool sample = false, uint64_t seed = 0) {
    Request r;
    r.input_ids = tok_->encode(text, true);
    r.max_new_tokens = n;
    r.sampling.do_sample = sample;
    r.sampling.temperature = 0.8;
    r.sampling.top_p = 0.95;
    r.sampling.seed = seed;
    return r;
  }
  static Model* model_;
  static Tokenizer* tok_;
};
Model* GeneratorTest::model_ = nullptr;
Tokenizer* GeneratorTest::tok_ = nullptr;

TEST_F(GeneratorTest, BatchedEqualsAloneWhenSampling) {
  std::vector<Request> reqs = {req("A fool", 20, true, 1), req("Q: What is the meaning of life?", 20, true, 2),
                               req("You", 20, true, 3)};
  const auto together = run(reqs);
  for (size_t i = 0; i < reqs.size(); ++i) {
    const auto alone = run({reqs[i]});
    EXPECT_EQ(together[i].output_ids, alone[0].output_ids) << i;
    EXPECT_EQ(together[i].text, alone[0].text) << i;
  }
  // Blocks of 2 give the same results as one block of 3.
  const auto blocks = run(reqs, 2);
  for (size_t i = 0; i < reqs.size(); ++i) EXPECT_EQ(blocks[i].output_ids, together[i].output_ids) << i;
}

// Blocks in waves (several in flight, each in its own cache slots, as a pipeline runs them) give
// what one block at a time gives, for greedy and sampled requests of unequal lengths, also when
// the blocks run as several GPU batches and a wave is cut short by the request count.
TEST_F(GeneratorTest, WavesOfBlocksEqualOneBlockAtATime) {
  std::vector<Request> reqs;
  const char* prompts[] = {"A fool", "Q: What is the meaning of life?", "You", "The", "Q: Why?", "Luck", "A"};
  for (size_t i = 0; i < std::size(prompts); ++i) reqs.push_back(req(prompts[i], 6 + 3 * (i % 3), i % 2 == 1, i));
  const auto one = run(reqs, 2);
  for (int waves : {2, 3, 4})
    for (int64_t gpu_batch : {0, 1}) {
      auto be = kernels::make_cpu_backend();
      Stage stage(*model_, *be);
      LocalPipeline pipe({&stage}, gpu_batch, waves);
      Generator gen(pipe, tok_, 2);
      const auto got = gen.generate(reqs);
      for (size_t i = 0; i < reqs.size(); ++i) {
        EXPECT_EQ(got[i].output_ids, one[i].output_ids) << "request " << i << ", " << waves << " blocks in flight";
        EXPECT_EQ(got[i].text, one[i].text) << i;
      }
    }
  const RunShape shape = run_shape(reqs, 2, 3);  // 4 blocks, 3 in flight: 3 x 2 slots
  EXPECT_EQ(shape.cache_slots, 6);
  EXPECT_EQ(shape.block_slots, 2);
  EXPECT_EQ(run_shape(reqs, 8, 3).cache_slots, 7);  // one block: its own size
}

// An executor that runs each step inside submit() (as a pipeline of one does): the prefill's time
// is the prefill's, not the first decode step's. Steps sleep 300 ms (prefill) and 5 ms (decode).
TEST_F(GeneratorTest, StepTimesCountStepsRunInsideSubmit) {
  class Sleepy final : public Executor {
   public:
    explicit Sleepy(const ModelSpec& s) : spec_(s) {}
    const ModelSpec& spec() const override { return spec_; }
    void allocate_cache(int64_t, int64_t, int64_t) override {}
    void submit(const kernels::StepPlan& plan, bool) override {
      const bool prefill = plan.num_tokens() > static_cast<int64_t>(plan.q_len.size());
      std::this_thread::sleep_for(std::chrono::milliseconds(prefill ? 300 : 5));
      done_.push_back(std::vector<int32_t>(plan.logit_rows.size(), 7));
    }
    StepOutput collect() override {
      StepOutput o;
      o.ids = done_.front();
      done_.erase(done_.begin());
      return o;
    }

   private:
    const ModelSpec& spec_;
    std::vector<std::vector<int32_t>> done_;
  };
  Sleepy exec(model_->spec());
  Generator gen(exec, nullptr, 4);
  Request r;
  r.input_ids = {1, 2, 3, 4};
  r.max_new_tokens = 3;  // the prefill and two decode steps
  GenerateStats st;
  gen.generate({r}, &st);
  EXPECT_GE(st.prefill_seconds, 0.3);
  EXPECT_LT(st.decode_seconds, 0.3);
  EXPECT_GE(st.decode_seconds, 0.01);
}

TEST_F(GeneratorTest, MaxNewTokensAndLengthFinish) {
  const auto r = run({req("The", 7)});
  EXPECT_EQ(r[0].output_ids.size(), 7u);
  EXPECT_EQ(r[0].finish, FinishReason::Length);
  EXPECT_EQ(run({req("The", 0)})[0].output_ids.size(), 0u);
}

TEST_F(GeneratorTest, StopsAtEos) {
  // Take the 3rd greedy token as "EOS": generation must stop right after emitting it.
  const auto free_run = run({req("The", 10)});
  ASSERT_GE(free_run[0].output_ids.size(), 3u);
  Request r = req("The", 10);
  r.eos_ids = {free_run[0].output_ids[2]};
  const auto stopped = run({r});
  const auto& out = stopped[0].output_ids;
  ASSERT_FALSE(out.empty());
  EXPECT_EQ(out.back(), free_run[0].output_ids[2]);
  EXPECT_LE(out.size(), 3u);
  EXPECT_EQ(stopped[0].finish, FinishReason::Eos);
}

TEST_F(GeneratorTest, StopsAtStopStringAndCutsText) {
  const auto free_run = run({req("Q: Why?", 30)});
  const std::string text = free_run[0].text;
  ASSERT_GE(text.size(), 6u);
  const std::string stop = text.substr(3, 3);
  Request r = req("Q: Why?", 30);
  r.stop_strings = {stop};
  const auto stopped = run({r});
  EXPECT_EQ(stopped[0].finish, FinishReason::Stop);
  EXPECT_EQ(stopped[0].text, text.substr(0, text.find(stop)));
  EXPECT_LT(stopped[0].output_ids.size(), free_run[0].output_ids.size());
}

TEST_F(GeneratorTest, RejectsBadRequests) {
  Request empty;
  EXPECT_THROW_WITH(run({empty}), InvalidArgumentError, "prompt 0 has no tokens");
  Request bad = req("x", 3);
  bad.input_ids.push_back(1 << 20);
  EXPECT_THROW_WITH(run({bad}), InvalidArgumentError, "outside the model's vocabulary");
  // Every family's context ends at max_position_embeddings (OPT's learned table, Llama's RoPE):
  // refused before any work is done.
  auto opt = Model::load(testing::hf_model_dir("opt-tiny"));
  auto be = kernels::make_cpu_backend();
  Stage stage(*opt, *be);
  Generator gen(stage, nullptr);
  Request longer;
  longer.input_ids = std::vector<int32_t>(250, 5);
  longer.max_new_tokens = 10;  // 260 > 256 positions
  EXPECT_THROW_WITH(gen.generate({longer}), InvalidArgumentError,
                    "prompt 0: 250 prompt tokens + 10 new tokens exceed the model's context of 256 tokens (at most 6");
  Request rope = req("x", 600);  // fortune-tiny (RoPE) has 512 positions
  EXPECT_THROW_WITH(run({rope}), InvalidArgumentError, "exceed the model's context of 512 tokens");
  Request neg = req("x", -1);
  EXPECT_THROW_WITH(run({neg}), InvalidArgumentError, "max new tokens");
}

}  // namespace
}  // namespace tiergen
