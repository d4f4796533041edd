#include "runtime/tokenizer/byte_level.h"

#include <array>

#include "runtime/tokenizer/unicode.h"

namespace tiergen::tok {
namespace {

struct Tables {
  std::array<std::string, 256> to_char;  // byte -> UTF-8 of its character
  std::array<int, 0x144> to_byte;        // code point -> byte (-1: not in the alphabet)

  Tables() {
    to_byte.fill(-1);
    // Bytes that are printable as they are keep their code point; the others, in byte order,
    // take the code points from U+0100 up (GPT-2's bytes_to_unicode).
    char32_t next = 0x100;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
      const char32_t cp = printable ? static_cast<char32_t>(b) : next++;
      append_utf8(to_char[b], cp);
      to_byte[cp] = b;
    }
  }
};

const Tables& tables() {
  static const Tables t;
  return t;
}

}  // namespace

void append_byte_level(std::string& out, std::string_view bytes) {
  const Tables& t = tables();
  for (char c : bytes) out += t.to_char[static_cast<unsigned char>(c)];
}

int byte_level_byte(char32_t cp) {
  const Tables& t = tables();
  return cp < t.to_byte.size() ? t.to_byte[cp] : -1;
}

}  // namespace tiergen::tok
