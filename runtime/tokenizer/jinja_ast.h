// A parsed Jinja template (runtime/tokenizer/jinja.h): expressions and statements, made by
// jinja_parse.cc and run by jinja_eval.cc.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "runtime/tokenizer/jinja.h"

namespace tiergen::jinja {

struct Expr;
using ExprPtr = std::shared_ptr<const Expr>;

struct Expr {
  enum class Op {
    Literal,  // value
    Name,     // name
    Attr,     // args[0].name
    Item,     // args[0][args[1]]
    Slice,    // args[0][args[1]:args[2]:args[3]] (null parts absent)
    Call,     // args[0](args[1..], kwargs)
    Filter,   // args[0] | name(args[1..], kwargs)
    Test,     // args[0] is [not] name(args[1..])
    Unary,    // name ("-", "+", "not") args[0]
    Binary,   // args[0] name args[1]: + - * / // % ** ~ == != < <= > >= in "not in"
    And,
    Or,
    Cond,  // args[0] if args[1] else args[2] (args[2] null: undefined)
    ListLit,
    DictLit,  // args: key, value, key, value, ...
  };
  Op op = Op::Literal;
  Value value;
  std::string name;
  std::vector<ExprPtr> args;
  std::vector<std::pair<std::string, ExprPtr>> kwargs;
  bool negate = false;  // `is not`
  int line = 0;
};

struct Node {
  enum class Kind { Text, Output, If, For, Set, Macro, Break, Continue };
  Kind kind = Kind::Text;
  int line = 0;
  std::string text;  // Text
  ExprPtr expr;      // Output, Set's value (null: the body's text), For's iterable
  // If: one branch per if / elif (its condition and body), then the else body.
  std::vector<std::pair<ExprPtr, std::vector<Node>>> branches;
  // For's, Macro's, a block Set's body; else_body: For's when nothing was iterated, If's else.
  std::vector<Node> body, else_body;
  // For's loop variables; Set's name (and attribute: ns.x); Macro's name, then its parameters'.
  std::vector<std::string> targets;
  ExprPtr filter;                 // For's `if` condition, or null
  std::vector<ExprPtr> defaults;  // Macro: each parameter's default value, or null
};

// The statements of `source`; FormatError naming `name` and the line for what does not parse.
std::vector<Node> parse_template(const std::string& source, const std::string& name);

}  // namespace tiergen::jinja
