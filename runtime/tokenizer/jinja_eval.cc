// Rendering a parsed Jinja template: values as Python's (truth, printing, equality, JSON), scopes as
// Jinja's (a loop's body has its own; a namespace() carries values out of it), and the filters,
// tests, globals and methods that Hugging Face chat templates use.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <map>
#include <optional>

#include "runtime/core/error.h"
#include "runtime/tokenizer/jinja_ast.h"

namespace tiergen::jinja {

const Value* Value::find(const std::string& key) const {
  if (!dict) return nullptr;
  for (const auto& [k, v] : *dict)
    if (k == key) return &v;
  return nullptr;
}

namespace {

using K = Value::Kind;

bool truthy(const Value& v) {
  switch (v.kind) {
    case K::Undefined:
    case K::None:
      return false;
    case K::Bool:
      return v.b;
    case K::Int:
      return v.i != 0;
    case K::Float:
      return v.f != 0;
    case K::String:
      return !v.s.empty();
    case K::List:
      return !v.list->empty();
    case K::Dict:
      return !v.dict->empty();
    case K::Namespace:
    case K::Macro:
      return true;
  }
  return false;
}

std::string format_float(double f) {
  if (std::isinf(f)) return f > 0 ? "inf" : "-inf";
  if (std::isnan(f)) return "nan";
  char buf[64];
  for (int prec = 1; prec <= 17; ++prec) {  // the shortest form that reads back, as Python's repr
    std::snprintf(buf, sizeof buf, "%.*g", prec, f);
    if (std::strtod(buf, nullptr) == f) break;
  }
  std::string s = buf;
  if (s.find_first_of(".e") == std::string::npos) s += ".0";
  return s;
}

std::string quote_repr(const std::string& s) {
  const char q = s.find('\'') != std::string::npos && s.find('"') == std::string::npos ? '"' : '\'';
  std::string out(1, q);
  for (char c : s) {
    if (c == q || c == '\\') out += '\\';
    if (c == '\n')
      out += "\\n";
    else if (c == '\t')
      out += "\\t";
    else if (c == '\r')
      out += "\\r";
    else
      out += c;
  }
  return out + q;
}

std::string repr(const Value& v);

// What {{ v }} prints: Python's str().
std::string str(const Value& v) {
  switch (v.kind) {
    case K::Undefined:
      return "";
    case K::None:
      return "None";
    case K::Bool:
      return v.b ? "True" : "False";
    case K::Int:
      return std::to_string(v.i);
    case K::Float:
      return format_float(v.f);
    case K::String:
      return v.s;
    default:
      return repr(v);
  }
}

std::string repr(const Value& v) {
  switch (v.kind) {
    case K::String:
      return quote_repr(v.s);
    case K::List: {
      std::string s = "[";
      for (size_t i = 0; i < v.list->size(); ++i) s += (i ? ", " : "") + repr((*v.list)[i]);
      return s + "]";
    }
    case K::Dict: {
      std::string s = "{";
      bool first = true;
      for (const auto& [k, x] : *v.dict) {
        s += (first ? "" : ", ") + quote_repr(k) + ": " + repr(x);
        first = false;
      }
      return s + "}";
    }
    case K::Namespace:
      return "<Namespace>";
    case K::Macro:
      return "<Macro>";
    default:
      return str(v);
  }
}

void json_string(std::string& out, const std::string& s) {
  out += '"';
  for (unsigned char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += static_cast<char>(c);  // UTF-8 as is: transformers' tojson has ensure_ascii=False
        }
    }
  }
  out += '"';
}

// json.dumps(v, ensure_ascii=False, indent=indent), as transformers' tojson filter.
void to_json(std::string& out, const Value& v, int indent, int depth) {
  auto newline = [&](int d) {
    if (indent < 0) return;
    out += '\n';
    out.append(static_cast<size_t>(indent * d), ' ');
  };
  const char* item_sep = indent < 0 ? ", " : ",";
  switch (v.kind) {
    case K::Undefined:
    case K::None:
    case K::Macro:  // not data: null, where Python's json would refuse it
      out += "null";
      return;
    case K::Bool:
      out += v.b ? "true" : "false";
      return;
    case K::Int:
      out += std::to_string(v.i);
      return;
    case K::Float:
      out += format_float(v.f);
      return;
    case K::String:
      json_string(out, v.s);
      return;
    case K::List:
      if (v.list->empty()) {
        out += "[]";
        return;
      }
      out += '[';
      for (size_t i = 0; i < v.list->size(); ++i) {
        if (i) out += item_sep;
        newline(depth + 1);
        to_json(out, (*v.list)[i], indent, depth + 1);
      }
      newline(depth);
      out += ']';
      return;
    case K::Dict:
    case K::Namespace: {
      if (v.dict->empty()) {
        out += "{}";
        return;
      }
      out += '{';
      bool first = true;
      for (const auto& [k, x] : *v.dict) {
        if (!first) out += item_sep;
        first = false;
        newline(depth + 1);
        json_string(out, k);
        out += ": ";
        to_json(out, x, indent, depth + 1);
      }
      newline(depth);
      out += '}';
      return;
    }
  }
}

