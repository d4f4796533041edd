#include "runtime/tokenizer/regex.h"

#include <fmt/format.h>

// PCRE2's 8-bit API: patterns and subjects are UTF-8.
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "runtime/core/error.h"
#include "runtime/tokenizer/json_util.h"
#include "runtime/tokenizer/unicode.h"

namespace tiergen::tok {
namespace {

// Bounds on one match so a hostile pattern (catastrophic backtracking) fails instead of hanging.
constexpr uint32_t kMatchLimit = 10'000'000;
constexpr size_t kJitStackMax = 4u << 20;
// UTF + UCP: \s, \w, \d and \p{..} are Unicode-aware, as in Oniguruma. MULTILINE: in Oniguruma's
// (Ruby) syntax ^ and $ are line anchors. NEVER_BACKSLASH_C: \C could end a match inside a
// character and hand invalid UTF-8 to the next step.
constexpr uint32_t kCompileOptions = PCRE2_UTF | PCRE2_UCP | PCRE2_MULTILINE | PCRE2_NEVER_BACKSLASH_C;

std::string pcre2_message(int code) {
  PCRE2_UCHAR buf[256];
  pcre2_get_error_message(code, buf, sizeof buf);
  return reinterpret_cast<const char*>(buf);
}

// Per-thread match state: PCRE2 match data and JIT stacks must not be shared between threads
// that match at the same time, and creating them per call would cost more than the match.
struct MatchScratch {
  pcre2_match_data* data = pcre2_match_data_create(1, nullptr);
  pcre2_match_context* context = pcre2_match_context_create(nullptr);
  pcre2_jit_stack* jit_stack = pcre2_jit_stack_create(32 * 1024, kJitStackMax, nullptr);

  MatchScratch() {
    if (context == nullptr) return;  // scratch() reports it
    pcre2_set_match_limit(context, kMatchLimit);
    if (jit_stack != nullptr) pcre2_jit_stack_assign(context, nullptr, jit_stack);
  }
  ~MatchScratch() {
    pcre2_jit_stack_free(jit_stack);
    pcre2_match_context_free(context);
    pcre2_match_data_free(data);
  }
  MatchScratch(const MatchScratch&) = delete;
  MatchScratch& operator=(const MatchScratch&) = delete;
};

MatchScratch& scratch() {
  thread_local MatchScratch s;
  if (s.data == nullptr || s.context == nullptr) throw OutOfMemoryError("PCRE2: cannot allocate match data");
  return s;
}

}  // namespace

std::string Regex::from_oniguruma(std::string_view pattern, const std::string& what) {
  std::string out;
  out.reserve(pattern.size());
  bool in_class = false;
  int nested = 0;  // open nested classes inside the current class
  for (size_t i = 0; i < pattern.size(); ++i) {
    const char c = pattern[i];
    const char next = i + 1 < pattern.size() ? pattern[i + 1] : '\0';
    if (c == '\\') {
      if (next == 'h' || next == 'H') {
        // Oniguruma's \h is a hex digit; in PCRE2 it would be horizontal space.
        if (in_class) {
          if (next == 'H') throw UnsupportedError(what + ": \\H inside a character class is not supported");
          out += "0-9a-fA-F";
        } else {
          out += next == 'h' ? "[0-9a-fA-F]" : "[^0-9a-fA-F]";
        }
        ++i;
        continue;
      }
      out += c;
      if (i + 1 < pattern.size()) out += pattern[++i];
      continue;
    }
    if (!in_class) {
      if (c == '[') {
        in_class = true;
        out += c;
        // A ']' right after '[' or '[^' is a literal, not the end of the class.
        if (next == '^') out += pattern[++i];
        if (i + 1 < pattern.size() && pattern[i + 1] == ']') out += pattern[++i];
        continue;
      }
      out += c;
      continue;
    }
    if (c == '[' && next == ':') {  // POSIX class such as [:alpha:], the same in both
      const size_t close = pattern.find(":]", i + 2);
      if (close == std::string_view::npos) throw FormatError(what + ": unterminated POSIX class in regex");
      out.append(pattern.substr(i, close + 2 - i));
      i = close + 1;
    } else if (c == '[') {
      // Oniguruma nests classes as a union: [^a[bc]] is [^abc]. PCRE2 has no nesting, so a
      // positive nested class is flattened into its parent (BLOOM's split pattern needs this).
      if (next == '^') throw UnsupportedError(what + ": negated nested character classes are not supported");
      ++nested;
    } else if (c == ']') {
      if (nested > 0) {
        --nested;
      } else {
        in_class = false;
        out += c;
      }
    } else if (c == '&' && next == '&') {
      throw UnsupportedError(what + ": character class intersection (&&) is not supported");
    } else {
      out += c;
    }
  }
  return out;
}

struct Regex::Code {
  pcre2_code* code = nullptr;
  bool jit = false;
  std::string what;
  ~Code() { pcre2_code_free(code); }
};

Regex::Regex(std::string_view pattern, std::string what) {
  auto code = std::make_shared<Code>();
  code->what = std::move(what);
  int err = 0;
  PCRE2_SIZE err_offset = 0;
  code->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), kCompileOptions,
                             &err, &err_offset, nullptr);
  if (code->code == nullptr) {
    throw FormatError(
        fmt::format("{}: invalid regex at offset {}: {}", code->what, err_offset, pcre2_message(err)));
  }
  // JIT is an optimisation: builds of PCRE2 without it still match, only slower.
  code->jit = pcre2_jit_compile(code->code, PCRE2_JIT_COMPLETE) == 0;
  code_ = std::move(code);
}

