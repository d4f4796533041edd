// Parsing a Jinja template: the source cut into text and tags under transformers' whitespace
// settings (trim_blocks: the newline after a block tag goes; lstrip_blocks: spaces and tabs before
// a block tag on its line go; `-` strips all whitespace on its side, `+` keeps it), then each tag's
// expression parsed with Jinja's precedence, then the statements nested.
#include <cctype>
#include <cstdlib>
#include <initializer_list>
#include <set>

#include "runtime/core/error.h"
#include "runtime/tokenizer/jinja_ast.h"

namespace tiergen::jinja {
namespace {

struct Piece {
  enum Kind { Text, Output, Statement } kind = Text;
  std::string s;
  int line = 1;
};

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

[[noreturn]] void fail(const std::string& name, int line, const std::string& what) {
  throw FormatError(name + ":" + std::to_string(line) + ": " + what);
}

// Where the tag that opens at `from` closes (`close` outside string literals), or npos.
size_t find_close(const std::string& src, size_t from, const char* close, bool strings) {
  char quote = 0;
  for (size_t i = from; i + 1 < src.size(); ++i) {
    const char c = src[i];
    if (quote) {
      if (c == '\\')
        ++i;
      else if (c == quote)
        quote = 0;
    } else if (strings && (c == '\'' || c == '"')) {
      quote = c;
    } else if (c == close[0] && src[i + 1] == close[1]) {
      return i;
    }
  }
  return std::string::npos;
}

std::vector<Piece> cut(const std::string& src, const std::string& name) {
  std::vector<Piece> out;
  std::string text;
  int line = 1;
  bool strip_next = false;  // the previous tag ended with `-`
  size_t pos = 0;
  auto count_lines = [&](size_t a, size_t b) {
    for (size_t i = a; i < b; ++i) line += src[i] == '\n';
  };
  while (pos <= src.size()) {
    size_t open = pos;
    for (;;) {
      open = src.find('{', open);
      if (open == std::string::npos || open + 1 >= src.size()) {
        open = std::string::npos;
        break;
      }
      const char c = src[open + 1];
      if (c == '{' || c == '%' || c == '#') break;
      ++open;
    }
    std::string chunk = src.substr(pos, open == std::string::npos ? std::string::npos : open - pos);
    if (strip_next) {
      size_t k = 0;
      while (k < chunk.size() && is_space(chunk[k])) ++k;
      chunk.erase(0, k);
    }
    if (open == std::string::npos) {
      text += chunk;
      count_lines(pos, src.size());
      break;
    }
    const char type = src[open + 1];
    const char flag = open + 2 < src.size() ? src[open + 2] : 0;
    const bool block = type == '%' || type == '#';
    if (flag == '-') {
      while (!chunk.empty() && is_space(chunk.back())) chunk.pop_back();
    } else if (block && flag != '+') {  // lstrip_blocks
      const size_t nl = chunk.find_last_of('\n');
      const size_t start = nl == std::string::npos ? 0 : nl + 1;
      bool blank = true;
      for (size_t k = start; k < chunk.size(); ++k) blank = blank && (chunk[k] == ' ' || chunk[k] == '\t');
      // Only from the start of a line of the source (a newline trim_blocks took still counts).
      if (blank && (nl != std::string::npos || pos == 0 || src[pos - 1] == '\n')) chunk.erase(start);
    }
    text += chunk;
    count_lines(pos, open);
    const int tag_line = line;
    const char* close = type == '{' ? "}}" : type == '%' ? "%}" : "#}";
    const size_t end = find_close(src, open + 2, close, type != '#');
    if (end == std::string::npos)
      fail(name, tag_line, std::string("a tag opened with '{") + type + "' is never closed with '" + close + "'");
    count_lines(open, end);
    size_t inner_begin = open + 2 + ((flag == '-' || flag == '+') ? 1 : 0);
    size_t inner_end = end;
    const bool right_minus = end > inner_begin && src[end - 1] == '-';
    if (right_minus) --inner_end;
    if (!text.empty()) out.push_back({Piece::Text, std::move(text), tag_line});
    text.clear();
    if (type != '#')
      out.push_back({type == '{' ? Piece::Output : Piece::Statement,
                     src.substr(inner_begin, inner_end > inner_begin ? inner_end - inner_begin : 0), tag_line});
    pos = end + 2;
    strip_next = right_minus;
    if (!right_minus && block) {  // trim_blocks: the newline right after a block tag
      if (pos < src.size() && src[pos] == '\n')
        ++pos, ++line;
      else if (pos + 1 < src.size() && src[pos] == '\r' && src[pos + 1] == '\n')
        pos += 2, ++line;
    }
  }
  if (!text.empty()) out.push_back({Piece::Text, std::move(text), line});
  return out;
}

struct Tok {
  enum Kind { Name, Int, Float, Str, Op, End } kind = End;
  std::string s;
  int64_t i = 0;
  double f = 0;
};

std::vector<Tok> lex(const std::string& e, const std::string& name, int line) {
  std::vector<Tok> out;
  size_t p = 0;
  while (p < e.size()) {
    const char c = e[p];
    if (is_space(c)) {
      ++p;
    } else if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
      size_t q = p;
      while (q < e.size() && (std::isalnum(static_cast<unsigned char>(e[q])) || e[q] == '_')) ++q;
      out.push_back({Tok::Name, e.substr(p, q - p)});
      p = q;
    } else if (std::isdigit(static_cast<unsigned char>(c))) {
      size_t q = p;
      while (q < e.size() && (std::isdigit(static_cast<unsigned char>(e[q])) || e[q] == '_')) ++q;
      bool real = false;
      if (q + 1 < e.size() && e[q] == '.' && std::isdigit(static_cast<unsigned char>(e[q + 1]))) {
        real = true;
        ++q;
        while (q < e.size() && std::isdigit(static_cast<unsigned char>(e[q]))) ++q;
      }
      std::string digits;
      for (size_t k = p; k < q; ++k)
        if (e[k] != '_') digits += e[k];
      Tok t;
      t.kind = real ? Tok::Float : Tok::Int;
      if (real)
        t.f = std::strtod(digits.c_str(), nullptr);
      else
        t.i = std::strtoll(digits.c_str(), nullptr, 10);
      out.push_back(t);
      p = q;
    } else if (c == '\'' || c == '"') {
      std::string s;
      size_t q = p + 1;
      for (; q < e.size() && e[q] != c; ++q) {
        if (e[q] != '\\' || q + 1 >= e.size()) {
          s += e[q];
          continue;
        }
        const char x = e[++q];
        switch (x) {
          case 'n':
            s += '\n';
            break;
          case 't':
            s += '\t';
            break;
          case 'r':
            s += '\r';
            break;
          case '\\':
          case '\'':
          case '"':
            s += x;
            break;
          default:
            s += '\\';
            s += x;
        }
      }
      if (q >= e.size()) fail(name, line, "a string literal is not closed");
      out.push_back({Tok::Str, std::move(s)});
      p = q + 1;
    } else {
      static const char* two[] = {"//", "**", "==", "!=", "<=", ">="};
      std::string op(1, c);
      for (const char* t : two)
        if (e.compare(p, 2, t) == 0) op = t;
      if (op.size() == 1 && std::string("()[]{}.,:|~+-*/%<>=").find(c) == std::string::npos)
        fail(name, line, std::string("unexpected character '") + c + "'");
      out.push_back({Tok::Op, op});
      p += op.size();
    }
  }
  out.push_back({Tok::End, ""});
  return out;
}

class ExprParser {
 public:
  ExprParser(std::vector<Tok> toks, const std::string& name, int line)
      : t_(std::move(toks)), name_(name), line_(line) {}