bool is_number(const Value& v) { return v.kind == K::Int || v.kind == K::Float || v.kind == K::Bool; }
double as_double(const Value& v) {
  return v.kind == K::Float ? v.f : v.kind == K::Bool ? static_cast<double>(v.b) : static_cast<double>(v.i);
}

bool equals(const Value& a, const Value& b) {
  if (is_number(a) && is_number(b)) return as_double(a) == as_double(b);
  if (a.kind != b.kind) return false;
  switch (a.kind) {
    case K::Undefined:
    case K::None:
      return true;
    case K::String:
      return a.s == b.s;
    case K::List:
      if (a.list->size() != b.list->size()) return false;
      for (size_t i = 0; i < a.list->size(); ++i)
        if (!equals((*a.list)[i], (*b.list)[i])) return false;
      return true;
    case K::Dict:
      if (a.dict->size() != b.dict->size()) return false;
      for (const auto& [k, x] : *a.dict) {
        const Value* y = b.find(k);
        if (!y || !equals(x, *y)) return false;
      }
      return true;
    case K::Macro:
      return a.macro == b.macro;
    default:
      return a.dict == b.dict;
  }
}

// Python's string methods strip() and friends: whitespace, or the characters of `chars`.
std::string strip(const std::string& s, bool left, bool right, const std::string* chars = nullptr) {
  auto drop = [&](char c) {
    return chars ? chars->find(c) != std::string::npos
                 : c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
  };
  size_t a = 0, b = s.size();
  if (left)
    while (a < b && drop(s[a])) ++a;
  if (right)
    while (b > a && drop(s[b - 1])) --b;
  return s.substr(a, b - a);
}

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}
std::string upper(std::string s) {
  for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

std::string replace_all(std::string s, const std::string& from, const std::string& to) {
  if (from.empty()) return s;
  for (size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size()))
    s.replace(at, from.size(), to);
  return s;
}

// Control flow out of a statement list.
enum class Flow { Normal, Break, Continue };

class Renderer {
 public:
  Renderer(const std::string& name, const Dict& vars) : name_(name) {
    scopes_.emplace_back();
    for (const auto& [k, v] : vars) scopes_.back()[k] = v;
  }

  Flow run(const std::vector<Node>& nodes, std::string& out) {
    for (const Node& n : nodes) {
      switch (n.kind) {
        case Node::Kind::Text:
          out += n.text;
          break;
        case Node::Kind::Output:
          out += str(eval(*n.expr));
          break;
        case Node::Kind::If: {
          bool taken = false;
          for (const auto& [cond, body] : n.branches)
            if (truthy(eval(*cond))) {
              taken = true;
              if (const Flow f = run(body, out); f != Flow::Normal) return f;
              break;
            }
          if (!taken)
            if (const Flow f = run(n.else_body, out); f != Flow::Normal) return f;
          break;
        }
        case Node::Kind::For:
          loop(n, out);
          break;
        case Node::Kind::Set:
          assign(n);
          break;
        case Node::Kind::Macro: {
          Value m;
          m.kind = K::Macro;
          m.macro = &n;
          scopes_.back()[n.targets[0]] = std::move(m);
          break;
        }
        case Node::Kind::Break:
          return Flow::Break;
        case Node::Kind::Continue:
          return Flow::Continue;
      }
    }
    return Flow::Normal;
  }

 private:
  [[noreturn]] void error(const std::string& what, int line) const {
    throw FormatError(name_ + ":" + std::to_string(line) + ": " + what);
  }

  Value lookup(const std::string& n) const {
    for (auto it = scopes_.rbegin(); it != scopes_.rend(); ++it)
      if (auto f = it->find(n); f != it->end()) return f->second;
    return {};
  }

  void assign(const Node& n) {
    Value v;
    if (n.expr) {
      v = eval(*n.expr);
    } else {
      std::string body;
      run(n.body, body);
      v = Value::string(std::move(body));
    }
    if (n.targets.size() == 1) {
      scopes_.back()[n.targets[0]] = std::move(v);
      return;
    }
    Value ns = lookup(n.targets[0]);
    if (ns.kind != K::Namespace) error("'" + n.targets[0] + "' is not a namespace() to set an attribute of", n.line);
    for (auto& [k, x] : *ns.dict)
      if (k == n.targets[1]) {
        x = std::move(v);
        return;
      }
    ns.dict->emplace_back(n.targets[1], std::move(v));
  }

