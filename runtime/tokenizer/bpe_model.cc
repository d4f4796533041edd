#include "runtime/tokenizer/bpe_model.h"

#include <fmt/format.h>

#include <algorithm>
#include <limits>
#include <queue>

#include "runtime/core/error.h"
#include "runtime/tokenizer/json_util.h"
#include "runtime/tokenizer/unicode.h"

namespace tiergen::tok {
namespace {

constexpr size_t kCacheEntries = 10'000;
constexpr size_t kCacheMaxWordBytes = 256;

uint64_t pair_key(int32_t left, int32_t right) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
}

// One symbol of a word being merged: a doubly linked list over a vector, so a merge is O(1) and
// merged-away symbols are only marked (len 0).
struct Symbol {
  int32_t id;
  int32_t prev;
  int32_t next;
  uint32_t len;  // bytes of the word covered; 0 once merged into its left neighbour
};

struct Merge {
  uint32_t rank;
  int32_t pos;  // index of the left symbol
  int32_t new_id;
};

// Lowest rank first, and among equal ranks the leftmost pair, as tokenizers orders its heap.
struct LaterMerge {
  bool operator()(const Merge& a, const Merge& b) const {
    return a.rank != b.rank ? a.rank > b.rank : a.pos > b.pos;
  }
};

}  // namespace

BpeModel::BpeModel(const json& j, const Where& where) : origin_(where.origin()) {
  std::fill(std::begin(byte_ids_), std::end(byte_ids_), -1);

  const Where vw = where["vocab"];
  const json& vocab = require_object(require_field(j, "vocab", where), vw);
  // An empty vocabulary would load, encode nothing, and fail only when the first output is decoded.
  if (vocab.empty()) vw.fail("is empty: a tokenizer needs at least one token");
  vocab_.reserve(vocab.size());
  vocab_r_.reserve(vocab.size());
  for (const auto& [token, id_json] : vocab.items()) {
    // Checked inline: building the error location for each of 50k+ entries would cost more than
    // the rest of the load.
    const bool plain = id_json.is_number_unsigned() &&
                       id_json.get<uint64_t>() <= static_cast<uint64_t>(std::numeric_limits<int32_t>::max());
    const int32_t id = plain ? static_cast<int32_t>(id_json.get<uint64_t>()) : require_id(id_json, vw[token]);
    const auto [it, inserted] = vocab_.emplace(token, id);
    // Keys of a node-based map never move, so the reverse map can point at them. With duplicate
    // ids the first token wins.
    if (inserted) vocab_r_.emplace(id, &it->first);
    max_id_ = std::max(max_id_, id);
  }

  if (const json* dropout = find_field(j, "dropout"); dropout != nullptr && !dropout->is_null()) {
    if (!dropout->is_number())
      where["dropout"].fail(fmt::format("expected a number, got {}", json_kind(*dropout)));
    const double p = dropout->get<double>();
    if (!(p >= 0.0 && p <= 1.0)) where["dropout"].fail(fmt::format("dropout {} is not in [0, 1]", p));
    // With dropout tokenizers skips merges at random: encoding would not be reproducible.
    if (p > 0.0) where["dropout"].unsupported(fmt::format("BPE dropout {} is not supported", p));
  }
  unk_token_ = optional_string(j, "unk_token", where);
  continuing_subword_prefix_ = optional_string(j, "continuing_subword_prefix", where);
  end_of_word_suffix_ = optional_string(j, "end_of_word_suffix", where);
  fuse_unk_ = optional_bool(j, "fuse_unk", false, where);
  byte_fallback_ = optional_bool(j, "byte_fallback", false, where);
  ignore_merges_ = optional_bool(j, "ignore_merges", false, where);

  for (int b = 0; b < 256; ++b) {
    if (const auto it = vocab_.find(fmt::format("<0x{:02X}>", b)); it != vocab_.end())
      byte_ids_[b] = it->second;
  }

  const Where mw = where["merges"];
  const json& merges = require_array(require_field(j, "merges", where), mw);
  const size_t prefix_len = continuing_subword_prefix_ ? continuing_subword_prefix_->size() : 0;
  merges_.reserve(merges.size());
  std::string merged;
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const json& m = merges[rank];
    const Where w = mw[rank];
    std::string_view left, right;
    if (m.is_string()) {
      // The older "left right" form: exactly one space, as tokenizers requires.
      const std::string_view line = m.get_ref<const std::string&>();
      const size_t space = line.find(' ');
      if (space == std::string::npos || line.find(' ', space + 1) != std::string::npos) {
        w.fail(fmt::format("merge '{}' is not two tokens separated by one space", line));
      }
      left = line.substr(0, space);
      right = line.substr(space + 1);
    } else if (m.is_array() && m.size() == 2) {
      if (!m[0].is_string()) require_string(m[0], w[0]);  // throws with the location
      if (!m[1].is_string()) require_string(m[1], w[1]);
      left = m[0].get_ref<const std::string&>();
      right = m[1].get_ref<const std::string&>();
    } else {
      w.fail(fmt::format("expected a merge (\"left right\" or [left, right]), got {}", json_kind(m)));
    }
    const auto l = vocab_.find(left);
    if (l == vocab_.end()) w.fail(fmt::format("merge token '{}' is not in the vocab", left));
    const auto r = vocab_.find(right);
    if (r == vocab_.end()) w.fail(fmt::format("merge token '{}' is not in the vocab", right));
    // The right part carries the continuing-subword prefix, which the merged token does not.
    if (right.size() < prefix_len)
      w.fail(fmt::format("merge token '{}' is shorter than the subword prefix", right));
    merged.assign(left).append(right.substr(prefix_len));
    const auto n = vocab_.find(merged);
    if (n == vocab_.end()) w.fail(fmt::format("merged token '{}' is not in the vocab", merged));
    // A repeated pair keeps its last rank, as a map built from the list in order does in tokenizers.
    merges_[pair_key(l->second, r->second)] = {static_cast<uint32_t>(rank), n->second};
  }
}