  bool at_end() const { return t_[p_].kind == Tok::End; }
  bool peek_name(const char* n) const { return t_[p_].kind == Tok::Name && t_[p_].s == n; }
  bool peek_op(const char* o) const { return t_[p_].kind == Tok::Op && t_[p_].s == o; }
  bool take_name(const char* n) {
    if (!peek_name(n)) return false;
    ++p_;
    return true;
  }
  bool take_op(const char* o) {
    if (!peek_op(o)) return false;
    ++p_;
    return true;
  }
  void expect_op(const char* o) {
    if (!take_op(o)) error(std::string("expected '") + o + "'");
  }
  std::string expect_identifier() {
    if (t_[p_].kind != Tok::Name) error("expected a name");
    return t_[p_++].s;
  }
  void expect_end() {
    if (!at_end()) error("unexpected '" + t_[p_].s + "'");
  }
  [[noreturn]] void error(const std::string& what) const {
    const std::string near = t_[p_].kind == Tok::End ? "the end of the tag" : "'" + t_[p_].s + "'";
    fail(name_, line_, what + " at " + near);
  }

  ExprPtr expression() {
    ExprPtr a = or_();
    while (take_name("if")) {
      ExprPtr cond = or_();
      ExprPtr other = take_name("else") ? expression() : nullptr;
      a = make(Expr::Op::Cond, {a, cond, other});
    }
    return a;
  }
  ExprPtr or_() {
    ExprPtr a = and_();
    while (take_name("or")) a = make(Expr::Op::Or, {a, and_()});
    return a;
  }

