#include <omp.h>

#include <cctype>
#include <climits>
#include <sstream>

#include "launch/commands.h"
#include "runtime/core/error.h"
#include "runtime/model/spec.h"

namespace tiergen::cli {

void ModelSource::add_flags(CLI::App& cmd) {
  cmd.add_option("-m,--model", dir, "Hugging Face model folder (config.json, *.safetensors, tokenizer.json)");
  std::string presets;
  for (const auto& n : preset_model_names()) presets += (presets.empty() ? "" : ", ") + n;
  cmd.add_option("--dummy", dummy, "Use dummy weights of a preset shape instead of a folder: " + presets);
}

void ModelSource::validate() const {
  if (dir.empty() == dummy.empty())
    throw InvalidArgumentError(dir.empty() ? "give a model: --model DIR or --dummy PRESET"
                                           : "give either --model or --dummy, not both");
  if (!dir.empty() && !std::filesystem::is_directory(dir))
    throw NotFoundError("model folder '" + dir + "' does not exist or is not a directory");
}

std::unique_ptr<Model> ModelSource::load() const {
  validate();
  if (!dummy.empty()) {
    const ModelSpec spec = preset_model_spec(dummy);
    return Model::dummy(spec, spec.dtype == DType::F32 ? DType::F16 : spec.dtype);
  }
  return Model::load(dir);
}

std::unique_ptr<Tokenizer> ModelSource::tokenizer() const {
  if (dir.empty()) return nullptr;
  const std::filesystem::path p = std::filesystem::path(dir) / "tokenizer.json";
  if (!std::filesystem::exists(p)) return nullptr;
  return std::make_unique<Tokenizer>(Tokenizer::from_file(p));
}

std::vector<int32_t> parse_token_ids(const std::string& text) {
  std::string spaced = text;
  for (char& c : spaced)
    if (c == '[' || c == ']' || c == ',' || std::isspace(static_cast<unsigned char>(c))) c = ' ';
  std::vector<int32_t> ids;
  std::istringstream in(spaced);
  std::string word;
  while (in >> word) {
    size_t used = 0;
    long long v = -1;
    try {
      v = std::stoll(word, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != word.size() || v < 0 || v > INT32_MAX)
      throw InvalidArgumentError("'" + word + "' is not a token id (a non-negative integer)");
    ids.push_back(static_cast<int32_t>(v));
  }
  return ids;
}

void add_threads_flag(CLI::App& cmd, int& threads) {
  cmd.add_option("--threads", threads, "CPU threads for the CPU backend (default: all cores)")
      ->check(CLI::NonNegativeNumber);
}

void apply_threads(int threads) {
  if (threads > 0) omp_set_num_threads(threads);
}

}  // namespace tiergen::cli
