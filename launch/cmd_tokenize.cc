// tiergen tokenize / detokenize: the model's tokenizer on its own, for tools and debugging.
#include <unistd.h>

#include <iostream>
#include <iterator>
#include <nlohmann/json.hpp>

#include "launch/commands.h"
#include "runtime/core/error.h"

namespace tiergen::cli {
namespace {

struct TokenizerArgs {
  std::string model_dir, tokenizer_file;
  void add_flags(CLI::App& cmd) {
    cmd.add_option("-m,--model", model_dir, "Model folder holding tokenizer.json");
    cmd.add_option("--tokenizer", tokenizer_file, "A tokenizer.json file");
  }
  Tokenizer load() const {
    if (model_dir.empty() == tokenizer_file.empty())
      throw InvalidArgumentError(model_dir.empty() ? "give --model DIR or --tokenizer FILE"
                                                   : "give either --model or --tokenizer, not both");
    return Tokenizer::from_file(tokenizer_file.empty() ? std::filesystem::path(model_dir) / "tokenizer.json"
                                                       : std::filesystem::path(tokenizer_file));
  }
};

std::string read_stdin_or(const std::vector<std::string>& args, const char* what) {
  if (!args.empty()) {
    std::string s;
    for (size_t i = 0; i < args.size(); ++i) s += (i ? " " : "") + args[i];
    return s;
  }
  if (isatty(STDIN_FILENO))
    throw InvalidArgumentError(std::string("no ") + what + ": give it as an argument or on stdin");
  return std::string(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
}

}  // namespace

Command add_tokenize(CLI::App& app) {
  struct Args {
    TokenizerArgs tok;
    std::vector<std::string> text;
    bool no_special = false;
  };
  auto a = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand("tokenize", "Print the token ids of a text as a JSON array");
  a->tok.add_flags(*cmd);
  cmd->add_option("text", a->text, "Text to encode (joined by spaces); stdin when absent");
  cmd->add_flag("--no-special-tokens", a->no_special,
                "Do not add the tokenizer's special tokens (e.g. BOS); by default they are added, as generate does");
  return {cmd, [a] {
            const Tokenizer tok = a->tok.load();
            std::cout << nlohmann::json(tok.encode(read_stdin_or(a->text, "text"), !a->no_special)).dump() << "\n";
            return 0;
          }};
}

Command add_detokenize(CLI::App& app) {
  struct Args {
    TokenizerArgs tok;
    std::vector<std::string> ids;
    bool skip_special = false;
  };
  auto a = std::make_shared<Args>();
  CLI::App* cmd =
      app.add_subcommand("detokenize", "Print the text of token ids (a JSON array or comma/space separated)");
  a->tok.add_flags(*cmd);
  cmd->add_option("ids", a->ids, "Token ids; stdin when absent");
  cmd->add_flag("--skip-special-tokens", a->skip_special, "Leave special tokens out of the text");
  return {cmd, [a] {
            const Tokenizer tok = a->tok.load();
            const std::vector<int32_t> ids = parse_token_ids(read_stdin_or(a->ids, "token ids"));
            std::cout << tok.decode(ids, a->skip_special) << "\n";
            return 0;
          }};
}

}  // namespace tiergen::cli