  std::vector<Value> items_of(const Value& v, int line) const {
    switch (v.kind) {
      case K::List:
        return *v.list;
      case K::Dict: {  // a dict iterates over its keys
        std::vector<Value> keys;
        for (const auto& [k, x] : *v.dict) keys.push_back(Value::string(k));
        return keys;
      }
      case K::String: {
        std::vector<Value> chars;
        for (char c : v.s) chars.push_back(Value::string(std::string(1, c)));
        return chars;
      }
      case K::Undefined:
      case K::None:
        return {};
      default:
        error("cannot iterate over " + repr(v), line);
    }
  }

  void loop(const Node& n, std::string& out) {
    std::vector<Value> all = items_of(eval(*n.expr), n.line);
    scopes_.emplace_back();
    auto bind = [&](const Value& item) {
      if (n.targets.size() == 1) {
        scopes_.back()[n.targets[0]] = item;
        return;
      }
      if (item.kind != K::List || item.list->size() != n.targets.size())
        error("cannot unpack " + repr(item) + " into " + std::to_string(n.targets.size()) + " loop variables", n.line);
      for (size_t k = 0; k < n.targets.size(); ++k) scopes_.back()[n.targets[k]] = (*item.list)[k];
    };
    if (n.filter) {  // `for x in xs if cond`: the loop sees only the items that pass
      std::vector<Value> kept;
      for (const Value& item : all) {
        bind(item);
        if (truthy(eval(*n.filter))) kept.push_back(item);
      }
      all = std::move(kept);
    }
    const auto count = static_cast<int64_t>(all.size());
    for (int64_t i = 0; i < count; ++i) {
      bind(all[static_cast<size_t>(i)]);
      Dict info = {{"index", Value::integer(i + 1)},
                   {"index0", Value::integer(i)},
                   {"revindex", Value::integer(count - i)},
                   {"revindex0", Value::integer(count - i - 1)},
                   {"first", Value::boolean(i == 0)},
                   {"last", Value::boolean(i == count - 1)},
                   {"length", Value::integer(count)},
                   {"previtem", i > 0 ? all[static_cast<size_t>(i - 1)] : Value()},
                   {"nextitem", i + 1 < count ? all[static_cast<size_t>(i + 1)] : Value()}};
      scopes_.back()["loop"] = Value::of_dict(std::move(info));
      if (run(n.body, out) == Flow::Break) break;
    }
    scopes_.pop_back();
    if (count == 0) run(n.else_body, out);
  }

  Value eval(const Expr& e) {
    switch (e.op) {
      case Expr::Op::Literal:
        return e.value;
      case Expr::Op::Name:
        return lookup(e.name);
      case Expr::Op::Attr:
        return attribute(eval(*e.args[0]), e.name, e.line);
      case Expr::Op::Item:
        return item(eval(*e.args[0]), eval(*e.args[1]), e.line);
      case Expr::Op::Slice:
        return slice(e);
      case Expr::Op::Call:
        return call(e);
      case Expr::Op::Filter:
        return filter(e);
      case Expr::Op::Test:
        return Value::boolean(test(e) != e.negate);
      case Expr::Op::Unary: {
        const Value v = eval(*e.args[0]);
        if (e.name == "not") return Value::boolean(!truthy(v));
        if (v.kind == K::Int) return Value::integer(e.name == "-" ? -v.i : v.i);
        if (v.kind == K::Float) return Value::number(e.name == "-" ? -v.f : v.f);
        error("'" + e.name + "' of " + repr(v), e.line);
      }
      case Expr::Op::Binary:
        return binary(e.name, eval(*e.args[0]), eval(*e.args[1]), e.line);
      case Expr::Op::And: {
        Value a = eval(*e.args[0]);
        return truthy(a) ? eval(*e.args[1]) : a;
      }
      case Expr::Op::Or: {
        Value a = eval(*e.args[0]);
        return truthy(a) ? a : eval(*e.args[1]);
      }
      case Expr::Op::Cond:
        if (truthy(eval(*e.args[1]))) return eval(*e.args[0]);
        return e.args[2] ? eval(*e.args[2]) : Value();
      case Expr::Op::ListLit: {
        List l;
        for (const auto& a : e.args) l.push_back(eval(*a));
        return Value::of_list(std::move(l));
      }
      case Expr::Op::DictLit: {
        Dict d;
        for (size_t k = 0; k + 1 < e.args.size(); k += 2) {
          const Value key = eval(*e.args[k]);
          if (key.kind != K::String) error("dict keys must be strings here, got " + repr(key), e.line);
          d.emplace_back(key.s, eval(*e.args[k + 1]));
        }
        return Value::of_dict(std::move(d));
      }
    }
    return {};
  }

