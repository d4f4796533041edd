// A model's chat template: the Jinja text in its folder (chat_template.jinja, or "chat_template"
// in tokenizer_config.json) that turns a chat into the prompt the model was trained on, rendered
// as transformers' apply_chat_template(messages, add_generation_prompt=True) renders it
// (runtime/tokenizer/jinja.h has the subset of Jinja it runs). The prompt it gives already holds
// the special tokens the template writes: tokenize it without adding any.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "runtime/tokenizer/jinja.h"

namespace tiergen {

struct ChatTurn {
  std::string role;  // system, user, assistant
  std::string content;
};

class ChatTemplate {
 public:
  // `source` under `name` (for messages); `tokens`: the special tokens the template may name
  // (bos_token, eos_token, ...). FormatError for a template that does not parse.
  ChatTemplate(const std::string& source, std::string name, std::vector<std::pair<std::string, std::string>> tokens);

  // The template of the model folder `dir`, with the special tokens of its tokenizer_config.json;
  // nothing when it has none. chat_template.jinja wins over tokenizer_config.json, whose
  // "chat_template" is a string or a list of {"name", "template"} (the one named "default").
  // FormatError for a tokenizer_config.json that is not JSON or a template that does not parse.
  static std::optional<ChatTemplate> load(const std::filesystem::path& dir);

  // The chat as the model's prompt, its assistant turn opened. InvalidArgumentError where the
  // template refuses the chat (raise_exception: roles out of order, say), FormatError where it
  // fails on it.
  std::string render(const std::vector<ChatTurn>& messages) const;

 private:
  jinja::Template t_;
  std::vector<std::pair<std::string, std::string>> tokens_;
};

}  // namespace tiergen
