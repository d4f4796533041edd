#include "runtime/tokenizer/decoder.h"

#include <fmt/format.h>

#include "runtime/tokenizer/byte_level.h"
#include "runtime/tokenizer/json_util.h"
#include "runtime/tokenizer/regex.h"
#include "runtime/tokenizer/unicode.h"

namespace tiergen::tok {
namespace {

constexpr int kMaxNesting = 32;
constexpr std::string_view kReplacementChar = "\xEF\xBF\xBD";  // U+FFFD

class SequenceDecoder final : public Decoder {
 public:
  explicit SequenceDecoder(std::vector<std::unique_ptr<Decoder>> steps) : steps_(std::move(steps)) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (const auto& step : steps_) step->decode_chain(tokens);
  }

 private:
  std::vector<std::unique_ptr<Decoder>> steps_;
};

// Maps byte-level characters back to bytes over the whole sequence at once, since one character
// of text may span several tokens; a token with a character outside the alphabet (an added token
// such as "<|endoftext|>" written with a real space) is taken as raw UTF-8.
class ByteLevelDecoder final : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::string bytes;
    for (const std::string& token : tokens) {
      const size_t mark = bytes.size();
      bool mapped = true;
      for (size_t i = 0; i < token.size();) {
        const int b = byte_level_byte(next_code_point(token, i));
        if (b < 0) {
          mapped = false;
          break;
        }
        bytes += static_cast<char>(b);
      }
      if (!mapped) {
        bytes.resize(mark);
        bytes += token;
      }
    }
    tokens.assign(1, utf8_lossy(bytes));
  }
};

class ReplaceDecoder final : public Decoder {
 public:
  ReplaceDecoder(Regex pattern, std::string content)
      : pattern_(std::move(pattern)), content_(std::move(content)) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::vector<std::pair<size_t, size_t>> matches;
    for (std::string& token : tokens) {
      if (token.empty()) continue;
      matches.clear();
      pattern_.find_all(token, matches);
      if (matches.empty()) continue;
      std::string out;
      size_t prev = 0;
      for (const auto& [start, end] : matches) {
        out.append(token, prev, start - prev);
        out += content_;
        prev = end;
      }
      out.append(token, prev);
      token = std::move(out);
    }
  }

 private:
  Regex pattern_;
  std::string content_;
};

// "<0xNN>" tokens of SentencePiece byte fallback become the bytes they stand for; a run of them
// that is not valid UTF-8 becomes one U+FFFD per byte, as in tokenizers.
class ByteFallbackDecoder final : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::vector<std::string> out;
    out.reserve(tokens.size());
    std::string pending;
    const auto flush = [&] {
      if (pending.empty()) return;
      if (find_invalid_utf8(pending) == std::string::npos) {
        out.push_back(pending);
      } else {
        for (size_t i = 0; i < pending.size(); ++i) out.emplace_back(kReplacementChar);
      }
      pending.clear();
    };
    for (std::string& token : tokens) {
      int byte = -1;
      if (token.size() == 6 && token.compare(0, 3, "<0x") == 0 && token[5] == '>')
        byte = parse_hex_byte(token[3], token[4]);
      if (byte >= 0) {
        pending += static_cast<char>(byte);
      } else {
        flush();
        out.push_back(std::move(token));
      }
    }
    flush();
    tokens = std::move(out);
  }

 private:
  static int hex_digit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  }
  // Rust's u8::from_str_radix(.., 16) on two characters, which also accepts "+F".
  static int parse_hex_byte(char hi, char lo) {
    const int l = hex_digit(lo);
    if (l < 0) return -1;
    if (hi == '+') return l;
    const int h = hex_digit(hi);
    return h < 0 ? -1 : h * 16 + l;
  }
};

class FuseDecoder final : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::string all;
    for (const std::string& t : tokens) all += t;
    tokens.assign(1, std::move(all));
  }
};

// Removes up to `start` leading and `stop` trailing copies of one character from each token.
class StripDecoder final : public Decoder {
 public:
  StripDecoder(char32_t content, size_t start, size_t stop) : content_(content), start_(start), stop_(stop) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (std::string& token : tokens) {
      std::vector<size_t> offsets;  // byte offset of each character, plus the end
      std::vector<char32_t> chars;
      for (size_t i = 0; i < token.size();) {
        offsets.push_back(i);
        chars.push_back(next_code_point(token, i));
      }
      offsets.push_back(token.size());
      size_t begin = 0;
      while (begin < std::min(start_, chars.size()) && chars[begin] == content_) ++begin;
      size_t end = chars.size();
      for (size_t k = 0; k < stop_ && end > begin && chars[end - 1] == content_; ++k) --end;
      token = token.substr(offsets[begin], offsets[end] - offsets[begin]);
    }
  }

 private:
  char32_t content_;
  size_t start_, stop_;
};

