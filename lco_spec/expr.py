"""A small, safe arithmetic expression language for the `multi` grader's `calculate_output`.

A hand-written tokenizer and recursive-descent parser compile a formula once (at
validation time) into a tree of tuples; evaluation walks that tree with float arithmetic.
Nothing is ever handed to `eval`/`exec`, and only this grammar is understood:

    expr    := term (("+" | "-") term)*
    term    := unary (("*" | "/") unary)*
    unary   := ("-" | "+") unary | power
    power   := primary (("^" | "**") unary)?  # right-associative, binds tighter than unary -
    primary := NUMBER | NAME | NAME "(" expr ("," expr)* ")" | "(" expr ")"

This is OpenAI's formula language for `calculate_output`: operators `+ - * / ^` (`^` is
power, as in OpenAI's docs; Python's `**` is accepted too) and the functions `min`,
`max`, `abs`, `floor`, `ceil`, `exp`, `sqrt`, `log`, plus our `clip(x, lo, hi)`.
Names are variables (the sub-grader names) or one of those functions (`FUNCTIONS`). Formulas are bounded in length and nesting depth; results must be finite,
so overflow (`10 ** 1000`), division by zero and domain errors raise `ExprError`.

    >>> parse_expression("0.5 * a + 0.5 * max(b, 0)").evaluate({"a": 1.0, "b": -2.0})
    0.5
    >>> sorted(parse_expression("clip(x - y, 0, 1)").variables)
    ['x', 'y']
    >>> evaluate("2 ** -1", {}), evaluate("(a + b ^ 2) / 2", {"a": 1.0, "b": 0.5})
    (0.5, 0.625)
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

MAX_LENGTH = 1024
MAX_DEPTH = 32  # nesting of parentheses, calls, unary signs and powers
MAX_TOKENS = 256


class ExprError(ValueError):
    """A formula that does not parse, names something unknown, or cannot be evaluated."""


def _clip(x: float, lo: float, hi: float) -> float:
    if lo > hi:
        raise ExprError(f"clip: lower bound {lo} exceeds upper bound {hi}")
    return min(max(x, lo), hi)


# name -> (function, min arity, max arity); math.* raise ValueError on domain errors.
FUNCTIONS: dict[str, tuple[Callable[..., float], int, int]] = {
    "min": (lambda *xs: min(xs), 1, 64),
    "max": (lambda *xs: max(xs), 1, 64),
    "abs": (abs, 1, 1),
    "floor": (lambda x: float(math.floor(x)), 1, 1),
    "ceil": (lambda x: float(math.ceil(x)), 1, 1),
    "exp": (math.exp, 1, 1),
    "sqrt": (math.sqrt, 1, 1),
    "log": (math.log, 1, 1),
    "clip": (_clip, 3, 3),
}

_TOKEN = re.compile(
    r"(?P<num>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)"
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<op>\*\*|[-+*/^(),])"
)

# Tree nodes are plain tuples: ("num", v) ("var", name) ("neg", x) ("bin", op, l, r)
# ("call", name, args). Tuples are immutable, so a parsed Expression is safe to share.
Node = tuple[Any, ...]


def _tokenize(text: str) -> list[tuple[str, str, int]]:
    tokens: list[tuple[str, str, int]] = []
    pos = len(text) - len(text.lstrip())
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.lastgroup is None:
            raise ExprError(f"unexpected character {text[pos]!r} at position {pos}")
        tokens.append((m.lastgroup, m.group(), pos))
        # Bounds the tree size, hence the recursion depth of evaluation.
        if len(tokens) > MAX_TOKENS:
            raise ExprError(f"formula has more than {MAX_TOKENS} tokens")
        pos = m.end()
        while pos < len(text) and text[pos].isspace():
            pos += 1
    tokens.append(("end", "", len(text)))
    return tokens


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokenize(text)
        self.i = 0
        self.depth = 0

    def peek(self) -> tuple[str, str, int]:
        return self.tokens[self.i]

    def take(self, value: str | None = None) -> tuple[str, str, int]:
        tok = self.tokens[self.i]
        if value is not None and tok[1] != value:
            found = repr(tok[1]) if tok[0] != "end" else "end of formula"
            raise ExprError(f"expected {value!r} at position {tok[2]}, found {found}")
        self.i += 1
        return tok

    def parse(self) -> Node:
        node = self.expr()
        kind, value, pos = self.peek()
        if kind != "end":
            raise ExprError(f"unexpected {value!r} at position {pos}")
        return node

    def expr(self) -> Node:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ExprError(f"formula nests deeper than {MAX_DEPTH} levels")
        node = self.term()
        while self.peek()[1] in ("+", "-") and self.peek()[0] == "op":
            op = self.take()[1]
            node = ("bin", op, node, self.term())
        self.depth -= 1
        return node

    def term(self) -> Node:
        node = self.unary()
        while self.peek()[1] in ("*", "/") and self.peek()[0] == "op":
            op = self.take()[1]
            node = ("bin", op, node, self.unary())
        return node

    def unary(self) -> Node:
        if self.peek()[0] == "op" and self.peek()[1] in ("-", "+"):
            op = self.take()[1]
            self.depth += 1  # "- - - - x" recurses without passing through expr()
            if self.depth > MAX_DEPTH:
                raise ExprError(f"formula nests deeper than {MAX_DEPTH} levels")
            operand = self.unary()
            self.depth -= 1
            return ("neg", operand) if op == "-" else operand
        return self.power()

    def power(self) -> Node:
        base = self.primary()
        if self.peek()[1] in ("**", "^") and self.peek()[0] == "op":
            self.take()
            self.depth += 1  # "a ** b ** c ..." chains recurse via unary()
            if self.depth > MAX_DEPTH:
                raise ExprError(f"formula nests deeper than {MAX_DEPTH} levels")
            exponent = self.unary()
            self.depth -= 1
            return ("bin", "**", base, exponent)
        return base

    def primary(self) -> Node:
        kind, value, pos = self.take()
        if kind == "num":
            number = float(value)
            if not math.isfinite(number):
                raise ExprError(f"number {value!r} at position {pos} is out of range")
            return ("num", number)
        if kind == "name":
            if self.peek()[1] != "(":
                if value in FUNCTIONS:
                    raise ExprError(f"function {value!r} at position {pos} needs arguments")
                return ("var", value)
            if value not in FUNCTIONS:
                allowed = ", ".join(sorted(FUNCTIONS))
                raise ExprError(f"unknown function {value!r} at position {pos}; allowed: {allowed}")
            self.take("(")
            args = [self.expr()]
            while self.peek()[1] == ",":
                self.take()
                args.append(self.expr())
            self.take(")")
            _, lo, hi = FUNCTIONS[value]
            if not lo <= len(args) <= hi:
                want = str(lo) if lo == hi else f"{lo} to {hi}"
                raise ExprError(f"{value}() takes {want} arguments, got {len(args)}")
            return ("call", value, tuple(args))
        if value == "(":
            node = self.expr()
            self.take(")")
            return node
        found = repr(value) if kind != "end" else "end of formula"
        raise ExprError(f"expected a number, name or '(' at position {pos}, found {found}")


def _eval(node: Node, env: Mapping[str, float]) -> float:
    tag = node[0]
    if tag == "num":
        return float(node[1])
    if tag == "var":
        if node[1] not in env:
            raise ExprError(f"unknown variable {node[1]!r}")
        return float(env[node[1]])
    if tag == "neg":
        return -_eval(node[1], env)
    if tag == "call":
        fn = FUNCTIONS[node[1]][0]
        return float(fn(*(_eval(arg, env) for arg in node[2])))
    op, left, right = node[1], _eval(node[2], env), _eval(node[3], env)
    if op == "+":
        return left + right
    if op == "-":
        return left - right
    if op == "*":
        return left * right
    if op == "/":
        if right == 0:
            raise ExprError("division by zero")
        return left / right
    # math.pow, unlike **, raises instead of returning a complex for (-8) ** (1/3).
    return math.pow(left, right)


def _variables(node: Node) -> set[str]:
    if node[0] == "var":
        return {node[1]}
    children: tuple[Any, ...] = node[2] if node[0] == "call" else node[1:]
    out: set[str] = set()
    for child in children:
        if isinstance(child, tuple):
            out |= _variables(child)
    return out


@dataclass(frozen=True)
class Expression:
    """A parsed formula: `variables` it reads, `evaluate(env)` to compute it."""

    source: str
    tree: Node
    variables: frozenset[str]

    def evaluate(self, env: Mapping[str, float]) -> float:
        """Compute the formula; raises ExprError for unknown names or a non-finite result."""
        try:
            value = _eval(self.tree, env)
        except ExprError:
            raise
        except (OverflowError, ValueError, ZeroDivisionError, TypeError) as exc:
            raise ExprError(f"cannot evaluate {self.source!r}: {exc}") from None
        if not math.isfinite(value):
            raise ExprError(f"{self.source!r} evaluated to {value}")
        return value


def parse_expression(text: str) -> Expression:
    """Parse `text`, raising ExprError with the position of the first problem."""
    if not isinstance(text, str):
        raise ExprError("the formula must be a string")
    if len(text) > MAX_LENGTH:
        raise ExprError(f"formula is longer than {MAX_LENGTH} characters")
    if not text.strip():
        raise ExprError("the formula is empty")
    tree = _Parser(text).parse()
    return Expression(source=text, tree=tree, variables=frozenset(_variables(tree)))


def evaluate(text: str, env: Mapping[str, float]) -> float:
    """Parse and evaluate in one call (parse once with `parse_expression` in loops)."""
    return parse_expression(text).evaluate(env)
