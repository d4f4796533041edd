#include "comm/coordinator/batch_line.h"

#include <limits>

#include "runtime/core/error.h"

namespace tiergen::coord {
namespace {

using nlohmann::json;

std::string type_name(const json& v) { return v.is_null() ? "null" : v.type_name(); }

[[noreturn]] void bad(const std::string& field, const json& v, const std::string& must) {
  throw InvalidArgumentError(field + " is " +
                             (v.is_string() || v.is_object() || v.is_array() ? type_name(v) : v.dump()) +
                             ": it must be " + must);
}

std::optional<double> number(const json& body, const char* key) {
  const auto it = body.find(key);
  if (it == body.end() || it->is_null()) return std::nullopt;
  if (!it->is_number()) bad(std::string("body.") + key, *it, "a number");
  return it->get<double>();
}

std::optional<int64_t> integer(const json& body, const char* key) {
  const auto it = body.find(key);
  if (it == body.end() || it->is_null()) return std::nullopt;
  if (!it->is_number_integer()) bad(std::string("body.") + key, *it, "an integer");
  if (it->is_number_unsigned() && it->get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
    bad(std::string("body.") + key, *it, "at most " + std::to_string(std::numeric_limits<int64_t>::max()));
  return it->get<int64_t>();
}

// Parameters that would change what the output means; rejected unless they keep their default.
void reject_unsupported(const json& body) {
  auto is_default = [&](const char* key, const json& def) {
    const auto it = body.find(key);
    return it == body.end() || it->is_null() || *it == def;
  };
  for (const auto& [key, def] : {std::pair<const char*, json>{"n", 1},
                                 {"best_of", 1},
                                 {"stream", false},
                                 {"echo", false},
                                 {"logprobs", false},
                                 {"top_logprobs", 0},
                                 {"presence_penalty", 0},
                                 {"frequency_penalty", 0},
                                 {"suffix", nullptr}})
    if (!is_default(key, def) && !(std::string(key) == "logprobs" && body[key] == json(0)))
      throw UnsupportedError(std::string("body.") + key + " is " + body[key].dump() + ": tiergen supports only " +
                             (def.is_null() ? std::string("none") : def.dump()));
  if (const auto it = body.find("logit_bias"); it != body.end() && !it->is_null() && !it->empty())
    throw UnsupportedError("body.logit_bias is not supported");
}

std::vector<std::string> stop_strings(const json& body) {
  const auto it = body.find("stop");
  if (it == body.end() || it->is_null()) return {};
  std::vector<std::string> out;
  if (it->is_string()) {
    out.push_back(it->get<std::string>());
  } else if (it->is_array()) {
    for (const json& s : *it) {
      if (!s.is_string()) bad("body.stop[" + std::to_string(out.size()) + "]", s, "a string");
      out.push_back(s.get<std::string>());
    }
  } else {
    bad("body.stop", *it, "a string or an array of strings");
  }
  if (out.size() > kMaxStopStrings)
    throw InvalidArgumentError("body.stop holds " + std::to_string(out.size()) + " strings: at most " +
                               std::to_string(kMaxStopStrings));
  for (const auto& s : out)
    if (s.empty()) throw InvalidArgumentError("body.stop holds an empty string");
  return out;
}

std::vector<ChatMessage> chat_messages(const json& body) {
  const auto it = body.find("messages");
  if (it == body.end()) throw InvalidArgumentError("body.messages is missing: a chat completion needs its messages");
  if (!it->is_array() || it->empty()) bad("body.messages", *it, "a non-empty array of messages");
  std::vector<ChatMessage> out;
  for (const json& m : *it) {
    const std::string at = "body.messages[" + std::to_string(out.size()) + "]";
    if (!m.is_object()) bad(at, m, "an object with role and content");
    const auto role = m.find("role"), content = m.find("content");
    if (role == m.end() || !role->is_string()) bad(at + ".role", role == m.end() ? json() : *role, "a string");
    const std::string r = role->get<std::string>();
    if (r != "system" && r != "user" && r != "assistant" && r != "developer")
      throw InvalidArgumentError(at + ".role is '" + r + "': it must be system, developer, user or assistant");
    if (content == m.end() || !content->is_string())
      bad(at + ".content", content == m.end() ? json() : *content, "a string");
    out.push_back({r == "developer" ? "system" : r, content->get<std::string>()});
  }
  return out;
}

}  // namespace

const char* endpoint_url(Endpoint e) { return e == Endpoint::Completions ? "/v1/completions" : "/v1/chat/completions"; }

int64_t BatchRequest::prompt_bytes() const {
  if (endpoint == Endpoint::Completions) return static_cast<int64_t>(prompt.size());
  int64_t n = 0;
  for (const auto& m : messages) n += static_cast<int64_t>(m.content.size());
  return n;
}

BatchRequest parse_batch_line(std::string_view line) {
  json j;
  try {
    j = json::parse(line);
  } catch (const json::parse_error& e) {
    throw FormatError(std::string("the line is not JSON: ") + e.what());
  }
  if (!j.is_object()) throw FormatError("the line is JSON " + type_name(j) + ", not an object");
  BatchRequest r;
  const auto id = j.find("custom_id");
  if (id == j.end()) throw InvalidArgumentError("custom_id is missing");
  if (!id->is_string() || id->get<std::string>().empty()) bad("custom_id", *id, "a non-empty string");
  r.custom_id = id->get<std::string>();
  if (r.custom_id.size() > kMaxCustomIdBytes)
    throw InvalidArgumentError("custom_id is " + std::to_string(r.custom_id.size()) + " bytes: at most " +
                               std::to_string(kMaxCustomIdBytes));
  if (const auto m = j.find("method"); m != j.end() && *m != "POST") bad("method", *m, "\"POST\"");
  const auto url = j.find("url");
  if (url == j.end() || !url->is_string()) bad("url", url == j.end() ? json() : *url, "a string");
  const std::string u = url->get<std::string>();
  if (u == "/v1/completions")
    r.endpoint = Endpoint::Completions;
  else if (u == "/v1/chat/completions")
    r.endpoint = Endpoint::ChatCompletions;
  else
    throw InvalidArgumentError("unknown url '" + u + "': tiergen serves /v1/completions and /v1/chat/completions");
  const auto body_it = j.find("body");
  if (body_it == j.end() || !body_it->is_object()) bad("body", body_it == j.end() ? json() : *body_it, "an object");
  const json& body = *body_it;
  if (const auto m = body.find("model"); m != body.end() && !m->is_null()) {
    if (!m->is_string()) bad("body.model", *m, "a string");
    r.model = m->get<std::string>();
  }
  if (r.endpoint == Endpoint::Completions) {
    const auto p = body.find("prompt");
    if (p == body.end()) throw InvalidArgumentError("body.prompt is missing");
    if (!p->is_string()) bad("body.prompt", *p, "a string");
    r.prompt = p->get<std::string>();
  } else {
    r.messages = chat_messages(body);
  }
  reject_unsupported(body);
  r.max_tokens = integer(body, "max_tokens");
  if (!r.max_tokens) r.max_tokens = integer(body, "max_completion_tokens");
  if (r.max_tokens && *r.max_tokens < 1)
    throw InvalidArgumentError("body.max_tokens is " + std::to_string(*r.max_tokens) + ": it must be at least 1");
  r.temperature = number(body, "temperature");
  if (r.temperature && !(*r.temperature >= 0))
    throw InvalidArgumentError("body.temperature is " + json(*r.temperature).dump() + ": it must be at least 0");
  r.top_p = number(body, "top_p");
  if (r.top_p && !(*r.top_p > 0 && *r.top_p <= 1))
    throw InvalidArgumentError("body.top_p is " + json(*r.top_p).dump() + ": it must be in (0, 1]");
  r.top_k = integer(body, "top_k");
  if (r.top_k && *r.top_k < -1)
    throw InvalidArgumentError("body.top_k is " + std::to_string(*r.top_k) + ": it must be at least 0 (-1 or 0: off)");
  if (r.top_k && *r.top_k == -1) r.top_k = 0;
  r.stop = stop_strings(body);
  if (const auto s = body.find("seed"); s != body.end() && !s->is_null()) {
    if (!s->is_number_integer() || (s->is_number_integer() && !s->is_number_unsigned() && s->get<int64_t>() < 0))
      bad("body.seed", *s, "an integer of at least 0");
    r.seed = s->get<uint64_t>();
  }
  return r;
}

std::string salvage_custom_id(std::string_view line) {
  try {
    const json j = json::parse(line);
    if (j.is_object())
      if (const auto id = j.find("custom_id"); id != j.end() && id->is_string()) return id->get<std::string>();
  } catch (const json::exception&) {
  }
  return {};
}

std::string to_worker_body(const BatchRequest& r) {
  json j;
  j["url"] = endpoint_url(r.endpoint);
  if (r.endpoint == Endpoint::Completions) {
    j["prompt"] = r.prompt;
  } else {
    j["messages"] = json::array();
    for (const auto& m : r.messages) j["messages"].push_back({{"role", m.role}, {"content", m.content}});
  }
  if (!r.model.empty()) j["model"] = r.model;
  if (r.max_tokens) j["max_tokens"] = *r.max_tokens;
  if (r.top_k) j["top_k"] = *r.top_k;
  if (r.temperature) j["temperature"] = *r.temperature;
  if (r.top_p) j["top_p"] = *r.top_p;
  if (!r.stop.empty()) j["stop"] = r.stop;
  if (r.seed) j["seed"] = *r.seed;
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

BatchRequest from_worker_body(const std::string& custom_id, const std::string& body) {
  json b;
  try {
    b = json::parse(body);
  } catch (const json::parse_error& e) {
    throw FormatError("request '" + custom_id + "': its body is not JSON: " + e.what());
  }
  // The same checks as a submitted line: a worker never runs what a client could not have sent.
  json line = {{"custom_id", custom_id}, {"url", b.value("url", "")}, {"body", b}};
  line["body"].erase("url");
  return parse_batch_line(line.dump(-1, ' ', false, json::error_handler_t::replace));
}

std::string line_id(const std::string& job_id, int64_t index) {
  return "batch_req_" + job_id + "_" + std::to_string(index);
}

std::string output_line(const std::string& job_id, int64_t index, const std::string& custom_id, Endpoint endpoint,
                        const std::string& model, const Completion& c, int64_t created) {
  const bool chat = endpoint == Endpoint::ChatCompletions;
  json choice = {{"index", 0}, {"finish_reason", c.finish_reason}, {"logprobs", nullptr}};
  if (chat)
    choice["message"] = {{"role", "assistant"}, {"content", c.text}};
  else
    choice["text"] = c.text;
  const std::string request_id = job_id + "-" + std::to_string(index);
  json body = {{"id", (chat ? "chatcmpl-" : "cmpl-") + request_id},
               {"object", chat ? "chat.completion" : "text_completion"},
               {"created", created},
               {"model", model},
               {"choices", json::array({choice})},
               {"usage",
                {{"prompt_tokens", c.prompt_tokens},
                 {"completion_tokens", c.completion_tokens},
                 {"total_tokens", c.prompt_tokens + c.completion_tokens}}}};
  json out = {{"id", line_id(job_id, index)},
              {"custom_id", custom_id},
              {"response", {{"status_code", 200}, {"request_id", request_id}, {"body", body}}},
              {"error", nullptr}};
  return out.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string error_line(const std::string& job_id, int64_t index, const std::string& custom_id, const std::string& code,
                       const std::string& message) {
  json out = {{"id", line_id(job_id, index)},
              {"custom_id", custom_id.empty() ? json(nullptr) : json(custom_id)},
              {"response", nullptr},
              {"error", {{"code", code}, {"message", message}, {"line", index + 1}}}};
  return out.dump(-1, ' ', false, json::error_handler_t::replace);
}

}  // namespace tiergen::coord
