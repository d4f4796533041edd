// OpenAI Batch lines: what parse_batch_line takes, what it refuses (naming the field), and the
// output and error lines.
#include "comm/coordinator/batch_line.h"

#include <nlohmann/json.hpp>

#include "runtime/core/error.h"
#include "tests/testutil/testutil.h"

namespace tiergen::coord {
namespace {

using nlohmann::json;

std::string line(const json& body, const std::string& url = "/v1/completions") {
  return json{{"custom_id", "a"}, {"method", "POST"}, {"url", url}, {"body", body}}.dump();
}

TEST(BatchLine, ParsesEveryParameterAndRoundTripsToTheWorker) {
  const BatchRequest r = parse_batch_line(line({{"model", "m"},
                                                {"prompt", "hello"},
                                                {"max_tokens", 7},
                                                {"temperature", 0.5},
                                                {"top_p", 0.9},
                                                {"top_k", 40},
                                                {"stop", {"\n", "END"}},
                                                {"seed", 12},
                                                {"n", 1},
                                                {"stream", false}}));
  EXPECT_EQ(r.custom_id, "a");
  EXPECT_EQ(r.endpoint, Endpoint::Completions);
  EXPECT_EQ(r.model, "m");
  EXPECT_EQ(r.prompt, "hello");
  EXPECT_EQ(*r.max_tokens, 7);
  EXPECT_EQ(*r.temperature, 0.5);
  EXPECT_EQ(*r.top_p, 0.9);
  EXPECT_EQ(*r.top_k, 40);
  EXPECT_EQ(r.stop, (std::vector<std::string>{"\n", "END"}));
  EXPECT_EQ(*r.seed, 12u);
  EXPECT_EQ(r.prompt_bytes(), 5);
  const BatchRequest back = from_worker_body("a", to_worker_body(r));
  EXPECT_EQ(back.prompt, r.prompt);
  EXPECT_EQ(back.stop, r.stop);
  EXPECT_EQ(*back.seed, 12u);
  EXPECT_EQ(*back.max_tokens, 7);
  // Absent parameters stay absent: the model's generation_config.json fills them on the worker.
  const BatchRequest bare = parse_batch_line(line({{"prompt", "x"}}));
  EXPECT_FALSE(bare.max_tokens || bare.temperature || bare.top_p || bare.top_k || bare.seed);
}

TEST(BatchLine, ChatMessages) {
  const BatchRequest r = parse_batch_line(
      line({{"messages", {{{"role", "system"}, {"content", "be brief"}}, {{"role", "user"}, {"content", "hi"}}}}},
           "/v1/chat/completions"));
  EXPECT_EQ(r.endpoint, Endpoint::ChatCompletions);
  ASSERT_EQ(r.messages.size(), 2u);
  EXPECT_EQ(r.messages[1].content, "hi");
  EXPECT_EQ(r.prompt_bytes(), 10);
  EXPECT_THROW_WITH(parse_batch_line(line({{"messages", json::array()}}, "/v1/chat/completions")), InvalidArgumentError,
                    "body.messages");
  EXPECT_THROW_WITH(
      parse_batch_line(line({{"messages", {{{"role", "robot"}, {"content", "x"}}}}}, "/v1/chat/completions")),
      InvalidArgumentError, "body.messages[0].role is 'robot'");
}

TEST(BatchLine, RefusesWhatItCannotRunNamingTheField) {
  EXPECT_THROW_WITH(parse_batch_line("{nope"), FormatError, "not JSON");
  EXPECT_THROW_WITH(parse_batch_line("[1, 2]"), FormatError, "not an object");
  EXPECT_THROW_WITH(parse_batch_line(R"({"url": "/v1/completions", "body": {}})"), InvalidArgumentError,
                    "custom_id is missing");
  EXPECT_THROW_WITH(parse_batch_line(R"({"custom_id": 3, "url": "/v1/completions", "body": {}})"), InvalidArgumentError,
                    "custom_id is 3");
  EXPECT_THROW_WITH(parse_batch_line(line({{"prompt", "x"}}, "/v1/embeddings")), InvalidArgumentError,
                    "unknown url '/v1/embeddings'");
  EXPECT_THROW_WITH(parse_batch_line(line(json::object())), InvalidArgumentError, "body.prompt is missing");
  EXPECT_THROW_WITH(parse_batch_line(line({{"prompt", 5}})), InvalidArgumentError, "body.prompt is 5");
  EXPECT_THROW_WITH(parse_batch_line(line({{"prompt", "x"}, {"max_tokens", 0}})), InvalidArgumentError,
                    "body.max_tokens is 0: it must be at least 1");
  EXPECT_THROW_WITH(parse_batch_line(line({{"prompt", "x"}, {"max_tokens", 2.5}})), InvalidArgumentError, "an integer");
  EXPECT_THROW_WITH(parse_batch_line(line({{"prompt", "x"}, {"temperature", -0.1}})), InvalidArgumentError,
                    "body.temperature is -0.1");
  for (double p : {0.0, 1.5, -1.0})
    EXPECT_THROW_WITH(parse_batch_line(line({{"prompt", "x"}, {"top_p", p}})), InvalidArgumentError,
                      "it must be in (0, 1]");
  EXPECT_THROW_WITH(parse_batch_line(line({{"prompt", "x"}, {"top_k", -2}})), InvalidArgumentError, "body.top_k");
  EXPECT_THROW_WITH(parse_batch_line(line({{"prompt", "x"}, {"stop", {"a", "b", "c", "d", "e"}}})),
                    InvalidArgumentError, "at most 4");
  EXPECT_THROW_WITH(parse_batch_line(line({{"prompt", "x"}, {"seed", -1}})), InvalidArgumentError, "body.seed");
  EXPECT_THROW_WITH(parse_batch_line(line({{"prompt", "x"}, {"n", 2}})), UnsupportedError, "body.n is 2");
  EXPECT_THROW_WITH(parse_batch_line(line({{"prompt", "x"}, {"stream", true}})), UnsupportedError, "body.stream");
  EXPECT_EQ(salvage_custom_id(R"({"custom_id": "k", "url": 1})"), "k");
  EXPECT_EQ(salvage_custom_id("{broken"), "");
}

TEST(BatchLine, OutputAndErrorLinesFollowTheBatchFormat) {
  const json out = json::parse(output_line("job-1", 4, "c4", Endpoint::Completions, "m", {"hi", "stop", 3, 2}, 99));
  EXPECT_EQ(out["id"], "batch_req_job-1_4");
  EXPECT_EQ(out["custom_id"], "c4");
  EXPECT_TRUE(out["error"].is_null());
  EXPECT_EQ(out["response"]["status_code"], 200);
  EXPECT_EQ(out["response"]["body"]["object"], "text_completion");
  EXPECT_EQ(out["response"]["body"]["choices"][0]["text"], "hi");
  EXPECT_EQ(out["response"]["body"]["usage"]["total_tokens"], 5);
  const json chat =
      json::parse(output_line("job-1", 0, "c", Endpoint::ChatCompletions, "m", {"yo", "length", 1, 1}, 1));
  EXPECT_EQ(chat["response"]["body"]["choices"][0]["message"]["content"], "yo");
  EXPECT_EQ(chat["response"]["body"]["choices"][0]["finish_reason"], "length");
  const json err = json::parse(error_line("job-1", 2, "", "invalid_json", "bad"));
  EXPECT_TRUE(err["custom_id"].is_null());
  EXPECT_TRUE(err["response"].is_null());
  EXPECT_EQ(err["error"]["line"], 3);
  EXPECT_EQ(err["error"]["code"], "invalid_json");
}

}  // namespace
}  // namespace tiergen::coord