std::optional<int32_t> BpeModel::token_to_id(std::string_view token) const {
  const auto it = vocab_.find(token);
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

const std::string* BpeModel::id_to_token(int32_t id) const {
  const auto it = vocab_r_.find(id);
  return it == vocab_r_.end() ? nullptr : it->second;
}

int32_t BpeModel::unk_id() const {
  const auto it = vocab_.find(*unk_token_);
  if (it == vocab_.end()) {
    throw FormatError(fmt::format("{}: model.unk_token '{}' is needed for this text but is not in the vocab",
                                  origin_, *unk_token_));
  }
  return it->second;
}

void BpeModel::tokenize(std::string_view piece, std::vector<int32_t>& out) const {
  if (piece.empty()) return;
  // Llama-3: a pre-token that is itself a vocab entry is emitted whole, even if the merges would
  // have split it differently.
  if (ignore_merges_) {
    if (const auto it = vocab_.find(piece); it != vocab_.end()) {
      out.push_back(it->second);
      return;
    }
  }
  {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    if (const auto it = cache_.find(piece); it != cache_.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int32_t> ids;
  merge_word(piece, ids);
  out.insert(out.end(), ids.begin(), ids.end());
  if (piece.size() < kCacheMaxWordBytes) {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    if (cache_.size() < kCacheEntries) cache_.emplace(std::string(piece), std::move(ids));
  }
}

void BpeModel::merge_word(std::string_view word, std::vector<int32_t>& out) const {
  std::vector<Symbol> symbols;
  symbols.reserve(word.size());
  const auto add = [&symbols](int32_t id, uint32_t len) {
    const auto index = static_cast<int32_t>(symbols.size());
    if (index > 0) symbols.back().next = index;
    symbols.push_back(Symbol{id, index - 1, -1, len});
  };

  // 1. One symbol per character; characters outside the vocab become byte tokens or <unk>.
  std::optional<std::pair<int32_t, uint32_t>> unk;  // pending unknown run: (unk id, bytes)
  std::string decorated;
  for (size_t i = 0; i < word.size();) {
    const size_t n = std::min(utf8_len(static_cast<unsigned char>(word[i])), word.size() - i);
    const bool first = i == 0;
    const bool last = i + n == word.size();
    std::string_view key = word.substr(i, n);
    if ((!first && continuing_subword_prefix_) || (last && end_of_word_suffix_)) {
      decorated.clear();
      if (!first && continuing_subword_prefix_) decorated += *continuing_subword_prefix_;
      decorated += key;
      if (last && end_of_word_suffix_) decorated += *end_of_word_suffix_;
      key = decorated;
    }
    i += n;

    if (const auto it = vocab_.find(key); it != vocab_.end()) {
      if (unk) {
        add(unk->first, unk->second);
        unk.reset();
      }
      add(it->second, static_cast<uint32_t>(n));
      continue;
    }
    if (byte_fallback_) {
      const bool all_bytes = std::all_of(
          key.begin(), key.end(), [this](char c) { return byte_ids_[static_cast<unsigned char>(c)] >= 0; });
      if (all_bytes) {
        // tokenizers does not flush a pending <unk> here; doing the same keeps ids identical.
        for (char c : key) add(byte_ids_[static_cast<unsigned char>(c)], 1);
        continue;
      }
    }
    if (unk_token_) {
      if (unk && fuse_unk_) {
        unk->second += static_cast<uint32_t>(n);
      } else {
        if (unk) add(unk->first, unk->second);
        unk.emplace(unk_id(), static_cast<uint32_t>(n));
      }
    }
    // Without an unk_token an unknown character is dropped, as in tokenizers.
  }
  if (unk) add(unk->first, unk->second);

  // 2. Apply merges, lowest rank first. Stale heap entries (a side already merged into something
  // else) are detected when popped and skipped.
  const auto find_merge = [this](int32_t left, int32_t right) -> const std::pair<uint32_t, int32_t>* {
    const auto it = merges_.find(pair_key(left, right));
    return it == merges_.end() ? nullptr : &it->second;
  };
  std::priority_queue<Merge, std::vector<Merge>, LaterMerge> queue;
  for (size_t k = 0; k + 1 < symbols.size(); ++k) {
    if (const auto* m = find_merge(symbols[k].id, symbols[k + 1].id)) {
      queue.push(Merge{m->first, static_cast<int32_t>(k), m->second});
    }
  }
  const auto count = static_cast<int32_t>(symbols.size());
  while (!queue.empty()) {
    const Merge top = queue.top();
    queue.pop();
    Symbol& cur = symbols[top.pos];
    if (cur.len == 0 || cur.next == -1) continue;
    const int32_t next_pos = cur.next;
    const Symbol right = symbols[next_pos];
    const auto* m = find_merge(cur.id, right.id);
    if (m == nullptr || m->second != top.new_id) continue;

    cur.id = top.new_id;
    cur.len += right.len;
    cur.next = right.next;
    symbols[next_pos].len = 0;
    if (right.next >= 0 && right.next < count) symbols[right.next].prev = top.pos;

    if (cur.prev >= 0) {
      if (const auto* pm = find_merge(symbols[cur.prev].id, cur.id))
        queue.push(Merge{pm->first, cur.prev, pm->second});
    }
    if (cur.next >= 0 && cur.next < count) {
      if (const auto* nm = find_merge(cur.id, symbols[cur.next].id))
        queue.push(Merge{nm->first, top.pos, nm->second});
    }
  }
  for (const Symbol& s : symbols) {
    if (s.len != 0) out.push_back(s.id);
  }
}

}  // namespace tiergen::tok
