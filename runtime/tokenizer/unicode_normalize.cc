#include "runtime/tokenizer/unicode_normalize.h"

#include <fmt/format.h>
#include <unicode/bytestream.h>
#include <unicode/normalizer2.h>
#include <unicode/uchar.h>
#include <unicode/ustring.h>
#include <unicode/utf16.h>

#include <algorithm>
#include <cstdint>
#include <limits>

#include "runtime/core/error.h"
#include "runtime/tokenizer/unicode.h"

namespace tiergen::tok {
namespace {

[[noreturn]] void icu_failure(const char* what, UErrorCode status) {
  if (status == U_MEMORY_ALLOCATION_ERROR) throw OutOfMemoryError(fmt::format("ICU {}: out of memory", what));
  throw InternalError(fmt::format("ICU {} failed: {}", what, u_errorName(status)));
}

// ICU owns these singletons: they live for the whole process and are safe to share between threads.
const icu::Normalizer2* normalizer_instance(NormalForm form, UErrorCode& status) {
  switch (form) {
    case NormalForm::kNFC:
      return icu::Normalizer2::getNFCInstance(status);
    case NormalForm::kNFD:
      return icu::Normalizer2::getNFDInstance(status);
    case NormalForm::kNFKC:
      return icu::Normalizer2::getNFKCInstance(status);
    case NormalForm::kNFKD:
      return icu::Normalizer2::getNFKDInstance(status);
  }
  status = U_ILLEGAL_ARGUMENT_ERROR;
  return nullptr;
}

bool is_ascii(const std::string& text) {
  return std::all_of(text.begin(), text.end(), [](char c) { return static_cast<unsigned char>(c) < 0x80; });
}

}  // namespace

const char* normal_form_load_error(NormalForm form) {
  UErrorCode status = U_ZERO_ERROR;
  normalizer_instance(form, status);
  return U_FAILURE(status) ? u_errorName(status) : nullptr;
}

void normalize_unicode(std::string& text, NormalForm form) {
  // Every normalization form maps ASCII to itself, and most tokenizer input is mostly ASCII.
  if (is_ascii(text)) return;
  // ICU measures strings in int32_t.
  if (text.size() > static_cast<size_t>(std::numeric_limits<int32_t>::max())) {
    throw InvalidArgumentError(
        fmt::format("text of {} bytes is too long to normalize (ICU takes < 2 GiB)", text.size()));
  }
  UErrorCode status = U_ZERO_ERROR;
  const icu::Normalizer2* normalizer = normalizer_instance(form, status);
  if (U_FAILURE(status)) icu_failure("getInstance", status);
  const icu::StringPiece src(text.data(), static_cast<int32_t>(text.size()));
  // Text is usually in the form already (NFC above all); the check avoids building a copy then.
  const bool already = normalizer->isNormalizedUTF8(src, status);
  if (U_FAILURE(status)) icu_failure("isNormalizedUTF8", status);
  if (already) return;
  std::string out;
  out.reserve(text.size());
  icu::StringByteSink<std::string> sink(&out);
  normalizer->normalizeUTF8(0, src, sink, nullptr, status);
  if (U_FAILURE(status)) icu_failure("normalizeUTF8", status);
  text = std::move(out);
}

void lowercase_code_points(std::string& text) {
  std::string out;
  out.reserve(text.size());
  size_t i = 0;
  while (i < text.size()) {
    const auto byte = static_cast<unsigned char>(text[i]);
    if (byte < 0x80) {
      out += static_cast<char>(byte >= 'A' && byte <= 'Z' ? byte + ('a' - 'A') : byte);
      ++i;
      continue;
    }
    const char32_t cp = next_code_point(text, i);
    // ICU lowercases whole strings, applying Final_Sigma from the neighbours; handing it one code
    // point at a time gives Rust's per-character result instead. The locale is "" (root), not
    // nullptr: nullptr means the process's default locale, and a Turkish or Lithuanian one would
    // change the mappings of I, İ and accented I/J.
    UChar in[2];
    int32_t in_len = 0;
    U16_APPEND_UNSAFE(in, in_len, cp);
    UChar lower[8];  // a full lowercase mapping is at most three code points
    UErrorCode status = U_ZERO_ERROR;
    const int32_t lower_len = u_strToLower(lower, 8, in, in_len, "", &status);
    if (U_FAILURE(status)) icu_failure("u_strToLower", status);
    for (int32_t k = 0; k < lower_len;) {
      UChar32 c;
      U16_NEXT_UNSAFE(lower, k, c);
      append_utf8(out, static_cast<char32_t>(c));
    }
  }
  text = std::move(out);
}

void remove_marks(std::string& text) {
  if (is_ascii(text)) return;  // no ASCII character is a mark
  // The result is a subsequence of the input, so it is compacted in place.
  size_t kept = 0;
  size_t i = 0;
  while (i < text.size()) {
    const size_t start = i;
    const char32_t cp = next_code_point(text, i);
    if ((U_GET_GC_MASK(static_cast<UChar32>(cp)) & U_GC_M_MASK) != 0) continue;
    if (kept != start) std::copy(text.begin() + start, text.begin() + i, text.begin() + kept);
    kept += i - start;
  }
  text.resize(kept);
}

}  // namespace tiergen::tok
