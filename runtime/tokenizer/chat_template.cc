#include "runtime/tokenizer/chat_template.h"

#include <nlohmann/json.hpp>

#include <fstream>
#include <sstream>

#include "runtime/core/error.h"

namespace tiergen {

ChatTemplate::ChatTemplate(const std::string& source, std::string name,
                           std::vector<std::pair<std::string, std::string>> tokens)
    : t_(source, std::move(name)), tokens_(std::move(tokens)) {}

std::optional<ChatTemplate> ChatTemplate::load(const std::filesystem::path& dir) {
  std::vector<std::pair<std::string, std::string>> tokens;
  std::optional<std::string> source;
  std::string name;
  const std::filesystem::path cfg = dir / "tokenizer_config.json";
  if (std::ifstream f(cfg); f) {
    const nlohmann::json j = nlohmann::json::parse(f, nullptr, false);
    if (j.is_discarded() || !j.is_object()) throw FormatError("'" + cfg.string() + "' is not a JSON object");
    // Special tokens are strings, or {"content": ...} as AddedToken writes them.
    for (const auto& [key, v] : j.items()) {
      if (key.size() < 6 || key.compare(key.size() - 6, 6, "_token") != 0) continue;
      if (v.is_string()) tokens.emplace_back(key, v.get<std::string>());
      if (v.is_object() && v.contains("content") && v["content"].is_string())
        tokens.emplace_back(key, v["content"].get<std::string>());
    }
    if (const auto it = j.find("chat_template"); it != j.end() && !it->is_null()) {
      name = cfg.string() + " (chat_template)";
      if (it->is_string()) {
        source = it->get<std::string>();
      } else if (it->is_array()) {
        for (const auto& t : *it)
          if (t.is_object() && t.value("name", "") == "default" && t.contains("template") && t["template"].is_string())
            source = t["template"].get<std::string>();
        if (!source)
          throw FormatError("'" + cfg.string() + "': chat_template is a list without a template named \"default\"");
      } else {
        throw FormatError("'" + cfg.string() + "': chat_template must be a string or a list of named templates");
      }
    }
  }
  const std::filesystem::path jinja = dir / "chat_template.jinja";
  if (std::ifstream f(jinja); f) {
    std::ostringstream s;
    s << f.rdbuf();
    source = s.str();
    name = jinja.string();
  }
  if (!source) return std::nullopt;
  return ChatTemplate(*source, name, std::move(tokens));
}

std::string ChatTemplate::render(const std::vector<ChatTurn>& messages) const {
  jinja::List turns;
  for (const ChatTurn& m : messages)
    turns.push_back(
        jinja::Value::of_dict({{"role", jinja::Value::string(m.role)}, {"content", jinja::Value::string(m.content)}}));
  // What transformers gives every template: the chat, the special tokens, no tools or documents.
  jinja::Dict vars = {{"messages", jinja::Value::of_list(std::move(turns))},
                      {"add_generation_prompt", jinja::Value::boolean(true)},
                      {"tools", jinja::Value::none()},
                      {"documents", jinja::Value::none()}};
  for (const auto& [k, v] : tokens_) vars.emplace_back(k, jinja::Value::string(v));
  return t_.render(vars);
}

}  // namespace tiergen