  Value attribute(const Value& v, const std::string& name, int line) const {
    if (v.kind == K::Dict || v.kind == K::Namespace) {
      const Value* x = v.find(name);
      return x ? *x : Value();
    }
    if (v.kind == K::Undefined) error("'" + name + "' of an undefined value", line);
    return {};  // methods are looked up by call(); anything else has no attributes
  }

  Value item(const Value& v, const Value& key, int line) const {
    if (v.kind == K::List || v.kind == K::String) {
      if (key.kind != K::Int) {
        if (v.kind == K::List) return {};
        error("string indices must be integers, got " + repr(key), line);
      }
      const auto n = static_cast<int64_t>(v.kind == K::List ? v.list->size() : v.s.size());
      const int64_t i = key.i < 0 ? key.i + n : key.i;
      if (i < 0 || i >= n) error("index " + std::to_string(key.i) + " out of range (" + std::to_string(n) + ")", line);
      return v.kind == K::List ? (*v.list)[static_cast<size_t>(i)]
                               : Value::string(std::string(1, v.s[static_cast<size_t>(i)]));
    }
    if (v.kind == K::Dict || v.kind == K::Namespace) return key.kind == K::String ? attribute(v, key.s, line) : Value();
    if (v.kind == K::Undefined) error(repr(key) + " of an undefined value", line);
    error("cannot index " + repr(v), line);
  }

