// OpenAI Batch lines (https://platform.openai.com/docs/guides/batch): one JSON object per input
// line, {"custom_id", "method": "POST", "url": "/v1/completions" | "/v1/chat/completions", "body"},
// checked here field by field, and the output and error lines a job's results are made of.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tiergen::coord {

enum class Endpoint { Completions, ChatCompletions };
const char* endpoint_url(Endpoint e);

struct ChatMessage {
  std::string role;  // system, user, assistant
  std::string content;
};

// One checked input line.
struct BatchRequest {
  std::string custom_id;
  Endpoint endpoint = Endpoint::Completions;
  std::string model;                  // body.model; "" when absent
  std::string prompt;                 // completions
  std::vector<ChatMessage> messages;  // chat completions
  // Absent: the model's generation_config.json, as `tiergen generate` without the flag.
  std::optional<int64_t> max_tokens, top_k;
  std::optional<double> temperature, top_p;
  std::vector<std::string> stop;
  std::optional<uint64_t> seed;  // absent: 0

  // The prompt's size in bytes (the messages' contents for chat): blocks group like sizes.
  int64_t prompt_bytes() const;
};

// Limits a line is checked against.
constexpr size_t kMaxCustomIdBytes = 512;
constexpr size_t kMaxStopStrings = 4;

// Parses and checks one line. FormatError when it is not JSON or not an object,
// InvalidArgumentError for a missing field, a wrong type, a value out of range or an unknown url,
// UnsupportedError for a parameter tiergen does not implement (n > 1, streaming, logprobs, ...). The message names the
// field, e.g. "body.top_p is 1.5: it must be in (0, 1]".
BatchRequest parse_batch_line(std::string_view line);

// The custom_id of a line that failed parse_batch_line, when it can still be read ("" if not).
std::string salvage_custom_id(std::string_view line);

// The request as a worker receives it (JSON text) and back.
std::string to_worker_body(const BatchRequest& r);
BatchRequest from_worker_body(const std::string& custom_id, const std::string& body);

// A request's output: what the worker generated.
struct Completion {
  std::string text;
  std::string finish_reason;  // stop, length
  int64_t prompt_tokens = 0, completion_tokens = 0;
};

// "batch_req_<job>_<index>": the id of a job's line in its output.
std::string line_id(const std::string& job_id, int64_t index);

// An OpenAI Batch output line: {"id", "custom_id", "response": {"status_code": 200, "request_id",
// "body": a completion or chat.completion object}, "error": null}; `created`: Unix seconds.
std::string output_line(const std::string& job_id, int64_t index, const std::string& custom_id, Endpoint endpoint,
                        const std::string& model, const Completion& c, int64_t created);

// An error line: {"id", "custom_id" (null when unknown), "response": null, "error": {"code",
// "message", "line"}}; `line` is the 1-based input line. Codes: invalid_json, invalid_request,
// duplicate_custom_id, unsupported, model_mismatch, context_length_exceeded, worker_error.
std::string error_line(const std::string& job_id, int64_t index, const std::string& custom_id, const std::string& code,
                       const std::string& message);

}  // namespace tiergen::coord
