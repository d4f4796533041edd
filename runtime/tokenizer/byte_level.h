// GPT-2's byte-level alphabet: every byte maps to a printable code point (printable ASCII and most
// of Latin-1 map to themselves, the rest to U+0100..U+0143), so any byte string becomes a string
// of visible characters that BPE can merge, and the map can be inverted when decoding.
#pragma once

#include <string>
#include <string_view>

namespace tiergen::tok {

// Appends the byte-level characters of `bytes` to `out`.
void append_byte_level(std::string& out, std::string_view bytes);
// The byte that byte-level character `cp` stands for, or -1 when `cp` is not in the alphabet.
int byte_level_byte(char32_t cp);

}  // namespace tiergen::tok
