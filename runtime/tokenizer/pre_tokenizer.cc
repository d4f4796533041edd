#include "runtime/tokenizer/pre_tokenizer.h"

#include <fmt/format.h>

#include <algorithm>
#include <optional>
#include <utility>

#include "runtime/tokenizer/byte_level.h"
#include "runtime/tokenizer/json_util.h"
#include "runtime/tokenizer/regex.h"
#include "runtime/tokenizer/unicode.h"

namespace tiergen::tok {
namespace {

constexpr int kMaxNesting = 32;

// GPT-2's split, as the ByteLevel pre-tokenizer of `tokenizers` applies it when use_regex is set.
constexpr std::string_view kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
// Rust regex's Unicode \w and \s, which the Whitespace pre-tokenizer is defined with.
constexpr std::string_view kWordClass = R"(\p{Alphabetic}\p{M}\p{Nd}\p{Pc}\p{Join_Control})";

enum class Behavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous };

using Span = std::pair<size_t, size_t>;

// Cuts `piece` at `matches` the way tokenizers' NormalizedString::split does: the text becomes
// alternating gap / match segments (a match may be empty), `invert` swaps the two roles, and
// `behavior` decides what becomes of the matches. Empty results are dropped.
void split_piece(const PreToken& piece, const std::vector<Span>& matches, Behavior behavior, bool invert,
                 std::vector<PreToken>& out) {
  struct Segment {
    size_t start, end;
    bool is_match;
  };
  std::vector<Segment> segments;
  segments.reserve(matches.size() * 2 + 1);
  size_t prev = 0;
  for (const auto& [start, end] : matches) {
    if (prev != start) segments.push_back({prev, start, invert});
    segments.push_back({start, end, !invert});
    prev = end;
  }
  if (prev != piece.text.size()) segments.push_back({prev, piece.text.size(), invert});

  std::vector<Span> kept;
  kept.reserve(segments.size());
  bool previous_match = false;
  switch (behavior) {
    case Behavior::Isolated:
      for (const Segment& s : segments) kept.emplace_back(s.start, s.end);
      break;
    case Behavior::Removed:
      for (const Segment& s : segments)
        if (!s.is_match) kept.emplace_back(s.start, s.end);
      break;
    case Behavior::Contiguous:
      for (const Segment& s : segments) {
        if (s.is_match == previous_match && !kept.empty()) {
          kept.back().second = s.end;
        } else {
          kept.emplace_back(s.start, s.end);
        }
        previous_match = s.is_match;
      }
      break;
    case Behavior::MergedWithPrevious:
      for (const Segment& s : segments) {
        if (s.is_match && !previous_match && !kept.empty()) {
          kept.back().second = s.end;
        } else {
          kept.emplace_back(s.start, s.end);
        }
        previous_match = s.is_match;
      }
      break;
    case Behavior::MergedWithNext:
      // The mirror image of MergedWithPrevious: walk from the end, then restore the order.
      for (auto it = segments.rbegin(); it != segments.rend(); ++it) {
        if (it->is_match && !previous_match && !kept.empty()) {
          kept.back().first = it->start;
        } else {
          kept.emplace_back(it->start, it->end);
        }
        previous_match = it->is_match;
      }
      std::reverse(kept.begin(), kept.end());
      break;
  }
  for (const auto& [start, end] : kept) {
    if (start == end) continue;
    out.push_back(PreToken{piece.text.substr(start, end - start), piece.at_start && start == 0});
  }
}

// Applies `fn(piece, out)` to each piece, as tokenizers' PreTokenizedString::split does.
template <typename Fn>
void split_each(std::vector<PreToken>& pieces, Fn&& fn) {
  std::vector<PreToken> out;
  out.reserve(pieces.size());
  for (PreToken& piece : pieces) fn(piece, out);
  std::erase_if(out, [](const PreToken& p) { return p.text.empty(); });
  pieces = std::move(out);
}

class SequencePreTokenizer final : public PreTokenizer {
 public:
  explicit SequencePreTokenizer(std::vector<std::unique_ptr<PreTokenizer>> steps)
      : steps_(std::move(steps)) {}
  void pre_tokenize(std::vector<PreToken>& pieces) const override {
    for (const auto& step : steps_) step->pre_tokenize(pieces);
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> steps_;
};

class RegexSplit final : public PreTokenizer {
 public:
  RegexSplit(Regex regex, Behavior behavior, bool invert)
      : regex_(std::move(regex)), behavior_(behavior), invert_(invert) {}
  void pre_tokenize(std::vector<PreToken>& pieces) const override {
    std::vector<Span> matches;
    split_each(pieces, [&](PreToken& piece, std::vector<PreToken>& out) {
      matches.clear();
      regex_.find_all(piece.text, matches);
      split_piece(piece, matches, behavior_, invert_, out);
    });
  }

