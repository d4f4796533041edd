// Chat templates (runtime/tokenizer/chat_template.h, jinja.h): real models' templates give the
// prompts they were written for; Jinja's whitespace rules under transformers' settings
// (trim_blocks, lstrip_blocks, `-`), scoping (a loop's sets stay in it, a namespace carries them
// out), filters, tests and methods; raise_exception and what is outside the subset are errors.
#include "runtime/tokenizer/chat_template.h"

#include "runtime/core/error.h"
#include "tests/testutil/testutil.h"

namespace tiergen {
namespace {

std::string render(const std::string& src, const jinja::Dict& vars = {}) {
  return jinja::Template(src, "t.jinja").render(vars);
}

jinja::Value list(std::vector<std::string> xs) {
  jinja::List l;
  for (auto& x : xs) l.push_back(jinja::Value::string(x));
  return jinja::Value::of_list(std::move(l));
}

// Qwen2's template (ChatML, a default system turn).
const char* kQwen2 =
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\nYou "
    "are a helpful assistant.<|im_end|>\\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ "
    "'<|im_start|>assistant\\n' }}{% endif %}";

// Llama-3's template (the special tokens from tokenizer_config.json).
const char* kLlama3 =
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' "
    "%}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if "
    "add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}";

TEST(ChatTemplate, RealTemplatesGiveTheirPrompts) {
  const ChatTemplate qwen(kQwen2, "qwen2", {});
  EXPECT_EQ(qwen.render({{"user", "Hi"}}),
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
            "<|im_start|>assistant\n");
  EXPECT_EQ(qwen.render({{"system", "Be brief."}, {"user", "Hi"}}),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
  const ChatTemplate llama(kLlama3, "llama3", {{"bos_token", "<|begin_of_text|>"}});
  EXPECT_EQ(llama.render({{"system", "S"}, {"user", "  U \n"}}),
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nS<|eot_id|><|start_header_id|>user"
            "<|end_header_id|>\n\nU<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n");
}

TEST(ChatTemplate, LoadsFromTheModelFolder) {
  testing::TempDir tmp;
  EXPECT_FALSE(ChatTemplate::load(tmp.path()).has_value());
  testing::write_file(tmp / "tokenizer_config.json",
                      R"({"eos_token": {"content": "</s>"}, "chat_template": [{"name": "tool_use", "template": "x"},)"
                      R"( {"name": "default", "template": "{{ messages[0].content }}{{ eos_token }}"}]})");
  auto t = ChatTemplate::load(tmp.path());
  ASSERT_TRUE(t.has_value());
  EXPECT_EQ(t->render({{"user", "hello"}}), "hello</s>");
  testing::write_file(tmp / "chat_template.jinja", "[{{ messages | length }}]");  // wins over the config
  EXPECT_EQ(ChatTemplate::load(tmp.path())->render({{"user", "a"}, {"assistant", "b"}}), "[2]");
  testing::write_file(tmp / "chat_template.jinja", "{% import 'm.jinja' as m %}");
  EXPECT_THROW_WITH(ChatTemplate::load(tmp.path()), FormatError,
                    "chat_template.jinja:1: '{% import %}' is not supported");
  testing::write_file(tmp / "tokenizer_config.json", "{not json");
  std::filesystem::remove(tmp / "chat_template.jinja");
  EXPECT_THROW_WITH(ChatTemplate::load(tmp.path()), FormatError, "is not a JSON object");
}

TEST(Jinja, WhitespaceAsTransformersRendersIt) {
  const jinja::Dict xs = {{"xs", list({"a", "b"})}};
  // trim_blocks takes the newline after a block tag, lstrip_blocks the indent before one.
  EXPECT_EQ(render("{% for x in xs %}\n    {{ x }}\n    {% endfor %}\nend", xs), "    a\n    b\nend");
  EXPECT_EQ(render("{%- for x in xs -%}\n  {{ x }}  \n{%- endfor %}!", xs), "ab!");
  EXPECT_EQ(render("a  {{- ' b ' -}}  c"), "a b c");
  EXPECT_EQ(render("x\n  {%+ if true %}y{% endif %}"), "x\n  y");
  EXPECT_EQ(render("{# a comment #}\nz"), "z");
}

TEST(Jinja, ScopesFiltersTestsAndMethods) {
  const jinja::Dict xs = {{"xs", list({"a", "b", "c"})}};
  EXPECT_EQ(render("{% set ns = namespace(n=0) %}{% set c = 0 %}{% for x in xs %}{% set ns.n = ns.n + 1 %}"
                   "{% set c = c + 1 %}{% endfor %}{{ ns.n }} {{ c }}",
                   xs),
            "3 0");
  EXPECT_EQ(render("{% for x in xs if x != 'b' %}{{ loop.index }}{{ x }}{% if not loop.last %},{% endif %}"
                   "{% else %}none{% endfor %}",
                   xs),
            "1a,2c");
  EXPECT_EQ(render("{% for x in [] %}x{% else %}empty{% endfor %}"), "empty");
  EXPECT_EQ(render("{{ xs[1:] | join('-') }} {{ xs[-1] }} {{ xs[::-1] | first }} {{ xs | length }}", xs), "b-c c c 3");
  EXPECT_EQ(render("{{ {'a': [1, 'x'], 'b': none, 'c': true} | tojson }}"), R"({"a": [1, "x"], "b": null, "c": true})");
  EXPECT_EQ(render("{{ ' Hi There '.strip().lower() }}|{{ 'a,b'.split(',') }}|{{ 'abc'.startswith('ab') }}"),
            "hi there|['a', 'b']|True");
  EXPECT_EQ(render("{{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ 1 / 2 }} {{ 2 ** 3 }} {{ 'ab' ~ 1 }}"),
            "3 -4 1 0.5 8 ab1");
  EXPECT_EQ(render("{% if y is defined %}d{% elif xs is string %}s{% elif 'b' in xs %}in{% endif %}", xs), "in");
  EXPECT_EQ(render("{{ missing }}|{{ missing | default('dflt') }}|{{ 'yes' if xs else 'no' }}", xs), "|dflt|yes");
  EXPECT_EQ(render("{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}",
                   {{"d", jinja::Value::of_dict({{"x", jinja::Value::integer(1)}, {"y", jinja::Value::none()}})}}),
            "x=1;y=None;");
  EXPECT_EQ(render("{% for x in xs %}{% if x == 'b' %}{% break %}{% endif %}{{ x }}{% endfor %}", xs), "a");
}

// Macros: parameters by position and keyword, defaults (which may read the parameters before
// them), the call's value is what the body printed; the body sees the globals and its parameters,
// not its caller's variables, and its own sets stay in it.
TEST(Jinja, Macros) {
  const jinja::Dict xs = {{"xs", list({"a", "b", "c"})}};
  EXPECT_EQ(render("{% macro greet(name, punct='!', twice=punct ~ punct) %}Hi {{ name }}{{ punct }}{{ twice }}"
                   "{% endmacro %}{{ greet('a') }} {{ greet('b', punct='?') }} {{ greet(name='c', twice='') }}"),
            "Hi a!!! Hi b??? Hi c!");
  EXPECT_EQ(render("{% set top = 'T' %}{% macro m() %}[{{ x }}{{ top }}{{ xs | length }}]{% set z = 1 %}"
                   "{% endmacro %}{% for x in xs %}{{ m() }}{% endfor %}{{ z }}",
                   xs),
            "[T3][T3][T3]");
  // trim_blocks takes the newlines after the macro's tags; its value is a string like any other.
  EXPECT_EQ(
      render("{% macro line(x) %}\n- {{ x }}\n{% endmacro %}\n{% for x in xs %}{{ line(x) | upper }}{% endfor %}", xs),
      "- A\n- B\n- C\n");
  // A namespace given to a macro is shared: its sets reach the caller.
  EXPECT_EQ(render("{% macro bump(ns) %}{% set ns.n = ns.n + 1 %}{% endmacro %}{% set ns = namespace(n=0) %}"
                   "{{ bump(ns) }}{{ bump(ns) }}{{ ns.n }}"),
            "2");
  EXPECT_THROW_WITH(render("{% macro m(a) %}{% endmacro %}{{ m(1, 2) }}"), FormatError,
                    "t.jinja:1: the macro 'm' takes 1 arguments, got 2");
  EXPECT_THROW_WITH(render("{% macro m(a) %}{% endmacro %}\n{{ m(b=1) }}"), FormatError,
                    "t.jinja:2: the macro 'm' has no parameter 'b'");
  EXPECT_THROW_WITH(render("{% macro r() %}{{ r() }}{% endmacro %}{{ r() }}"), FormatError,
                    "the macro 'r' calls itself too deeply");
  EXPECT_THROW_WITH(render("{% macro m() %}{{ caller() }}{% endmacro %}{{ m() }}"), FormatError,
                    "'caller' is not a function");
  EXPECT_THROW_WITH(render("{% macro m(a b) %}{% endmacro %}"), FormatError, "expected ',' or ')'");
  EXPECT_THROW_WITH(render("{% macro m() %}x"), FormatError, "'endmacro' is missing");
}

// A block set holds what its body prints; indent pads every line after the first (the first too
// with first=true; blank lines only with blank=true); safe changes nothing.
TEST(Jinja, BlockSetIndentAndSafe) {
  EXPECT_EQ(
      render("{% set greeting %}Hi {{ name }}{% endset %}[{{ greeting }}]", {{"name", jinja::Value::string("a")}}),
      "[Hi a]");
  EXPECT_EQ(render("{% set x %}\nA\n{% endset %}{{ x }}|"), "A\n|");  // trim_blocks after the tag
  auto text = [](const char* s) { return jinja::Dict{{"s", jinja::Value::string(s)}}; };
  EXPECT_EQ(render("{{ s | indent(2) }}", text("a\nb\n\nc")), "a\n  b\n\n  c");
  EXPECT_EQ(render("{{ s | indent(2, true) }}|", text("a\r\nb\n")), "  a\n  b\n|");  // a final newline stays
  EXPECT_EQ(render("{{ s | indent(width='> ', blank=true) }}", text("a\n\nb")), "a\n> \n> b");
  EXPECT_EQ(render("{{ s | indent }}", text("x\ny")), "x\n    y");
  EXPECT_EQ(render("{{ '<b>' | safe }}"), "<b>");
  EXPECT_THROW_WITH(render("{% set ns.x %}y{% endset %}"), FormatError, "expected '='");
}

TEST(Jinja, ErrorsNameTheLine) {
  EXPECT_THROW_WITH(render("{{ raise_exception('roles must alternate') }}"), InvalidArgumentError,
                    "the chat template refused the chat: roles must alternate");
  EXPECT_THROW_WITH(render("a\n{% if x %}"), FormatError, "t.jinja:2: the template ends inside a block");
  EXPECT_THROW_WITH(render("{{ x.y.z }}"), FormatError, "t.jinja:1: 'y' of an undefined value");
  EXPECT_THROW_WITH(render("\n\n{{ 1 + 'a' }}"), FormatError, "t.jinja:3: cannot apply '+'");
  EXPECT_THROW_WITH(render("{% include 'x' %}"), FormatError, "'{% include %}' is not supported");
  EXPECT_THROW_WITH(render("{{ x | wordcount }}"), FormatError, "the filter 'wordcount' is not supported");
  EXPECT_THROW_WITH(render("{{ 'a' "), FormatError, "t.jinja:1: a tag opened with '{{' is never closed");
}

}  // namespace
}  // namespace tiergen