 private:
  ExprPtr make(Expr::Op op, std::vector<ExprPtr> args, std::string name = {}) const {
    auto e = std::make_shared<Expr>();
    e->op = op;
    e->args = std::move(args);
    e->name = std::move(name);
    e->line = line_;
    return e;
  }
  ExprPtr literal(Value v) const {
    auto e = std::make_shared<Expr>();
    e->value = std::move(v);
    e->line = line_;
    return e;
  }

  ExprPtr and_() {
    ExprPtr a = not_();
    while (take_name("and")) a = make(Expr::Op::And, {a, not_()});
    return a;
  }
  ExprPtr not_() {
    if (take_name("not")) return make(Expr::Op::Unary, {not_()}, "not");
    return compare();
  }
  ExprPtr compare() {
    ExprPtr a = concat();
    for (;;) {
      std::string op;
      for (const char* o : {"==", "!=", "<", "<=", ">", ">="})
        if (peek_op(o)) op = o;
      if (!op.empty()) {
        ++p_;
      } else if (take_name("in")) {
        op = "in";
      } else if (peek_name("not") && t_[p_ + 1].kind == Tok::Name && t_[p_ + 1].s == "in") {
        p_ += 2;
        op = "not in";
      } else {
        return a;
      }
      a = make(Expr::Op::Binary, {a, concat()}, op);
    }
  }
  // One level of left-associative binary operators: `next` operands joined by any of `ops`.
  ExprPtr binary_level(std::initializer_list<const char*> ops, ExprPtr (ExprParser::*next)()) {
    ExprPtr a = (this->*next)();
    for (;;) {
      const char* op = nullptr;
      for (const char* o : ops)
        if (peek_op(o)) op = o;
      if (!op) return a;
      ++p_;
      a = make(Expr::Op::Binary, {a, (this->*next)()}, op);
    }
  }
  ExprPtr concat() { return binary_level({"~"}, &ExprParser::add); }
  ExprPtr add() { return binary_level({"+", "-"}, &ExprParser::mul); }
  ExprPtr mul() { return binary_level({"*", "/", "//", "%"}, &ExprParser::pow_); }
  ExprPtr pow_() { return binary_level({"**"}, &ExprParser::unary); }
  ExprPtr unary() {
    if (take_op("-")) return make(Expr::Op::Unary, {unary()}, "-");
    if (take_op("+")) return make(Expr::Op::Unary, {unary()}, "+");
    return postfix(primary());
  }

  void call_args(Expr& e, const char* close) {
    if (take_op(close)) return;
    do {
      if (t_[p_].kind == Tok::Name && t_[p_ + 1].kind == Tok::Op && t_[p_ + 1].s == "=") {
        std::string key = t_[p_].s;
        p_ += 2;
        e.kwargs.emplace_back(std::move(key), expression());
      } else {
        e.args.push_back(expression());
      }
    } while (take_op(","));
    expect_op(close);
  }

