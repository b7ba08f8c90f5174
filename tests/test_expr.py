"""The multi grader's formula language: arithmetic, whitelist, bounds, and hostile input."""

from __future__ import annotations

import doctest
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lco_spec import expr as expr_module
from lco_spec.expr import MAX_DEPTH, MAX_LENGTH, ExprError, evaluate, parse_expression


@pytest.mark.parametrize(
    ("formula", "expected"),
    [
        ("1 + 2 * 3", 7.0),
        ("(1 + 2) * 3", 9.0),
        ("10 - 4 - 3", 3.0),  # left-associative
        ("8 / 4 / 2", 1.0),
        ("2 ** 3 ** 2", 512.0),  # right-associative
        ("-2 ** 2", -4.0),  # ** binds tighter than unary minus, as in Python
        ("2 ** -1", 0.5),
        ("2 ^ 3 ^ 2", 512.0),  # OpenAI's power operator, right-associative
        ("-2 ^ 2", -4.0),
        ("(1 + 0.5 ^ 2) / 2", 0.625),  # issue 16's "(a + b ^ 2) / 2"
        ("2 ^ 3 ** 2", 512.0),
        ("--3", 3.0),
        ("+3", 3.0),
        (".5 + 1.", 1.5),
        ("1e3 + 2.5E-1", 1000.25),
        ("min(3, 1, 2) + max(4)", 5.0),
        ("abs(-2.5)", 2.5),
        ("floor(2.7) + ceil(2.1)", 5.0),
        ("exp(0) + sqrt(16) + log(1)", 5.0),
        ("clip(1.7, 0, 1) + clip(-3, 0, 1) + clip(0.25, 0, 1)", 1.25),
        ("  1\t+\n1 ", 2.0),
    ],
)
def test_arithmetic(formula: str, expected: float) -> None:
    assert evaluate(formula, {}) == pytest.approx(expected)


def test_variables_are_collected_and_bound() -> None:
    expr = parse_expression("0.7 * exact + 0.3 * clip(fuzzy - base, 0, 1)")
    assert expr.variables == frozenset({"exact", "fuzzy", "base"})
    assert expr.evaluate({"exact": 1.0, "fuzzy": 0.9, "base": 0.4}) == pytest.approx(0.85)
    assert expr.evaluate({"exact": 0.0, "fuzzy": 0.2, "base": 0.4}) == 0.0


def test_unknown_variable_at_evaluation() -> None:
    with pytest.raises(ExprError, match="unknown variable 'b'"):
        parse_expression("a + b").evaluate({"a": 1.0})


@pytest.mark.parametrize(
    ("formula", "message"),
    [
        ("__import__('os')", "unexpected character"),
        ("__import__(os)", "unknown function '__import__'"),
        ("a.__class__", "unexpected character '.'"),
        ("open(1)", "unknown function 'open'"),
        ("eval(1)", "unknown function 'eval'"),
        ("x[0]", "unexpected character '\\['"),
        ("lambda: 1", "unexpected character ':'"),
        ("a if b else c", "unexpected 'if'"),
        ("1 +", "found end of formula"),
        ("(1 + 2", "expected '\\)'"),
        ("1 + 2)", "unexpected '\\)'"),
        ("max()", "found '\\)'"),
        ("sqrt(1, 2)", "takes 1 arguments, got 2"),
        ("clip(1, 2)", "takes 3 arguments, got 2"),
        ("min", "needs arguments"),
        ("1 2", "unexpected '2'"),
        ("1 // 2", "found '/'"),
        ("1e999", "out of range"),
        ("", "empty"),
        ("   ", "empty"),
        ("x" * (MAX_LENGTH + 1), "longer than"),
        ("(" * (MAX_DEPTH + 1) + "1" + ")" * (MAX_DEPTH + 1), "deeper than"),
        ("-" * (MAX_DEPTH + 1) + "1", "deeper than"),
        ("2**" * (MAX_DEPTH + 1) + "1", "deeper than"),
        ("+".join(["1"] * 200), "more than 256 tokens"),
    ],
)
def test_refused_at_parse(formula: str, message: str) -> None:
    with pytest.raises(ExprError, match=message):
        parse_expression(formula)


@pytest.mark.parametrize(
    ("formula", "message"),
    [
        ("1 / 0", "division by zero"),
        ("a / (a - 1)", "division by zero"),
        ("10 ** 1000", "cannot evaluate"),  # floats overflow: no huge integer is ever built
        ("9 ** 9 ** 9 ** 9", "cannot evaluate"),
        ("exp(1000)", "cannot evaluate"),
        ("(-8) ** (1 / 3)", "cannot evaluate"),  # would be complex with Python's **
        ("0 ** -1", "cannot evaluate"),
        ("sqrt(-1)", "cannot evaluate"),
        ("log(0)", "cannot evaluate"),
        ("clip(a, 1, 0)", "lower bound"),
        ("1e308 * 10", "evaluated to inf"),
    ],
)
def test_refused_at_evaluation(formula: str, message: str) -> None:
    expr = parse_expression(formula)
    with pytest.raises(ExprError, match=message):
        expr.evaluate({"a": 1.0})


def test_error_is_a_value_error() -> None:
    # Callers (pydantic validators) rely on ValueError to report a field error.
    assert issubclass(ExprError, ValueError)


@given(
    st.floats(-1e6, 1e6),
    st.floats(-1e6, 1e6),
    st.floats(0.5, 1e3),
)
def test_matches_python_arithmetic(a: float, b: float, c: float) -> None:
    got = evaluate("(a + b) * c - a / c + abs(b) ** 0.5", {"a": a, "b": b, "c": c})
    assert math.isclose(got, (a + b) * c - a / c + abs(b) ** 0.5, rel_tol=1e-12, abs_tol=1e-9)


@given(st.text(max_size=60))
def test_arbitrary_text_only_ever_raises_expr_error(text: str) -> None:
    try:
        value = parse_expression(text).evaluate({})
    except ExprError:
        return
    assert math.isfinite(value)


def test_docstring_examples() -> None:
    result = doctest.testmod(expr_module)
    assert result.attempted > 0 and result.failed == 0