std::string Regex::escape(std::string_view literal) {
  std::string out;
  out.reserve(literal.size() * 2);
  for (char c : literal) {
    const auto u = static_cast<unsigned char>(c);
    // A backslash before any ASCII non-alphanumeric is a literal in PCRE2; bytes >= 0x80 are
    // parts of UTF-8 characters and are literal already.
    const bool alnum = (u >= '0' && u <= '9') || (u >= 'a' && u <= 'z') || (u >= 'A' && u <= 'Z');
    if (u < 0x80 && !alnum) out += '\\';
    out += c;
  }
  return out;
}

bool Regex::search(std::string_view text, size_t from, size_t& start, size_t& end) const {
  MatchScratch& s = scratch();
  // The text was validated once up front; re-checking UTF-8 per call would make splitting quadratic.
  const uint32_t options = PCRE2_NO_UTF_CHECK;
  const auto subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  int rc = code_->jit ? pcre2_jit_match(code_->code, subject, text.size(), from, options, s.data, s.context)
                      : pcre2_match(code_->code, subject, text.size(), from, options, s.data, s.context);
  if (rc == PCRE2_ERROR_JIT_STACKLIMIT) {
    // Deep backtracking on a long input: the interpreter keeps its state on the heap instead.
    rc = pcre2_match(code_->code, subject, text.size(), from, options | PCRE2_NO_JIT, s.data, s.context);
  }
  if (rc == PCRE2_ERROR_NOMATCH) return false;
  if (rc < 0) {
    throw FormatError(
        fmt::format("{}: regex failed on a {}-byte input: {}", code_->what, text.size(), pcre2_message(rc)));
  }
  const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(s.data);
  start = ov[0];
  end = ov[1];
  // \K inside a lookaround can report a match that ends before it starts; treat it as empty.
  if (end < start) end = start;
  return true;
}

void Regex::find_all(std::string_view text, std::vector<std::pair<size_t, size_t>>& out) const {
  size_t pos = 0;
  bool have_last = false;
  size_t last_end = 0;
  while (pos <= text.size()) {
    size_t start, end;
    if (!search(text, pos, start, end)) break;
    // As Oniguruma's find_iter: an empty match right where the previous match ended is skipped
    // by stepping one character, which also guarantees progress.
    if (start == end && have_last && end == last_end) {
      if (pos >= text.size()) break;
      pos += utf8_len(static_cast<unsigned char>(text[pos]));
      continue;
    }
    out.emplace_back(start, end);
    have_last = true;
    last_end = end;
    pos = end;
  }
}

Regex pattern_from_json(const nlohmann::json& j, const Where& where) {
  require_object(j, where);
  const std::string what = fmt::format("{}: {}", where.origin(), where.path());
  if (const json* s = find_field(j, "String")) {
    return Regex(Regex::escape(require_string(*s, where["String"])), what);
  }
  if (const json* r = find_field(j, "Regex")) {
    return Regex(Regex::from_oniguruma(require_string(*r, where["Regex"]), what), what);
  }
  where.fail("expected a pattern object with a 'String' or 'Regex' field");
}

}  // namespace tiergen::tok
