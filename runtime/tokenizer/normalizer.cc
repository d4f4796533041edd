#include "runtime/tokenizer/normalizer.h"

#include <fmt/format.h>

#include <optional>
#include <string_view>
#include <vector>

#include "runtime/tokenizer/byte_level.h"
#include "runtime/tokenizer/json_util.h"
#include "runtime/tokenizer/regex.h"
#include "runtime/tokenizer/unicode.h"
#include "runtime/tokenizer/unicode_normalize.h"

namespace tiergen::tok {
namespace {

constexpr int kMaxNesting = 32;

class SequenceNormalizer final : public Normalizer {
 public:
  explicit SequenceNormalizer(std::vector<std::unique_ptr<Normalizer>> steps) : steps_(std::move(steps)) {}
  void normalize(std::string& text) const override {
    for (const auto& step : steps_) step->normalize(text);
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> steps_;
};

// Llama-2/Mistral prepend "▁" to every non-empty piece of text (so also after each added token).
class PrependNormalizer final : public Normalizer {
 public:
  explicit PrependNormalizer(std::string prefix) : prefix_(std::move(prefix)) {}
  void normalize(std::string& text) const override {
    if (!text.empty()) text.insert(0, prefix_);
  }

 private:
  std::string prefix_;
};

class ReplaceNormalizer final : public Normalizer {
 public:
  ReplaceNormalizer(Regex pattern, std::string content) : pattern_(std::move(pattern)), content_(std::move(content)) {}
  void normalize(std::string& text) const override {
    if (text.empty()) return;  // tokenizers reports no match at all in an empty string
    std::vector<std::pair<size_t, size_t>> matches;
    pattern_.find_all(text, matches);
    if (matches.empty()) return;
    std::string out;
    out.reserve(text.size() + matches.size() * content_.size());
    size_t prev = 0;
    for (const auto& [start, end] : matches) {
      out.append(text, prev, start - prev);
      out += content_;
      prev = end;
    }
    out.append(text, prev);
    text = std::move(out);
  }

 private:
  Regex pattern_;
  std::string content_;
};

// Strips Unicode whitespace from either end.
class StripNormalizer final : public Normalizer {
 public:
  StripNormalizer(bool left, bool right) : left_(left), right_(right) {}
  void normalize(std::string& text) const override {
    size_t begin = 0, end = text.size();
    if (left_) {
      while (begin < end) {
        size_t i = begin;
        if (!is_whitespace(next_code_point(text, i))) break;
        begin = i;
      }
    }
    if (right_) {
      while (end > begin) {
        size_t start = end - 1;  // back up to the lead byte of the last character
        while (start > begin && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) --start;
        size_t i = start;
        if (!is_whitespace(next_code_point(text, i))) break;
        end = start;
      }
    }
    text = text.substr(begin, end - begin);
  }

 private:
  bool left_, right_;
};

class ByteLevelNormalizer final : public Normalizer {
 public:
  void normalize(std::string& text) const override {
    std::string out;
    append_byte_level(out, text);
    text = std::move(out);
  }
};

// NFC, NFD, NFKC, NFKD. Qwen2's tokenizer.json has {"type": "NFC"}.
class NormalFormNormalizer final : public Normalizer {
 public:
  explicit NormalFormNormalizer(NormalForm form) : form_(form) {}
  void normalize(std::string& text) const override { normalize_unicode(text, form_); }

 private:
  NormalForm form_;
};

class LowercaseNormalizer final : public Normalizer {
 public:
  void normalize(std::string& text) const override { lowercase_code_points(text); }
};

class StripAccentsNormalizer final : public Normalizer {
 public:
  void normalize(std::string& text) const override { remove_marks(text); }
};

std::optional<NormalForm> normal_form_of(std::string_view type) {
  if (type == "NFC") return NormalForm::kNFC;
  if (type == "NFD") return NormalForm::kNFD;
  if (type == "NFKC") return NormalForm::kNFKC;
  if (type == "NFKD") return NormalForm::kNFKD;
  return std::nullopt;
}

}  // namespace

std::unique_ptr<Normalizer> make_normalizer(const json& j, const Where& where) {
  if (j.is_null()) return nullptr;
  if (where.depth() > kMaxNesting) where.fail("normalizers nested too deeply");
  const std::string type = component_type(j, where);
  if (type == "Sequence") {
    const Where w = where["normalizers"];
    const json& list = require_array(require_field(j, "normalizers", where), w);
    std::vector<std::unique_ptr<Normalizer>> steps;
    for (size_t i = 0; i < list.size(); ++i) {
      if (list[i].is_null()) w[i].fail("expected a normalizer, got null");
      steps.push_back(make_normalizer(list[i], w[i]));
    }
    return std::make_unique<SequenceNormalizer>(std::move(steps));
  }
  if (type == "Prepend") {
    return std::make_unique<PrependNormalizer>(require_string(require_field(j, "prepend", where), where["prepend"]));
  }
  if (type == "Replace") {
    Regex pattern = pattern_from_json(require_field(j, "pattern", where), where["pattern"]);
    return std::make_unique<ReplaceNormalizer>(std::move(pattern),
                                               require_string(require_field(j, "content", where), where["content"]));
  }
  if (type == "Strip") {
    return std::make_unique<StripNormalizer>(optional_bool(j, "strip_left", true, where),
                                             optional_bool(j, "strip_right", true, where));
  }
  if (type == "ByteLevel") return std::make_unique<ByteLevelNormalizer>();
  if (const std::optional<NormalForm> form = normal_form_of(type)) {
    if (const char* error = normal_form_load_error(*form)) {
      where.unsupported(fmt::format("normalizer type '{}': ICU cannot load its normalization data ({})", type, error));
    }
    return std::make_unique<NormalFormNormalizer>(*form);
  }
  if (type == "Lowercase") return std::make_unique<LowercaseNormalizer>();
  if (type == "StripAccents") return std::make_unique<StripAccentsNormalizer>();
  where.unsupported(
      fmt::format("normalizer type '{}' is not supported (supported: Sequence, Prepend, "
                  "Replace, Strip, ByteLevel, NFC, NFD, NFKC, NFKD, Lowercase, StripAccents)",
                  type));
}

}  // namespace tiergen::tok