 private:
  Regex regex_;
  Behavior behavior_;
  bool invert_;
};

class ByteLevelPreTokenizer final : public PreTokenizer {
 public:
  ByteLevelPreTokenizer(bool add_prefix_space, std::optional<Regex> regex)
      : add_prefix_space_(add_prefix_space), regex_(std::move(regex)) {}
  void pre_tokenize(std::vector<PreToken>& pieces) const override {
    std::vector<Span> matches;
    std::vector<PreToken> parts;
    split_each(pieces, [&](PreToken& piece, std::vector<PreToken>& out) {
      // The prefix space goes on every piece, not only the first (tokenizers does the same).
      if (add_prefix_space_ && (piece.text.empty() || piece.text[0] != ' '))
        piece.text.insert(piece.text.begin(), ' ');
      parts.clear();
      if (regex_) {
        matches.clear();
        regex_->find_all(piece.text, matches);
        split_piece(piece, matches, Behavior::Isolated, false, parts);
      } else {
        parts.push_back(std::move(piece));
      }
      for (PreToken& part : parts) {
        PreToken mapped{std::string(), part.at_start};
        mapped.text.reserve(part.text.size() * 2);
        append_byte_level(mapped.text, part.text);
        out.push_back(std::move(mapped));
      }
    });
  }

 private:
  bool add_prefix_space_;
  std::optional<Regex> regex_;
};

enum class PrependScheme { Always, First, Never };

// SentencePiece-style: spaces become the replacement character ("▁"), which is also prepended, and
// the text is split before each replacement character.
class MetaspacePreTokenizer final : public PreTokenizer {
 public:
  MetaspacePreTokenizer(std::string replacement, PrependScheme scheme, bool split)
      : replacement_(std::move(replacement)), scheme_(scheme), split_(split) {}
  void pre_tokenize(std::vector<PreToken>& pieces) const override {
    std::vector<Span> matches;
    split_each(pieces, [&](PreToken& piece, std::vector<PreToken>& out) {
      std::string text;
      text.reserve(piece.text.size() + replacement_.size());
      for (char c : piece.text) {
        if (c == ' ') {
          text += replacement_;
        } else {
          text += c;
        }
      }
      const bool starts_with_rep = text.compare(0, replacement_.size(), replacement_) == 0;
      if (!starts_with_rep &&
          (scheme_ == PrependScheme::Always || (scheme_ == PrependScheme::First && piece.at_start))) {
        text.insert(0, replacement_);
      }
      PreToken replaced{std::move(text), piece.at_start};
      if (!split_) {
        out.push_back(std::move(replaced));
        return;
      }
      matches.clear();
      for (size_t pos = replaced.text.find(replacement_); pos != std::string::npos;
           pos = replaced.text.find(replacement_, pos + replacement_.size())) {
        matches.emplace_back(pos, pos + replacement_.size());
      }
      split_piece(replaced, matches, Behavior::MergedWithNext, false, out);
    });
  }

