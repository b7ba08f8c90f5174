"""Math answer equivalence for the `math_verify` grader (the `math_verify` package, sympy).

These calls can run for a very long time on hostile input; the grader runs them in
`lco_spec.sandbox`'s worker processes under its time limit. The size guard below refuses
the obviously huge values early, so most hostile answers fail in milliseconds, not at the
limit.
"""

from __future__ import annotations

import math
from typing import Any

from lco_spec.errors import GraderError

# math_verify's own timeout uses SIGALRM (main thread only), so we call it timeout-free and
# instead refuse expressions whose exact value would be huge: sympy evaluates 10^{10^{10}}
# or (10^{10})! exactly and never returns. Answers sit at the end of a completion.
_MAX_DIGITS = 10_000
_MAX_MATH_CHARS = 10_000
_COMBINATORIAL = frozenset({"factorial", "factorial2", "subfactorial", "binomial", "gamma"})
_COMBINATORIAL |= {"RisingFactorial", "FallingFactorial", "fibonacci", "lucas", "primorial"}


def _digits(expr: Any) -> float:
    """Upper bound on the decimal digits of exact numbers sympy may build from `expr`."""
    if getattr(expr, "is_Rational", False):
        return (int(expr.p).bit_length() + int(expr.q).bit_length()) * math.log10(2)
    args = getattr(expr, "args", ())
    if not isinstance(args, tuple) or not args:
        return 1.0
    if getattr(expr, "is_Pow", False):
        exponent = args[1]
        magnitude: float
        if getattr(exponent, "is_Integer", False):
            magnitude = abs(int(exponent))
        else:
            size = _digits(exponent)
            magnitude = math.inf if size > 6 else 10**size
        return (_digits(args[0]) + 1) * magnitude
    if type(expr).__name__ in _COMBINATORIAL:
        size = max(_digits(a) for a in args)
        return math.inf if size > 5 else 10**size * (size + 1)
    return sum(_digits(a) for a in args) + 1


def _math_parse(text: str) -> list[Any]:
    from math_verify import parse  # imports sympy: slow, so only when a math grader runs

    parsed = list(parse(text[-_MAX_MATH_CHARS:], parsing_timeout=None))
    if any(_digits(p) > _MAX_DIGITS for p in parsed):
        raise GraderError(f"{text[-80:]!r} is too large to verify safely")
    return parsed


def math_equal(answer: str, reference: str) -> bool:
    """Whether the final math answer in `answer` equals `reference`. GraderError if the
    reference has no parseable answer or either side is too large to verify safely.

    >>> math_equal("so the answer is 0.5", "1/2"), math_equal("42", "42.0")
    (True, True)
    """
    from math_verify import verify

    gold = _math_parse(reference)
    if not gold:
        raise GraderError(f"reference {reference[:80]!r} has no parseable math answer")
    pred = _math_parse(answer)
    return bool(pred) and bool(verify(gold, pred, timeout_seconds=None))
