// UTF-8 helpers. Text semantics follow Rust's (tokenizer.json comes from Rust, where every string
// is valid UTF-8), so decoding ill-formed bytes matches String::from_utf8_lossy exactly.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace tiergen {

// Length of the code point whose lead byte is `lead`; 1 for bytes that cannot lead one, so a caller
// walking text that is already known to be valid can use it to step.
inline size_t utf8_len(unsigned char lead) {
  if (lead < 0x80) return 1;
  if ((lead & 0xE0) == 0xC0) return 2;
  if ((lead & 0xF0) == 0xE0) return 3;
  if ((lead & 0xF8) == 0xF0) return 4;
  return 1;
}

// Decodes the code point at `s[i]` of valid UTF-8 and advances `i` past it.
char32_t next_code_point(std::string_view s, size_t& i);
void append_utf8(std::string& out, char32_t cp);

// Byte offset of the first ill-formed sequence, or std::string_view::npos when `s` is valid.
size_t find_invalid_utf8(std::string_view s);
// Rust's String::from_utf8_lossy: each maximal ill-formed subpart becomes one U+FFFD.
std::string utf8_lossy(std::string_view bytes);

}  // namespace tiergen