 private:
  std::string replacement_;
  PrependScheme scheme_;
  bool split_;
};

Behavior parse_behavior(const json& j, const Where& where) {
  const std::string name = require_string(j, where);
  if (name == "Removed") return Behavior::Removed;
  if (name == "Isolated") return Behavior::Isolated;
  if (name == "MergedWithPrevious") return Behavior::MergedWithPrevious;
  if (name == "MergedWithNext") return Behavior::MergedWithNext;
  if (name == "Contiguous") return Behavior::Contiguous;
  where.fail(fmt::format("unknown split behavior '{}'", name));
}

std::unique_ptr<PreTokenizer> make_metaspace(const json& j, const Where& where) {
  const std::string replacement =
      require_string(require_field(j, "replacement", where), where["replacement"]);
  if (replacement.empty() || utf8_len(static_cast<unsigned char>(replacement[0])) != replacement.size()) {
    where["replacement"].fail("expected a single character");
  }
  PrependScheme scheme = PrependScheme::Always;
  if (const auto name = optional_string(j, "prepend_scheme", where)) {
    if (*name == "always") {
      scheme = PrependScheme::Always;
    } else if (*name == "first") {
      scheme = PrependScheme::First;
    } else if (*name == "never") {
      scheme = PrependScheme::Never;
    } else {
      where["prepend_scheme"].fail(fmt::format("unknown prepend_scheme '{}'", *name));
    }
  } else if (!optional_bool(j, "add_prefix_space", true, where)) {
    scheme = PrependScheme::Never;  // files written before prepend_scheme existed
  }
  return std::make_unique<MetaspacePreTokenizer>(replacement, scheme, optional_bool(j, "split", true, where));
}

}  // namespace

std::unique_ptr<PreTokenizer> make_pre_tokenizer(const json& j, const Where& where) {
  if (j.is_null()) return nullptr;
  if (where.depth() > kMaxNesting) where.fail("pre-tokenizers nested too deeply");
  const std::string type = component_type(j, where);
  const std::string what = fmt::format("{}: {}", where.origin(), where.path());
  if (type == "Sequence") {
    const Where w = where["pretokenizers"];
    const json& list = require_array(require_field(j, "pretokenizers", where), w);
    std::vector<std::unique_ptr<PreTokenizer>> steps;
    for (size_t i = 0; i < list.size(); ++i) {
      if (list[i].is_null()) w[i].fail("expected a pre-tokenizer, got null");
      steps.push_back(make_pre_tokenizer(list[i], w[i]));
    }
    return std::make_unique<SequencePreTokenizer>(std::move(steps));
  }
  if (type == "Split") {
    Regex regex = pattern_from_json(require_field(j, "pattern", where), where["pattern"]);
    const Behavior behavior = parse_behavior(require_field(j, "behavior", where), where["behavior"]);
    return std::make_unique<RegexSplit>(std::move(regex), behavior, optional_bool(j, "invert", false, where));
  }
  if (type == "ByteLevel") {
    std::optional<Regex> regex;
    if (optional_bool(j, "use_regex", true, where)) regex.emplace(kGpt2Pattern, what);
    return std::make_unique<ByteLevelPreTokenizer>(optional_bool(j, "add_prefix_space", true, where),
                                                   std::move(regex));
  }
  if (type == "Metaspace") return make_metaspace(j, where);
  if (type == "Whitespace") {
    const std::string pattern = fmt::format(R"([{0}]+|[^{0}\p{{White_Space}}]+)", kWordClass);
    return std::make_unique<RegexSplit>(Regex(pattern, what), Behavior::Removed, /*invert=*/true);
  }
  if (type == "WhitespaceSplit") {
    return std::make_unique<RegexSplit>(Regex(R"(\p{White_Space})", what), Behavior::Removed, false);
  }
  where.unsupported(
      fmt::format("pre-tokenizer type '{}' is not supported (supported: Sequence, Split, "
                  "ByteLevel, Metaspace, Whitespace, WhitespaceSplit)",
                  type));
}

}  // namespace tiergen::tok
