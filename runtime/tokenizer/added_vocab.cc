#include "runtime/tokenizer/added_vocab.h"

#include <algorithm>
#include <limits>
#include <map>

#include "runtime/tokenizer/normalizer.h"
#include "runtime/tokenizer/regex.h"
#include "runtime/tokenizer/unicode.h"

namespace tiergen::tok {
namespace {

bool same_token(const AddedToken& a, const AddedToken& b) {
  return a.content == b.content && a.single_word == b.single_word && a.lstrip == b.lstrip &&
         a.rstrip == b.rstrip && a.normalized == b.normalized && a.special == b.special;
}

// Rust regex's Unicode \w, which tokenizers uses to decide whether a single_word token touches a word.
bool is_word_char(std::string_view ch) {
  static const Regex word(R"(^[\p{Alphabetic}\p{M}\p{Nd}\p{Pc}\p{Join_Control}])", "added-token word test");
  size_t start, end;
  return word.search(ch, 0, start, end);
}

size_t last_char_start(std::string_view s) {
  size_t i = s.size() - 1;
  while (i > 0 && (static_cast<unsigned char>(s[i]) & 0xC0) == 0x80) --i;
  return i;
}

bool ends_with_word(std::string_view s) { return !s.empty() && is_word_char(s.substr(last_char_start(s))); }

bool starts_with_word(std::string_view s) {
  return !s.empty() &&
         is_word_char(s.substr(0, std::min(s.size(), utf8_len(static_cast<unsigned char>(s[0])))));
}

// Start of the whitespace run that ends `s`.
size_t trailing_space_start(std::string_view s) {
  size_t end = s.size();
  while (end > 0) {
    const size_t start = last_char_start(s.substr(0, end));
    size_t i = start;
    if (!is_whitespace(next_code_point(s, i))) break;
    end = start;
  }
  return end;
}

// Length of the whitespace run that begins `s`.
size_t leading_space_len(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    size_t next = i;
    if (!is_whitespace(next_code_point(s, next))) break;
    i = next;
  }
  return i;
}

}  // namespace

void AddedVocab::Trie::insert(std::string_view pattern, int32_t id) {
  int32_t node = 0;
  for (char c : pattern) {
    const auto byte = static_cast<unsigned char>(c);
    auto& children = nodes[node].children;
    const auto it =
        std::find_if(children.begin(), children.end(), [byte](const auto& e) { return e.first == byte; });
    if (it != children.end()) {
      node = it->second;
    } else {
      const auto child = static_cast<int32_t>(nodes.size());
      nodes[node].children.emplace_back(byte, child);  // before push_back: it may reallocate `nodes`
      nodes.emplace_back();
      node = child;
    }
  }
  nodes[node].id = id;
  first_byte[static_cast<unsigned char>(pattern[0])] = true;
}

size_t AddedVocab::Trie::longest_at(std::string_view text, size_t pos, int32_t& id) const {
  size_t best = 0;
  int32_t node = 0;
  for (size_t i = pos; i < text.size(); ++i) {
    const auto byte = static_cast<unsigned char>(text[i]);
    const auto& children = nodes[node].children;
    const auto it =
        std::find_if(children.begin(), children.end(), [byte](const auto& e) { return e.first == byte; });
    if (it == children.end()) break;
    node = it->second;
    if (nodes[node].id >= 0) {
      best = i + 1 - pos;
      id = nodes[node].id;
    }
  }
  return best;
}

void AddedVocab::add(const std::vector<AddedToken>& tokens, const BpeModel& model,
                     const Normalizer* normalizer) {
  // New ids continue after the model vocab, counted in entries as tokenizers does.
  int64_t next_id = static_cast<int64_t>(model.vocab_entries());
  if (!by_id_.empty() && (max_id_ >= next_id || next_id == 0)) next_id = max_id_ + 1;

  for (const AddedToken& t : tokens) {
    if (t.content.empty()) continue;
    const auto known = by_content_.find(t.content);
    if (known != by_content_.end() && same_token(by_id_.at(known->second), t)) continue;

    int32_t id;
    if (known != by_content_.end()) {
      id = known->second;
    } else if (const auto model_id = model.token_to_id(t.content)) {
      id = *model_id;
    } else {
      id = static_cast<int32_t>(std::min<int64_t>(next_id++, std::numeric_limits<int32_t>::max()));
    }
    if (t.normalized && normalizer != nullptr) {
      std::string form = t.content;
      normalizer->normalize(form);
      if (form != t.content) normalized_form_[id] = std::move(form);
    }
    by_content_[t.content] = id;
    if (t.special) special_.insert(t.content);
    by_id_[id] = t;
    max_id_ = std::max(max_id_, id);
  }
  rebuild_tries();
}

void AddedVocab::rebuild_tries() {
  raw_trie_ = Trie();
  normalized_trie_ = Trie();
  // In id order, so that when two tokens share a pattern the choice does not depend on hashing.
  const std::map<int32_t, const AddedToken*> ordered = [this] {
    std::map<int32_t, const AddedToken*> m;
    for (const auto& [id, t] : by_id_) m.emplace(id, &t);
    return m;
  }();
  for (const auto& [id, t] : ordered) {
    const std::string* pattern = &t->content;
    if (t->normalized) {
      if (const auto it = normalized_form_.find(id); it != normalized_form_.end()) pattern = &it->second;
    }
    if (pattern->empty()) continue;
    (t->normalized ? normalized_trie_ : raw_trie_).insert(*pattern, id);
  }
}

void AddedVocab::split(std::string_view text, bool normalized, std::vector<Segment>& out) const {
  const Trie& trie = normalized ? normalized_trie_ : raw_trie_;
  size_t start_offset = 0;  // end of the text already emitted
  size_t pos = 0;           // where the search for the next match resumes
  if (trie.nodes.size() > 1) {
    while (pos < text.size()) {
      size_t start = pos, len = 0;
      int32_t id = -1;
      for (; start < text.size(); ++start) {
        if (trie.first_byte[static_cast<unsigned char>(text[start])] &&
            (len = trie.longest_at(text, start, id)) > 0) {
          break;
        }
      }
      if (len == 0) break;
      size_t stop = start + len;
      pos = stop;
      const AddedToken& t = by_id_.at(id);
      if (t.single_word) {
        const bool space_before = start == 0 || !ends_with_word(text.substr(0, start));
        const bool space_after = stop == text.size() || !starts_with_word(text.substr(stop));
        if (!space_before || !space_after) continue;
      }
      // lstrip may not reach into text that an earlier token already took.
      if (t.lstrip) start = std::max(trailing_space_start(text.substr(0, start)), start_offset);
      if (t.rstrip) {
        stop += leading_space_len(text.substr(stop));
        pos = stop;
      }
      if (start_offset < start) out.push_back({start_offset, start, -1});
      out.push_back({start, stop, id});
      start_offset = stop;
    }
  }
  if (start_offset < text.size()) out.push_back({start_offset, text.size(), -1});
}

std::optional<int32_t> AddedVocab::token_to_id(std::string_view content) const {
  const auto it = by_content_.find(content);
  if (it == by_content_.end()) return std::nullopt;
  return it->second;
}

const AddedToken* AddedVocab::token(int32_t id) const {
  const auto it = by_id_.find(id);
  return it == by_id_.end() ? nullptr : &it->second;
}

const std::string* AddedVocab::decode_form(int32_t id) const {
  const auto it = by_id_.find(id);
  if (it == by_id_.end()) return nullptr;
  const auto form = normalized_form_.find(id);
  return form != normalized_form_.end() ? &form->second : &it->second.content;
}

}  // namespace tiergen::tok
