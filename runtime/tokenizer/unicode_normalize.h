// Unicode text transforms behind the NFC/NFD/NFKC/NFKD, Lowercase and StripAccents normalizers,
// done with ICU so that tiergen carries no Unicode data tables of its own. The semantics are those
// of Hugging Face tokenizers (Rust), which is what tokenizer.json files were made with.
// All functions take valid UTF-8 and leave valid UTF-8.
#pragma once

#include <string>

namespace tiergen::tok {

enum class NormalForm { kNFC, kNFD, kNFKC, kNFKD };

// nullptr when ICU has the data for `form`; otherwise ICU's error name (a broken ICU installation).
// Asked when a tokenizer is loaded, so such a failure shows there rather than on the first encode().
const char* normal_form_load_error(NormalForm form);

// Rewrites `text` into the normalization form (UAX #15).
void normalize_unicode(std::string& text, NormalForm form);

// Rust's char::to_lowercase applied to every code point on its own: the full default lowercase
// mapping (U+0130 'İ' becomes "i\u0307"), but without the context rule that str::to_lowercase and
// Python's str.lower() apply, so a final capital sigma becomes 'σ', never 'ς'.
void lowercase_code_points(std::string& text);

// Drops every code point of General_Category Mark (Mn, Mc and Me), which is what tokenizers'
// StripAccents tests (unicode-normalization's is_combining_mark). It does not decompose first:
// "é" stays unless an NFD/NFKD normalizer ran before.
void remove_marks(std::string& text);

}  // namespace tiergen::tok
