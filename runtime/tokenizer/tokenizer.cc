// Tokenizer: tokenizer.json -> components, and the encode/decode pipeline that ties them together
// in the order tokenizers runs them: added tokens (raw), normalizer, added tokens (normalized),
// pre-tokenizer, BPE per piece, post-processor.
#include "runtime/tokenizer/tokenizer.h"

#include <fmt/format.h>

#include <cerrno>
#include <fstream>
#include <sstream>

#include "runtime/core/error.h"
#include "runtime/tokenizer/added_vocab.h"
#include "runtime/tokenizer/bpe_model.h"
#include "runtime/tokenizer/decoder.h"
#include "runtime/tokenizer/json_util.h"
#include "runtime/tokenizer/normalizer.h"
#include "runtime/tokenizer/post_processor.h"
#include "runtime/tokenizer/pre_tokenizer.h"
#include "runtime/tokenizer/unicode.h"

namespace tiergen {

using tok::json;
using tok::Where;

struct Tokenizer::Impl {
  std::string origin;
  std::unique_ptr<tok::Normalizer> normalizer;
  std::unique_ptr<tok::PreTokenizer> pre_tokenizer;
  std::unique_ptr<tok::BpeModel> model;
  tok::AddedVocab added;
  std::unique_ptr<tok::PostProcessor> post_processor;
  std::unique_ptr<tok::Decoder> decoder;
};

namespace {

const json& field_or_null(const json& obj, std::string_view key) {
  static const json null_value;
  const json* f = tok::find_field(obj, key);
  return f == nullptr ? null_value : *f;
}

std::unique_ptr<tok::BpeModel> make_model(const json& root, const Where& root_where) {
  const json* model = tok::find_field(root, "model");
  if (model == nullptr || model->is_null()) root_where.fail("missing 'model'");
  const Where where = root_where["model"];
  tok::require_object(*model, where);
  std::string type;
  if (const json* t = tok::find_field(*model, "type")) {
    type = tok::require_string(*t, where["type"]);
  } else if (tok::find_field(*model, "merges") != nullptr) {
    type = "BPE";  // early tokenizer.json files did not write the model type
  } else {
    where.fail("missing field 'type'");
  }
  if (type != "BPE") {
    where.unsupported(fmt::format("model type '{}' is not supported (supported: BPE)", type));
  }
  return std::make_unique<tok::BpeModel>(*model, where);
}

std::vector<tok::AddedToken> parse_added_tokens(const json& root, const Where& root_where) {
  std::vector<tok::AddedToken> tokens;
  const json& list = field_or_null(root, "added_tokens");
  if (list.is_null()) return tokens;
  const Where where = root_where["added_tokens"];
  tok::require_array(list, where);
  for (size_t i = 0; i < list.size(); ++i) {
    const Where w = where[i];
    const json& entry = tok::require_object(list[i], w);
    // The id is validated although tokenizers recomputes it (see AddedVocab::add).
    tok::require_id(tok::require_field(entry, "id", w), w["id"]);
    tok::AddedToken t;
    t.content = tok::require_string(tok::require_field(entry, "content", w), w["content"]);
    t.single_word = tok::optional_bool(entry, "single_word", false, w);
    t.lstrip = tok::optional_bool(entry, "lstrip", false, w);
    t.rstrip = tok::optional_bool(entry, "rstrip", false, w);
    t.normalized = tok::optional_bool(entry, "normalized", true, w);
    t.special = tok::optional_bool(entry, "special", false, w);
    tokens.push_back(std::move(t));
  }
  return tokens;
}

std::unique_ptr<Tokenizer::Impl> build(const json& root, const std::string& origin) {
  const Where where(origin);
  if (!root.is_object()) {
    where.fail(fmt::format("expected a JSON object at the top level, got {}", tok::json_kind(root)));
  }
  if (const json* version = tok::find_field(root, "version"); version != nullptr && !version->is_null()) {
    const std::string v = tok::require_string(*version, where["version"]);
    if (v != "1.0")
      where["version"].unsupported(fmt::format("tokenizer.json version '{}' is not supported", v));
  }
  auto impl = std::make_unique<Tokenizer::Impl>();
  impl->origin = origin;
  impl->model = make_model(root, where);
  impl->normalizer = tok::make_normalizer(field_or_null(root, "normalizer"), where["normalizer"]);
  impl->pre_tokenizer = tok::make_pre_tokenizer(field_or_null(root, "pre_tokenizer"), where["pre_tokenizer"]);
  impl->post_processor =
      tok::make_post_processor(field_or_null(root, "post_processor"), where["post_processor"]);
  impl->decoder = tok::make_decoder(field_or_null(root, "decoder"), where["decoder"]);
  impl->added.add(parse_added_tokens(root, where), *impl->model, impl->normalizer.get());
  return impl;
}

}  // namespace

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

Tokenizer Tokenizer::from_file(const std::filesystem::path& tokenizer_json) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(tokenizer_json, ec)) {
    throw NotFoundError(fmt::format("tokenizer file not found: {}", tokenizer_json.string()));
  }
  std::ifstream in(tokenizer_json, std::ios::binary);
  if (!in) throw IoError(fmt::format("cannot open {}: {}", tokenizer_json.string(), errno_message(errno)));
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad())
    throw IoError(fmt::format("cannot read {}: {}", tokenizer_json.string(), errno_message(errno)));
  return from_json(text.str(), tokenizer_json.string());
}