  Value slice(const Expr& e) {
    const Value v = eval(*e.args[0]);
    if (v.kind != K::List && v.kind != K::String) error("cannot slice " + repr(v), e.line);
    const auto n = static_cast<int64_t>(v.kind == K::List ? v.list->size() : v.s.size());
    auto part = [&](size_t k, int64_t dflt) {
      if (!e.args[k]) return dflt;
      const Value x = eval(*e.args[k]);
      if (x.kind == K::None) return dflt;
      if (x.kind != K::Int) error("slice bounds must be integers", e.line);
      return x.i;
    };
    const int64_t step = part(3, 1);
    if (step == 0) error("slice step cannot be zero", e.line);
    auto clamp = [&](int64_t i, int64_t lo, int64_t hi) {
      if (i < 0) i += n;
      return std::clamp(i, lo, hi);
    };
    const int64_t start =
        e.args[1] ? clamp(part(1, 0), step > 0 ? 0 : -1, step > 0 ? n : n - 1) : (step > 0 ? 0 : n - 1);
    const int64_t stop = e.args[2] ? clamp(part(2, 0), step > 0 ? 0 : -1, step > 0 ? n : n - 1) : (step > 0 ? n : -1);
    List l;
    std::string s;
    for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
      if (v.kind == K::List)
        l.push_back((*v.list)[static_cast<size_t>(i)]);
      else
        s += v.s[static_cast<size_t>(i)];
    }
    return v.kind == K::List ? Value::of_list(std::move(l)) : Value::string(std::move(s));
  }

  std::vector<Value> positional(const Expr& e, size_t from = 1) {
    std::vector<Value> a;
    for (size_t k = from; k < e.args.size(); ++k) a.push_back(eval(*e.args[k]));
    return a;
  }
  std::optional<Value> keyword(const Expr& e, const char* key) {
    for (const auto& [k, x] : e.kwargs)
      if (k == key) return eval(*x);
    return std::nullopt;
  }
  const std::string& text_arg(const std::vector<Value>& a, size_t k, const std::string& what, int line) const {
    if (k >= a.size() || a[k].kind != K::String) error(what + " takes a string argument", line);
    return a[k].s;
  }

  Value call(const Expr& e) {
    const Expr& callee = *e.args[0];
    if (callee.op == Expr::Op::Attr) return method(eval(*callee.args[0]), callee.name, e);
    if (callee.op != Expr::Op::Name) error("only functions and methods can be called", e.line);
    const std::string& f = callee.name;
    if (const Value m = lookup(f); m.kind == K::Macro) return invoke(*m.macro, e);
    const std::vector<Value> a = positional(e);
    if (f == "raise_exception")
      throw InvalidArgumentError("the chat template refused the chat: " + (a.empty() ? std::string() : str(a[0])));
    if (f == "namespace") {
      Dict d;
      if (!a.empty() && a[0].kind == K::Dict) d = *a[0].dict;
      for (const auto& [k, x] : e.kwargs) d.emplace_back(k, eval(*x));
      return Value::of_dict(std::move(d), K::Namespace);
    }
    if (f == "range") {
      int64_t lo = 0, hi = 0, step = 1;
      for (const Value& x : a)
        if (x.kind != K::Int) error("range() takes integers", e.line);
      if (a.size() == 1) hi = a[0].i;
      if (a.size() >= 2) lo = a[0].i, hi = a[1].i;
      if (a.size() == 3) step = a[2].i;
      if (a.empty() || a.size() > 3 || step == 0) error("range() takes 1 to 3 integers, the step not 0", e.line);
      List l;
      for (int64_t i = lo; step > 0 ? i < hi : i > hi; i += step) l.push_back(Value::integer(i));
      return Value::of_list(std::move(l));
    }
    if (f == "strftime_now") {
      const std::time_t now = std::time(nullptr);
      std::tm tm{};
      localtime_r(&now, &tm);
      char buf[256];
      const size_t n = std::strftime(buf, sizeof buf, text_arg(a, 0, "strftime_now", e.line).c_str(), &tm);
      return Value::string(std::string(buf, n));
    }
    if (f == "dict") {
      Dict d;
      for (const auto& [k, x] : e.kwargs) d.emplace_back(k, eval(*x));
      return Value::of_dict(std::move(d));
    }
    error("'" + f + "' is not a function a chat template can call here", e.line);
  }

  // A macro's call: its parameters bound from the call's positional and keyword arguments, else
  // their defaults, else undefined; its body renders in a scope of its own above the globals (as in
  // Jinja, a macro does not see its caller's variables), and the call's value is what it printed.
  Value invoke(const Node& macro, const Expr& e) {
    const std::string& name = macro.targets[0];
    const std::vector<std::string> params(macro.targets.begin() + 1, macro.targets.end());
    std::vector<Value> a = positional(e);
    if (a.size() > params.size())
      error("the macro '" + name + "' takes " + std::to_string(params.size()) + " arguments, got " +
                std::to_string(a.size()),
            e.line);
    std::map<std::string, Value> args;
    for (size_t k = 0; k < a.size(); ++k) args[params[k]] = std::move(a[k]);
    for (const auto& [k, x] : e.kwargs) {
      if (std::find(params.begin(), params.end(), k) == params.end())
        error("the macro '" + name + "' has no parameter '" + k + "'", e.line);
      if (args.count(k)) error("the macro '" + name + "' got '" + k + "' twice", e.line);
      args[k] = eval(*x);
    }
    // The macro's scopes: the globals, then its parameters; the caller's come back after, also
    // when the body throws.
    struct Back {
      Renderer& r;
      std::vector<std::map<std::string, Value>> saved;
      ~Back() {
        std::swap(r.scopes_, saved);
        --r.depth_;
      }
    } back{*this, {scopes_.front(), {}}};
    std::swap(scopes_, back.saved);
    if (++depth_ > kMaxMacroDepth) error("the macro '" + name + "' calls itself too deeply", e.line);
    for (size_t k = 0; k < params.size(); ++k) {
      auto given = args.find(params[k]);
      // A default may read the parameters before it.
      scopes_.back()[params[k]] = given != args.end() ? std::move(given->second)
                                  : macro.defaults[k] ? eval(*macro.defaults[k])
                                                      : Value();
    }
    std::string out;
    run(macro.body, out);
    return Value::string(std::move(out));
  }

  Value method(const Value& v, const std::string& m, const Expr& e) {
    const std::vector<Value> a = positional(e);
    if (v.kind == K::String) {
      const std::string& s = v.s;
      if (m == "strip" || m == "lstrip" || m == "rstrip") {
        const std::string* chars = !a.empty() && a[0].kind == K::String ? &a[0].s : nullptr;
        return Value::string(strip(s, m != "rstrip", m != "lstrip", chars));
      }
      if (m == "startswith" || m == "endswith") {
        const std::string& p = text_arg(a, 0, m, e.line);
        const bool yes = p.size() <= s.size() && (m == "startswith" ? s.compare(0, p.size(), p) == 0
                                                                    : s.compare(s.size() - p.size(), p.size(), p) == 0);
        return Value::boolean(yes);
      }
      if (m == "upper") return Value::string(upper(s));
      if (m == "lower") return Value::string(lower(s));
      if (m == "title" || m == "capitalize") return Value::string(title(s, m == "title"));
      if (m == "replace") return Value::string(replace_all(s, text_arg(a, 0, m, e.line), text_arg(a, 1, m, e.line)));
      if (m == "split") {
        List parts;
        if (a.empty() || a[0].kind == K::None) {  // on runs of whitespace
          size_t i = 0;
          while (i < s.size()) {
            while (i < s.size() && std::isspace(static_cast<unsigned char>(s[i]))) ++i;
            size_t j = i;
            while (j < s.size() && !std::isspace(static_cast<unsigned char>(s[j]))) ++j;
            if (j > i) parts.push_back(Value::string(s.substr(i, j - i)));
            i = j;
          }
        } else {
          const std::string& sep = text_arg(a, 0, m, e.line);
          if (sep.empty()) error("split() with an empty separator", e.line);
          size_t i = 0;
          for (size_t at = s.find(sep); at != std::string::npos; at = s.find(sep, i)) {
            parts.push_back(Value::string(s.substr(i, at - i)));
            i = at + sep.size();
          }
          parts.push_back(Value::string(s.substr(i)));
        }
        return Value::of_list(std::move(parts));
      }
      if (m == "format") error("str.format() is not supported in chat templates here", e.line);
    }
    if (v.kind == K::Dict) {
      if (m == "items" || m == "keys" || m == "values") {
        List l;
        for (const auto& [k, x] : *v.dict)
          l.push_back(m == "items" ? Value::of_list({Value::string(k), x}) : m == "keys" ? Value::string(k) : x);
        return Value::of_list(std::move(l));
      }
      if (m == "get") {
        const Value* x = v.find(text_arg(a, 0, m, e.line));
        return x ? *x : (a.size() > 1 ? a[1] : Value::none());
      }
    }
    if (v.kind == K::Undefined) error("'" + m + "()' of an undefined value", e.line);
    error("'" + m + "()' is not a method of " + repr(v) + " that a chat template can call here", e.line);
  }

  static std::string title(const std::string& s, bool every_word) {
    std::string out = s;
    bool start = true;
    for (char& c : out) {
      const auto u = static_cast<unsigned char>(c);
      c = static_cast<char>(start ? std::toupper(u) : std::tolower(u));
      start = every_word ? !std::isalpha(u) : false;
    }
    return out;
  }

  int64_t length(const Value& v, int line) const {
    switch (v.kind) {
      case K::String:
        return static_cast<int64_t>(v.s.size());
      case K::List:
        return static_cast<int64_t>(v.list->size());
      case K::Dict:
      case K::Namespace:
        return static_cast<int64_t>(v.dict->size());
      default:
        error("length of " + repr(v), line);
    }
  }

  // Jinja's indent(s, width=4, first=False, blank=False): every line but the first (all with
  // first) gets `width` spaces (or the string `width`), blank lines only with blank. Lines end at
  // \n, \r\n or \r, as Python's splitlines() for the text templates carry.
  std::string indent(const Expr& e, const std::string& s, const std::vector<Value>& a) {
    auto arg = [&](size_t k, const char* key) -> std::optional<Value> {
      if (k < a.size()) return a[k];
      return keyword(e, key);
    };
    const std::optional<Value> width = arg(0, "width");
    std::string pad(4, ' ');
    if (width && width->kind == K::String) pad = width->s;
    if (width && width->kind == K::Int) pad.assign(static_cast<size_t>(std::max<int64_t>(width->i, 0)), ' ');
    const std::optional<Value> first = arg(1, "first"), blank = arg(2, "blank");
    std::vector<std::string> lines(1);
    for (size_t i = 0; i < s.size(); ++i) {
      if (s[i] != '\n' && s[i] != '\r') {
        lines.back() += s[i];
        continue;
      }
      if (s[i] == '\r' && i + 1 < s.size() && s[i + 1] == '\n') ++i;
      lines.emplace_back();
    }
    std::string out;
    for (size_t k = 0; k < lines.size(); ++k) {
      if (k) out += '\n';
      const bool pad_it = k == 0 ? first && truthy(*first) : !lines[k].empty() || (blank && truthy(*blank));
      out += (pad_it ? pad : "") + lines[k];
    }
    return out;
  }

  Value filter(const Expr& e) {
    const Value v = eval(*e.args[0]);
    const std::vector<Value> a = positional(e);
    const std::string& f = e.name;
    if (f == "trim") return Value::string(strip(str(v), true, true));
    if (f == "length" || f == "count") return Value::integer(length(v, e.line));
    if (f == "lower") return Value::string(lower(str(v)));
    if (f == "upper") return Value::string(upper(str(v)));
    if (f == "capitalize" || f == "title") return Value::string(title(str(v), f == "title"));
    if (f == "string") return Value::string(str(v));
    if (f == "safe") return v;  // no autoescaping here: nothing to mark safe
    if (f == "indent") return Value::string(indent(e, str(v), a));
    if (f == "tojson") {
      const std::optional<Value> indent = keyword(e, "indent");
      std::string out;
      to_json(out, v, indent && indent->kind == K::Int ? static_cast<int>(indent->i) : -1, 0);
      return Value::string(std::move(out));
    }
    if (f == "int") {
      if (v.kind == K::Float) return Value::integer(static_cast<int64_t>(v.f));
      if (v.kind == K::String) return Value::integer(std::strtoll(v.s.c_str(), nullptr, 10));
      return Value::integer(is_number(v) ? static_cast<int64_t>(as_double(v)) : 0);
    }
    if (f == "float") return Value::number(is_number(v) ? as_double(v) : std::strtod(str(v).c_str(), nullptr));
    if (f == "abs")
      return v.kind == K::Int ? Value::integer(v.i < 0 ? -v.i : v.i) : Value::number(std::fabs(as_double(v)));
    if (f == "default" || f == "d") {
      const bool boolean = (a.size() > 1 && truthy(a[1])) || truthy(keyword(e, "boolean").value_or(Value()));
      if (!v.defined() || (boolean && !truthy(v))) return a.empty() ? Value::string("") : a[0];
      return v;
    }
    if (f == "first" || f == "last") {
      const std::vector<Value> all = items_of(v, e.line);
      if (all.empty()) return {};
      return f == "first" ? all.front() : all.back();
    }
    if (f == "list") return Value::of_list(items_of(v, e.line));
    if (f == "reverse") {
      if (v.kind == K::String) return Value::string(std::string(v.s.rbegin(), v.s.rend()));
      std::vector<Value> all = items_of(v, e.line);
      std::reverse(all.begin(), all.end());
      return Value::of_list(std::move(all));
    }
    if (f == "join") {
      const std::string sep = a.empty() ? "" : str(a[0]);
      std::string out;
      bool first = true;
      for (const Value& x : items_of(v, e.line)) {
        out += (first ? "" : sep) + str(x);
        first = false;
      }
      return Value::string(std::move(out));
    }
    if (f == "replace") return Value::string(replace_all(str(v), text_arg(a, 0, f, e.line), text_arg(a, 1, f, e.line)));
    if (f == "items") {
      if (v.kind != K::Dict) error("items of " + repr(v), e.line);
      List l;
      for (const auto& [k, x] : *v.dict) l.push_back(Value::of_list({Value::string(k), x}));
      return Value::of_list(std::move(l));
    }
    if (f == "selectattr" || f == "rejectattr") {
      const std::string& attr = text_arg(a, 0, f, e.line);
      List l;
      for (const Value& x : items_of(v, e.line)) {
        const Value got = attribute(x, attr, e.line);
        bool pass = truthy(got);
        if (a.size() >= 2) pass = run_test(text_arg(a, 1, f, e.line), got, {a.begin() + 2, a.end()}, e.line);
        if (pass == (f == "selectattr")) l.push_back(x);
      }
      return Value::of_list(std::move(l));
    }
    if (f == "map") {
      const std::optional<Value> attr = keyword(e, "attribute");
      List l;
      for (const Value& x : items_of(v, e.line)) {
        if (attr && attr->kind == K::String)
          l.push_back(attribute(x, attr->s, e.line));
        else if (!a.empty() && a[0].kind == K::String && (a[0].s == "string" || a[0].s == "trim" || a[0].s == "lower"))
          l.push_back(Value::string(a[0].s == "string" ? str(x)
                                    : a[0].s == "trim" ? strip(str(x), true, true)
                                                       : lower(str(x))));
        else
          error("map() here takes attribute='name' or the filter string, trim or lower", e.line);
      }
      return Value::of_list(std::move(l));
    }
    error("the filter '" + f + "' is not supported in chat templates by this version of tiergen", e.line);
  }

  bool test(const Expr& e) {
    const Value v = eval(*e.args[0]);
    return run_test(e.name, v, positional(e), e.line);
  }

  bool run_test(const std::string& t, const Value& v, const std::vector<Value>& a, int line) const {
    if (t == "defined") return v.defined();
    if (t == "undefined") return !v.defined();
    if (t == "none") return v.kind == K::None;
    if (t == "string") return v.kind == K::String;
    if (t == "number") return v.kind == K::Int || v.kind == K::Float;
    if (t == "integer") return v.kind == K::Int;
    if (t == "float") return v.kind == K::Float;
    if (t == "boolean") return v.kind == K::Bool;
    if (t == "true") return v.kind == K::Bool && v.b;
    if (t == "false") return v.kind == K::Bool && !v.b;
    if (t == "mapping") return v.kind == K::Dict;
    if (t == "sequence" || t == "iterable") return v.kind == K::List || v.kind == K::String || v.kind == K::Dict;
    if (t == "callable") return false;
    if (t == "odd" || t == "even") {
      if (v.kind != K::Int) error("'" + t + "' of " + repr(v), line);
      return (v.i % 2 != 0) == (t == "odd");
    }
    if (t == "divisibleby") {
      if (v.kind != K::Int || a.empty() || a[0].kind != K::Int || a[0].i == 0)
        error("divisibleby needs integers", line);
      return v.i % a[0].i == 0;
    }
    if (t == "equalto" || t == "eq" || t == "==" || t == "sameas") return !a.empty() && equals(v, a[0]);
    if (t == "ne" || t == "!=") return a.empty() || !equals(v, a[0]);
    if (t == "in") return !a.empty() && contains(a[0], v, line);
    if (t == "lower") return v.kind == K::String && lower(v.s) == v.s;
    if (t == "upper") return v.kind == K::String && upper(v.s) == v.s;
    error("the test '" + t + "' is not supported in chat templates by this version of tiergen", line);
  }

  bool contains(const Value& hay, const Value& needle, int line) const {
    if (hay.kind == K::String) {
      if (needle.kind != K::String) error("'in <string>' needs a string, got " + repr(needle), line);
      return hay.s.find(needle.s) != std::string::npos;
    }
    if (hay.kind == K::List)
      return std::any_of(hay.list->begin(), hay.list->end(), [&](const Value& x) { return equals(x, needle); });
    if (hay.kind == K::Dict || hay.kind == K::Namespace) return needle.kind == K::String && hay.find(needle.s);
    if (hay.kind == K::Undefined || hay.kind == K::None) return false;
    error("'in' of " + repr(hay), line);
  }

  Value binary(const std::string& op, const Value& a, const Value& b, int line) const {
    if (op == "~") return Value::string(str(a) + str(b));
    if (op == "==") return Value::boolean(equals(a, b));
    if (op == "!=") return Value::boolean(!equals(a, b));
    if (op == "in") return Value::boolean(contains(b, a, line));
    if (op == "not in") return Value::boolean(!contains(b, a, line));
    if (op == "<" || op == "<=" || op == ">" || op == ">=") {
      int c = 0;
      if (is_number(a) && is_number(b))
        c = as_double(a) < as_double(b) ? -1 : as_double(a) > as_double(b) ? 1 : 0;
      else if (a.kind == K::String && b.kind == K::String)
        c = a.s.compare(b.s);
      else
        error("cannot compare " + repr(a) + " and " + repr(b), line);
      return Value::boolean(op == "<" ? c < 0 : op == "<=" ? c <= 0 : op == ">" ? c > 0 : c >= 0);
    }
    if (op == "+") {
      if (a.kind == K::String && b.kind == K::String) return Value::string(a.s + b.s);
      if (a.kind == K::List && b.kind == K::List) {
        List l = *a.list;
        l.insert(l.end(), b.list->begin(), b.list->end());
        return Value::of_list(std::move(l));
      }
    }
    if (op == "*" && a.kind == K::String && b.kind == K::Int) {
      std::string s;
      for (int64_t k = 0; k < b.i; ++k) s += a.s;
      return Value::string(std::move(s));
    }
    if (!is_number(a) || !is_number(b)) error("cannot apply '" + op + "' to " + repr(a) + " and " + repr(b), line);
    const bool ints = a.kind != K::Float && b.kind != K::Float;
    const double x = as_double(a), y = as_double(b);
    if (op == "/") {
      if (y == 0) error("division by zero", line);
      return Value::number(x / y);
    }
    if (ints) {
      const auto p = static_cast<int64_t>(x), q = static_cast<int64_t>(y);
      if ((op == "//" || op == "%") && q == 0) error("division by zero", line);
      if (op == "+") return Value::integer(p + q);
      if (op == "-") return Value::integer(p - q);
      if (op == "*") return Value::integer(p * q);
      if (op == "//") return Value::integer(p / q - ((p % q != 0) && ((p < 0) != (q < 0))));
      if (op == "%") return Value::integer(((p % q) + q) % q);
      if (op == "**") return Value::integer(static_cast<int64_t>(std::pow(x, y)));
    }
    if (op == "+") return Value::number(x + y);
    if (op == "-") return Value::number(x - y);
    if (op == "*") return Value::number(x * y);
    if (op == "//") return Value::number(std::floor(x / y));
    if (op == "%") return Value::number(x - std::floor(x / y) * y);
    return Value::number(std::pow(x, y));
  }

  static constexpr int kMaxMacroDepth = 64;  // a macro that recurses without end is an error, not a crash

  const std::string& name_;
  std::vector<std::map<std::string, Value>> scopes_;
  int depth_ = 0;
};

}  // namespace

Template::Template(const std::string& source, std::string name)
    : name_(std::move(name)), body_(std::make_shared<const std::vector<Node>>(parse_template(source, name_))) {}
Template::~Template() = default;
Template::Template(Template&&) noexcept = default;
Template& Template::operator=(Template&&) noexcept = default;

std::string Template::render(const Dict& vars) const {
  std::string out;
  Renderer r(name_, vars);
  r.run(*body_, out);
  return out;
}

}  // namespace tiergen::jinja
