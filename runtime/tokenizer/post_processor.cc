#include "runtime/tokenizer/post_processor.h"

#include <fmt/format.h>

#include <map>
#include <string>

#include "runtime/tokenizer/json_util.h"

namespace tiergen::tok {
namespace {

constexpr int kMaxNesting = 32;

// The `single` template: a list of pieces, each either the sequence itself or the ids of a special
// token. An empty `ids` list stands for the sequence.
class TemplateProcessor final : public PostProcessor {
 public:
  explicit TemplateProcessor(std::vector<std::vector<int32_t>> pieces) : pieces_(std::move(pieces)) {}
  void process(std::vector<int32_t>& ids) const override {
    std::vector<int32_t> out;
    for (const auto& piece : pieces_) {
      if (piece.empty()) {
        out.insert(out.end(), ids.begin(), ids.end());
      } else {
        out.insert(out.end(), piece.begin(), piece.end());
      }
    }
    ids = std::move(out);
  }

 private:
  std::vector<std::vector<int32_t>> pieces_;
};

class NoOpProcessor final : public PostProcessor {
 public:
  void process(std::vector<int32_t>&) const override {}
};

class SequenceProcessor final : public PostProcessor {
 public:
  explicit SequenceProcessor(std::vector<std::unique_ptr<PostProcessor>> steps) : steps_(std::move(steps)) {}
  void process(std::vector<int32_t>& ids) const override {
    for (const auto& step : steps_) step->process(ids);
  }

 private:
  std::vector<std::unique_ptr<PostProcessor>> steps_;
};

std::unique_ptr<PostProcessor> make_template(const json& j, const Where& where) {
  // special_tokens: {"<|begin_of_text|>": {"id": "<|begin_of_text|>", "ids": [0], "tokens": [...]}}
  std::map<std::string, std::vector<int32_t>, std::less<>> specials;
  if (const json* st = find_field(j, "special_tokens"); st != nullptr && !st->is_null()) {
    const Where sw = where["special_tokens"];
    require_object(*st, sw);
    for (const auto& [name, spec] : st->items()) {
      const Where w = sw[name];
      require_object(spec, w);
      const json& ids_json = require_array(require_field(spec, "ids", w), w["ids"]);
      std::vector<int32_t> ids;
      for (size_t i = 0; i < ids_json.size(); ++i) ids.push_back(require_id(ids_json[i], w["ids"][i]));
      if (ids.empty()) w["ids"].fail("a special token needs at least one id");
      specials.emplace(name, std::move(ids));
    }
  }
  const Where tw = where["single"];
  const json& single = require_array(require_field(j, "single", where), tw);
  std::vector<std::vector<int32_t>> pieces;
  for (size_t i = 0; i < single.size(); ++i) {
    const Where w = tw[i];
    require_object(single[i], w);
    if (const json* seq = find_field(single[i], "Sequence")) {
      require_object(*seq, w["Sequence"]);
      const std::string id = require_string(require_field(*seq, "id", w["Sequence"]), w["Sequence"]["id"]);
      if (id != "A")
        w["Sequence"]["id"].fail(fmt::format("the single template can only use sequence A, not '{}'", id));
      pieces.emplace_back();
    } else if (const json* sp = find_field(single[i], "SpecialToken")) {
      require_object(*sp, w["SpecialToken"]);
      const std::string id =
          require_string(require_field(*sp, "id", w["SpecialToken"]), w["SpecialToken"]["id"]);
      const auto it = specials.find(id);
      if (it == specials.end()) {
        w["SpecialToken"].fail(fmt::format("special token '{}' is not defined in special_tokens", id));
      }
      pieces.push_back(it->second);
    } else {
      w.fail("expected a 'Sequence' or 'SpecialToken' template piece");
    }
  }
  return std::make_unique<TemplateProcessor>(std::move(pieces));
}

// RoBERTa/BERT: cls + sequence + sep, with cls and sep given as [token, id].
std::unique_ptr<PostProcessor> make_cls_sep(const json& j, const Where& where) {
  const auto token_id = [&](const char* key) {
    const Where w = where[key];
    const json& pair = require_array(require_field(j, key, where), w);
    if (pair.size() != 2) w.fail("expected [token, id]");
    require_string(pair[0], w[0]);
    return require_id(pair[1], w[1]);
  };
  const int32_t cls = token_id("cls");
  const int32_t sep = token_id("sep");
  return std::make_unique<TemplateProcessor>(std::vector<std::vector<int32_t>>{{cls}, {}, {sep}});
}

}  // namespace

std::unique_ptr<PostProcessor> make_post_processor(const json& j, const Where& where) {
  if (j.is_null()) return nullptr;
  if (where.depth() > kMaxNesting) where.fail("post-processors nested too deeply");
  const std::string type = component_type(j, where);
  if (type == "TemplateProcessing") return make_template(j, where);
  if (type == "ByteLevel") return std::make_unique<NoOpProcessor>();  // it only trims offsets
  if (type == "RobertaProcessing" || type == "BertProcessing") return make_cls_sep(j, where);
  if (type == "Sequence") {
    const Where w = where["processors"];
    const json& list = require_array(require_field(j, "processors", where), w);
    std::vector<std::unique_ptr<PostProcessor>> steps;
    for (size_t i = 0; i < list.size(); ++i) {
      if (list[i].is_null()) w[i].fail("expected a post-processor, got null");
      steps.push_back(make_post_processor(list[i], w[i]));
    }
    return std::make_unique<SequenceProcessor>(std::move(steps));
  }
  where.unsupported(
      fmt::format("post-processor type '{}' is not supported (supported: TemplateProcessing, "
                  "ByteLevel, RobertaProcessing, BertProcessing, Sequence)",
                  type));
}

}  // namespace tiergen::tok
