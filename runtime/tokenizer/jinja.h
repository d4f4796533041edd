// The part of Jinja that Hugging Face chat templates are written in, with the settings transformers
// renders them under (trim_blocks, lstrip_blocks, loop controls): text, {{ expressions }},
// {% if / elif / else %}, {% for x in xs [if c] %} with `loop` and {% else %}, {% set %} (also
// `ns.attr` on a namespace(), and {% set x %}...{% endset %}), {% macro name(a, b=default) %}
// called as name(x, b=y), {% break %} / {% continue %}, {% generation %}, comments and the `-` /
// `+` whitespace controls.
// Expressions: literals, lists, dicts, attribute and item access, slices, calls, filters, `is`
// tests, arithmetic, `~`, comparisons, `in`, `and` / `or` / `not`, `a if c else b`; Python's string
// and dict methods that templates call. What is outside this subset (includes, imports, call
// blocks, a macro's caller/varargs/kwargs) is a FormatError when the template is parsed or run,
// never a silently different prompt.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace tiergen::jinja {

struct Value;
struct Node;  // a parsed template's statements (jinja_parse.cc)
using List = std::vector<Value>;
using Dict = std::vector<std::pair<std::string, Value>>;  // in insertion order, as Python's dicts

// A template value. Lists, dicts and namespaces are shared, as Python objects are.
struct Value {
  enum class Kind { Undefined, None, Bool, Int, Float, String, List, Dict, Namespace, Macro };
  Kind kind = Kind::Undefined;
  bool b = false;
  int64_t i = 0;
  double f = 0;
  std::string s;
  std::shared_ptr<List> list;
  std::shared_ptr<Dict> dict;   // a Dict's or a Namespace's entries
  const Node* macro = nullptr;  // a Macro's definition, in the template being rendered

  static Value none() { return with(Kind::None); }
  static Value boolean(bool v) {
    Value x = with(Kind::Bool);
    x.b = v;
    return x;
  }
  static Value integer(int64_t v) {
    Value x = with(Kind::Int);
    x.i = v;
    return x;
  }
  static Value number(double v) {
    Value x = with(Kind::Float);
    x.f = v;
    return x;
  }
  static Value string(std::string v) {
    Value x = with(Kind::String);
    x.s = std::move(v);
    return x;
  }
  static Value of_list(List v) {
    Value x = with(Kind::List);
    x.list = std::make_shared<List>(std::move(v));
    return x;
  }
  static Value of_dict(Dict v, Kind kind = Kind::Dict) {
    Value x = with(kind);
    x.dict = std::make_shared<Dict>(std::move(v));
    return x;
  }
  bool defined() const { return kind != Kind::Undefined; }
  // The entry `key` of a dict or namespace (null where there is none).
  const Value* find(const std::string& key) const;

 private:
  static Value with(Kind k) {
    Value x;
    x.kind = k;
    return x;
  }
};

class Template {
 public:
  // FormatError "NAME:LINE: ..." for what does not parse or is outside the subset.
  Template(const std::string& source, std::string name);
  ~Template();
  Template(Template&&) noexcept;
  Template& operator=(Template&&) noexcept;

  // Renders with `vars` as the globals (beside range, namespace, raise_exception, strftime_now).
  // raise_exception(msg) in the template is an InvalidArgumentError carrying msg; an error in an
  // expression (an undefined value's attribute, a type that cannot be added) is a FormatError
  // naming the line.
  std::string render(const Dict& vars) const;

 private:
  std::string name_;
  std::shared_ptr<const std::vector<Node>> body_;
};

}  // namespace tiergen::jinja