  ExprPtr postfix(ExprPtr a) {
    for (;;) {
      if (take_op(".")) {
        a = make(Expr::Op::Attr, {a}, expect_identifier());
      } else if (take_op("[")) {
        ExprPtr parts[3];
        bool slice = false;
        for (int k = 0; k < 3; ++k) {
          if (!peek_op(":") && !peek_op("]")) parts[k] = expression();
          if (k < 2 && take_op(":"))
            slice = true;
          else
            break;
        }
        expect_op("]");
        if (slice)
          a = make(Expr::Op::Slice, {a, parts[0], parts[1], parts[2]});
        else if (!parts[0])
          error("an empty subscript");
        else
          a = make(Expr::Op::Item, {a, parts[0]});
      } else if (take_op("(")) {
        auto e = std::make_shared<Expr>();
        e->op = Expr::Op::Call;
        e->line = line_;
        e->args.push_back(a);
        call_args(*e, ")");
        a = e;
      } else if (take_op("|")) {
        auto e = std::make_shared<Expr>();
        e->op = Expr::Op::Filter;
        e->line = line_;
        e->name = expect_identifier();
        e->args.push_back(a);
        if (take_op("(")) call_args(*e, ")");
        a = e;
      } else if (take_name("is")) {
        auto e = std::make_shared<Expr>();
        e->op = Expr::Op::Test;
        e->line = line_;
        e->negate = take_name("not");
        e->name = expect_identifier();
        e->args.push_back(a);
        if (take_op("(")) {
          call_args(*e, ")");
        } else {
          static const std::set<std::string> words = {"and", "or", "else", "if", "in", "not", "is"};
          const Tok& n = t_[p_];
          if (n.kind == Tok::Int || n.kind == Tok::Float || n.kind == Tok::Str ||
              (n.kind == Tok::Name && !words.count(n.s)))
            e->args.push_back(primary());
        }
        a = e;
      } else {
        return a;
      }
    }
  }

  ExprPtr primary() {
    const Tok& t = t_[p_];
    switch (t.kind) {
      case Tok::Int:
        ++p_;
        return literal(Value::integer(t.i));
      case Tok::Float:
        ++p_;
        return literal(Value::number(t.f));
      case Tok::Str: {
        std::string s;
        while (t_[p_].kind == Tok::Str) s += t_[p_++].s;  // adjacent literals join
        return literal(Value::string(std::move(s)));
      }
      case Tok::Name: {
        ++p_;
        if (t.s == "true" || t.s == "True") return literal(Value::boolean(true));
        if (t.s == "false" || t.s == "False") return literal(Value::boolean(false));
        if (t.s == "none" || t.s == "None") return literal(Value::none());
        auto e = std::make_shared<Expr>();
        e->op = Expr::Op::Name;
        e->name = t.s;
        e->line = line_;
        return e;
      }
      case Tok::Op:
        if (take_op("(")) {
          if (take_op(")")) return make(Expr::Op::ListLit, {});
          ExprPtr first = expression();
          if (!peek_op(",")) {
            expect_op(")");
            return first;
          }
          std::vector<ExprPtr> items = {first};
          while (take_op(",") && !peek_op(")")) items.push_back(expression());
          expect_op(")");
          return make(Expr::Op::ListLit, std::move(items));
        }
        if (take_op("[")) {
          std::vector<ExprPtr> items;
          if (!take_op("]")) {
            do {
              if (peek_op("]")) break;
              items.push_back(expression());
            } while (take_op(","));
            expect_op("]");
          }
          return make(Expr::Op::ListLit, std::move(items));
        }
        if (take_op("{")) {
          std::vector<ExprPtr> items;
          if (!take_op("}")) {
            do {
              if (peek_op("}")) break;
              items.push_back(expression());
              expect_op(":");
              items.push_back(expression());
            } while (take_op(","));
            expect_op("}");
          }
          return make(Expr::Op::DictLit, std::move(items));
        }
        break;
      case Tok::End:
        break;
    }
    error("expected a value");
  }

  std::vector<Tok> t_;
  const std::string& name_;
  int line_;
  size_t p_ = 0;
};

// Nests the statements of `pieces` from `at` until one of `ends` (returned, with its parser).
class Nester {
 public:
  Nester(std::vector<Piece> pieces, const std::string& name) : pieces_(std::move(pieces)), name_(name) {}

  std::vector<Node> all() {
    std::vector<Node> body;
    const std::string end = block(body, {});
    if (!end.empty()) fail(name_, line_, "'" + end + "' without its opening tag");
    return body;
  }