// The replacement character becomes a space, except in the first token when a prefix was added
// (tokenizers drops every one of them there, not only the leading one).
class MetaspaceDecoder final : public Decoder {
 public:
  MetaspaceDecoder(std::string replacement, bool drop_in_first)
      : replacement_(std::move(replacement)), drop_in_first_(drop_in_first) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (size_t i = 0; i < tokens.size(); ++i) {
      std::string out;
      const std::string& token = tokens[i];
      for (size_t p = 0; p < token.size();) {
        if (token.compare(p, replacement_.size(), replacement_) == 0) {
          if (i != 0 || !drop_in_first_) out += ' ';
          p += replacement_.size();
        } else {
          out += token[p++];
        }
      }
      tokens[i] = std::move(out);
    }
  }

 private:
  std::string replacement_;
  bool drop_in_first_;
};

// Word-end suffix ("</w>") becomes a space, or nothing at the end of the text.
class BpeSuffixDecoder final : public Decoder {
 public:
  explicit BpeSuffixDecoder(std::string suffix) : suffix_(std::move(suffix)) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    if (suffix_.empty()) return;
    for (size_t i = 0; i < tokens.size(); ++i) {
      const std::string_view replacement = i + 1 == tokens.size() ? "" : " ";
      std::string out;
      const std::string& token = tokens[i];
      size_t prev = 0;
      for (size_t pos = token.find(suffix_); pos != std::string::npos; pos = token.find(suffix_, prev)) {
        out.append(token, prev, pos - prev);
        out += replacement;
        prev = pos + suffix_.size();
      }
      out.append(token, prev);
      tokens[i] = std::move(out);
    }
  }

 private:
  std::string suffix_;
};

std::string single_char(const json& j, const char* key, const Where& where) {
  const std::string s = require_string(require_field(j, key, where), where[key]);
  if (s.empty() || utf8_len(static_cast<unsigned char>(s[0])) != s.size())
    where[key].fail("expected a single character");
  return s;
}

size_t count_field(const json& j, const char* key, const Where& where) {
  const int64_t n = optional_int(j, key, 0, where);
  if (n < 0) where[key].fail(fmt::format("expected a non-negative count, got {}", n));
  return static_cast<size_t>(n);
}

}  // namespace

std::unique_ptr<Decoder> make_decoder(const json& j, const Where& where) {
  if (j.is_null()) return nullptr;
  if (where.depth() > kMaxNesting) where.fail("decoders nested too deeply");
  const std::string type = component_type(j, where);
  if (type == "Sequence") {
    const Where w = where["decoders"];
    const json& list = require_array(require_field(j, "decoders", where), w);
    std::vector<std::unique_ptr<Decoder>> steps;
    for (size_t i = 0; i < list.size(); ++i) {
      if (list[i].is_null()) w[i].fail("expected a decoder, got null");
      steps.push_back(make_decoder(list[i], w[i]));
    }
    return std::make_unique<SequenceDecoder>(std::move(steps));
  }
  if (type == "ByteLevel") return std::make_unique<ByteLevelDecoder>();
  if (type == "Replace") {
    Regex pattern = pattern_from_json(require_field(j, "pattern", where), where["pattern"]);
    return std::make_unique<ReplaceDecoder>(
        std::move(pattern), require_string(require_field(j, "content", where), where["content"]));
  }
  if (type == "ByteFallback") return std::make_unique<ByteFallbackDecoder>();
  if (type == "Fuse") return std::make_unique<FuseDecoder>();
  if (type == "Strip") {
    const std::string content = single_char(j, "content", where);
    size_t i = 0;
    return std::make_unique<StripDecoder>(next_code_point(content, i), count_field(j, "start", where),
                                          count_field(j, "stop", where));
  }
  if (type == "Metaspace") {
    bool drop_in_first = optional_bool(j, "add_prefix_space", true, where);
    if (const auto scheme = optional_string(j, "prepend_scheme", where)) {
      if (*scheme != "always" && *scheme != "first" && *scheme != "never") {
        where["prepend_scheme"].fail(fmt::format("unknown prepend_scheme '{}'", *scheme));
      }
      drop_in_first = *scheme != "never";
    }
    return std::make_unique<MetaspaceDecoder>(single_char(j, "replacement", where), drop_in_first);
  }
  if (type == "BPEDecoder") {
    return std::make_unique<BpeSuffixDecoder>(optional_string(j, "suffix", where).value_or("</w>"));
  }
  where.unsupported(
      fmt::format("decoder type '{}' is not supported (supported: Sequence, ByteLevel, Replace, "
                  "ByteFallback, Fuse, Strip, Metaspace, BPEDecoder)",
                  type));
}

}  // namespace tiergen::tok
