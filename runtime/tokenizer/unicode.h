// UTF-8 helpers for the tokenizer. tokenizer.json semantics come from Rust, where every string is
// valid UTF-8, so the places where bytes become text again (decoders) follow Rust's rules exactly.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "runtime/core/utf8.h"

namespace tiergen::tok {

// The UTF-8 primitives live in runtime/core/utf8.h; the tokenizer uses them under its own namespace.
using tiergen::append_utf8;
using tiergen::find_invalid_utf8;
using tiergen::next_code_point;
using tiergen::utf8_len;
using tiergen::utf8_lossy;

// Unicode White_Space, which is what Rust's char::is_whitespace and regex `\s` test.
bool is_whitespace(char32_t cp);

}  // namespace tiergen::tok