 private:
  // Parses into `body` until a statement whose keyword is in `ends`; returns that keyword (its
  // parser left in `rest_`), or "" at the end of the template.
  std::string block(std::vector<Node>& body, const std::set<std::string>& ends) {
    while (at_ < pieces_.size()) {
      const Piece& p = pieces_[at_++];
      line_ = p.line;
      if (p.kind == Piece::Text) {
        Node n;
        n.kind = Node::Kind::Text;
        n.text = p.s;
        n.line = p.line;
        body.push_back(std::move(n));
        continue;
      }
      ExprParser ep(lex(p.s, name_, p.line), name_, p.line);
      if (p.kind == Piece::Output) {
        Node n;
        n.kind = Node::Kind::Output;
        n.line = p.line;
        n.expr = ep.expression();
        ep.expect_end();
        body.push_back(std::move(n));
        continue;
      }
      const std::string word = ep.expect_identifier();
      if (ends.count(word)) {
        rest_ = std::make_unique<ExprParser>(std::move(ep));
        return word;
      }
      statement(word, ep, body, p.line);
    }
    if (!ends.empty()) fail(name_, line_, "the template ends inside a block: '" + *ends.begin() + "' is missing");
    return "";
  }

  void statement(const std::string& word, ExprParser& ep, std::vector<Node>& body, int line) {
    Node n;
    n.line = line;
    if (word == "if") {
      n.kind = Node::Kind::If;
      ExprPtr cond = ep.expression();
      ep.expect_end();
      for (;;) {
        std::vector<Node> branch;
        const std::string end = block(branch, {"elif", "else", "endif"});
        n.branches.emplace_back(cond, std::move(branch));
        if (end == "elif") {
          cond = rest_->expression();
          rest_->expect_end();
          continue;
        }
        if (end == "else") {
          rest_->expect_end();
          const std::string fin = block(n.else_body, {"endif"});
          (void)fin;
        }
        rest_->expect_end();
        break;
      }
    } else if (word == "for") {
      n.kind = Node::Kind::For;
      do n.targets.push_back(ep.expect_identifier());
      while (ep.take_op(","));
      if (!ep.take_name("in")) ep.error("expected 'in'");
      n.expr = ep.or_();
      if (ep.take_name("if")) n.filter = ep.or_();
      if (ep.take_name("recursive")) ep.error("recursive loops are not supported");
      ep.expect_end();
      const std::string end = block(n.body, {"else", "endfor"});
      if (end == "else") {
        rest_->expect_end();
        block(n.else_body, {"endfor"});
      }
      rest_->expect_end();
    } else if (word == "set") {
      n.kind = Node::Kind::Set;
      n.targets.push_back(ep.expect_identifier());
      if (ep.take_op(".")) n.targets.push_back(ep.expect_identifier());
      if (n.targets.size() == 1 && ep.at_end()) {  // {% set x %}...{% endset %}: x is what the body prints
        block(n.body, {"endset"});
        rest_->expect_end();
      } else {
        if (!ep.take_op("=")) ep.error("expected '='");
        n.expr = ep.expression();
        ep.expect_end();
      }
    } else if (word == "macro") {
      n.kind = Node::Kind::Macro;
      n.targets.push_back(ep.expect_identifier());
      if (!ep.take_op("(")) ep.error("expected '(' after the macro's name");
      while (!ep.take_op(")")) {
        if (n.targets.size() > 1 && !ep.take_op(",")) ep.error("expected ',' or ')' in the macro's parameters");
        if (ep.take_op(")")) break;  // a trailing comma
        n.targets.push_back(ep.expect_identifier());
        n.defaults.push_back(ep.take_op("=") ? ep.expression() : nullptr);
      }
      ep.expect_end();
      block(n.body, {"endmacro"});
      rest_->expect_end();
    } else if (word == "break" || word == "continue") {
      n.kind = word == "break" ? Node::Kind::Break : Node::Kind::Continue;
      ep.expect_end();
    } else if (word == "generation") {
      // transformers' marker of the assistant's part (for training masks): its body renders as is.
      ep.expect_end();
      block(body, {"endgeneration"});
      rest_->expect_end();
      return;
    } else {
      fail(name_, line, "'{% " + word + " %}' is not supported in chat templates by this version of tiergen");
    }
    body.push_back(std::move(n));
  }

  std::vector<Piece> pieces_;
  const std::string& name_;
  size_t at_ = 0;
  int line_ = 1;
  std::unique_ptr<ExprParser> rest_;  // the parser of the statement that ended the last block
};

}  // namespace

std::vector<Node> parse_template(const std::string& source, const std::string& name) {
  return Nester(cut(source, name), name).all();
}

}  // namespace tiergen::jinja