Tokenizer Tokenizer::from_json(std::string_view json_text, const std::string& origin) {
  json root;
  try {
    root = json::parse(json_text.begin(), json_text.end());
  } catch (const json::exception& e) {
    throw FormatError(fmt::format("{}: not valid JSON: {}", origin, e.what()));
  }
  try {
    return Tokenizer(build(root, origin));
  } catch (const json::exception& e) {
    // Every field is type-checked before use; this is a backstop so a case we missed is still a
    // FormatError naming the file rather than an unrelated exception type.
    throw FormatError(fmt::format("{}: {}", origin, e.what()));
  }
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_special_tokens) const {
  if (const size_t bad = tok::find_invalid_utf8(text); bad != std::string_view::npos) {
    throw InvalidArgumentError(fmt::format("encode: text is not valid UTF-8 (byte {})", bad));
  }
  const Impl& m = *impl_;
  std::vector<int32_t> ids;
  std::vector<tok::Segment> raw_segments, normalized_segments;
  std::vector<tok::PreToken> pieces;
  // Added tokens that match raw text are cut out first, so the normalizer never touches them.
  m.added.split(text, /*normalized=*/false, raw_segments);
  for (const tok::Segment& raw : raw_segments) {
    if (raw.id >= 0) {
      ids.push_back(raw.id);
      continue;
    }
    std::string normalized(text.substr(raw.begin, raw.end - raw.begin));
    if (m.normalizer) m.normalizer->normalize(normalized);
    normalized_segments.clear();
    m.added.split(normalized, /*normalized=*/true, normalized_segments);
    for (const tok::Segment& seg : normalized_segments) {
      if (seg.id >= 0) {
        ids.push_back(seg.id);
        continue;
      }
      if (seg.begin == seg.end) continue;
      pieces.clear();
      pieces.push_back({normalized.substr(seg.begin, seg.end - seg.begin), raw.begin == 0 && seg.begin == 0});
      if (m.pre_tokenizer) m.pre_tokenizer->pre_tokenize(pieces);
      for (const tok::PreToken& piece : pieces) m.model->tokenize(piece.text, ids);
    }
  }
  if (add_special_tokens && m.post_processor) m.post_processor->process(ids);
  return ids;
}

std::string Tokenizer::decode(std::span<const int32_t> ids, bool skip_special_tokens) const {
  const Impl& m = *impl_;
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (const int32_t id : ids) {
    const std::string* token = m.added.decode_form(id);
    if (token == nullptr) token = m.model->id_to_token(id);
    if (token == nullptr) {
      throw InvalidArgumentError(fmt::format(
          "decode: token id {} is not in the vocabulary of {} (vocab_size {})", id, m.origin, vocab_size()));
    }
    if (skip_special_tokens && m.added.is_special_content(*token)) continue;
    tokens.push_back(*token);
  }
  if (m.decoder) {
    m.decoder->decode_chain(tokens);
    std::string text;
    for (const std::string& t : tokens) text += t;
    return text;
  }
  // Without a decoder tokenizers joins the tokens with spaces.
  std::string text;
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (i > 0) text += ' ';
    text += tokens[i];
  }
  return text;
}

int32_t Tokenizer::vocab_size() const { return std::max(impl_->model->max_id(), impl_->added.max_id()) + 1; }

std::optional<int32_t> Tokenizer::token_to_id(std::string_view token) const {
  if (auto id = impl_->added.token_to_id(token)) return id;
  return impl_->model->token_to_id(token);
}

std::optional<std::string> Tokenizer::id_to_token(int32_t id) const {
  if (const std::string* t = impl_->added.decode_form(id)) return *t;
  if (const std::string* t = impl_->model->id_to_token(id)) return *t;
  return std::nullopt;
}

const std::string& Tokenizer::origin() const { return impl_->origin; }

bool Tokenizer::is_special(int32_t id) const {
  const tok::AddedToken* t = impl_->added.token(id);
  return t != nullptr && impl_->added.is_special_content(t->content);
}

}  // namespace tiergen
