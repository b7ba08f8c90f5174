"""Running graders: `build_grader(spec).grade(output_text, item)` turns a completion into a
reward, and `grade_many` grades a batch with its slow calls side by side.

Every call is bounded by the grader's `timeout_s` (default 2 s): string_check, json_valid
and RE2 regexes run here in linear time; math_verify, reasoning_gym, text_similarity and
regexes RE2 cannot run go to `lco_spec.sandbox`'s worker processes, killed at the limit.
A failed or timed-out sample is a GraderError (GraderTimeout), which the trainer scores 0
and counts (`grade_stats`: grader_errors, grader_timeouts).

    >>> g = build_grader({"type": "string_check", "name": "exact", "operation": "eq",
    ...                   "input": "{{ sample.output_text }}", "reference": "{{item.answer}}"})
    >>> g.grade("42", {"answer": "42"})
    GradeResult(score=1.0, sub_scores={'exact': 1.0})
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Union

from lco_spec import sandbox
from lco_spec.errors import GraderError, GraderTimeout
from lco_spec.expr import ExprError, parse_expression
from lco_spec.grader_specs import (
    DEFAULT_TIMEOUT_S,
    AnyGraderSpec,
    JsonValidGrader,
    MathVerifyGrader,
    MultiGrader,
    ReasoningGymGrader,
    RegexMatchGrader,
    StringCheckGrader,
    TextSimilarityGrader,
    parse_grader,
)
from lco_spec.math_answers import math_equal
from lco_spec.rg_scoring import reasoning_gym_score, rg_answer
from lco_spec.similarity import similarity
from lco_spec.templates import parse_template, render


@dataclass(frozen=True)
class GradeResult:
    """`score` is the reward; `sub_scores` maps each (sub-)grader name to its score."""

    score: float
    sub_scores: dict[str, float]


_OPERATIONS: dict[str, Callable[[str, str], bool]] = {
    "eq": lambda a, b: a == b,
    "ne": lambda a, b: a != b,
    "like": lambda a, b: b in a,
    "ilike": lambda a, b: b.casefold() in a.casefold(),
}


def _json_score(text: str, required_keys: tuple[str, ...]) -> float:
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return 0.0
    if not required_keys:
        return 1.0
    return float(isinstance(value, dict) and all(k in value for k in required_keys))


def _compile_re2(pattern: str, flags: str) -> Any | None:
    """`pattern` compiled by RE2, or None when RE2's grammar lacks what it uses."""
    import re2

    options = re2.Options()
    options.case_sensitive = flags != "i"
    options.log_errors = False  # a refused pattern is expected, not worth a log line
    try:
        return re2.compile(pattern, options)
    except re2.error:
        return None


@functools.lru_cache(maxsize=64)
def _backtracking_regex(pattern: str, flags: str) -> re.Pattern[str]:
    return re.compile(pattern, re.IGNORECASE if flags == "i" else 0)


def _regex_search(pattern: str, flags: str, text: str) -> float:
    return float(_backtracking_regex(pattern, flags).search(text) is not None)


_POOLED: dict[str, Callable[..., float]] = {
    "math_verify": lambda text, reference: float(math_equal(text, reference)),
    "reasoning_gym": lambda *args: reasoning_gym_score(*args),
    "text_similarity": lambda *args: similarity(*args),
    "regex_match": _regex_search,
}


def _pooled_score(kind: str, args: tuple[Any, ...]) -> float:
    """Runs in a grader worker process. Only GraderError crosses back: an exception from
    sympy may not even pickle."""
    try:
        return float(_POOLED[kind](*args))
    except GraderError:
        raise
    except MemoryError:
        raise GraderError("out of memory") from None
    except Exception as exc:
        raise GraderError(f"{type(exc).__name__}: {exc}") from None


# What `Grader._start` returns: a score, the sample's error, a call running in a worker,
# or (multi) one of those per sub-grader.
_Started = Union[float, GraderError, "Future[float]", dict[str, Any]]


class Grader:
    """A built grader. `grade` raises nothing but GraderError (GraderTimeout when a call
    ran out of time): one bad sample costs one zero reward, never a crashed training step.

    Every call is bounded by the grader's `timeout_s`: string_check, json_valid and RE2
    regexes run here in linear time; math_verify, reasoning_gym, text_similarity and
    backtracking regexes run in `lco_spec.sandbox`'s worker processes, killed at the limit.
    """

    def __init__(self, spec: AnyGraderSpec, default_timeout_s: float | None = None) -> None:
        self.spec = spec
        self.name = spec.name
        explicit = spec.timeout_s if "timeout_s" in spec.model_fields_set else None
        self.timeout_s = explicit or default_timeout_s or spec.timeout_s or DEFAULT_TIMEOUT_S
        # Templates, pattern and formula are parsed once here rather than per sample.
        self._input = parse_template(getattr(spec, "input", ""))
        self._reference = parse_template(getattr(spec, "reference", ""))
        self._re2 = None
        if isinstance(spec, RegexMatchGrader):
            self._re2 = _compile_re2(spec.pattern, spec.flags)
        if isinstance(spec, MathVerifyGrader):
            sandbox.warm("math_verify", lambda: math_equal(r"$\frac{1}{2}$", "0.5"))
        elif isinstance(spec, TextSimilarityGrader):
            metric = spec.evaluation_metric
            sandbox.warm(f"similarity.{metric}", lambda: similarity(metric, "a cat", "the cat"))
        elif isinstance(spec, ReasoningGymGrader):
            sandbox.warm("reasoning_gym", lambda: rg_answer("<answer>1</answer>"))
        self._subs: dict[str, Grader] = {}
        self._formula = None
        if isinstance(spec, MultiGrader):
            self._subs = {key: Grader(sub, spec.timeout_s) for key, sub in spec.graders.items()}
            self._formula = parse_expression(spec.calculate_output)

    def grade(self, output_text: str, item: Mapping[str, Any]) -> GradeResult:
        (outcome,) = self.grade_many([(output_text, item)])
        if isinstance(outcome, GraderError):
            raise outcome
        return outcome

    def grade_many(
        self, samples: Sequence[tuple[str, Mapping[str, Any]]]
    ) -> list[GradeResult | GraderError]:
        """Grade (output_text, item) pairs, the pooled calls all in flight at once: a batch
        of hostile samples costs about one limit per worker, not one per sample. Each
        sample's outcome is its GradeResult or its GraderError (see `grade_stats`)."""
        started = [self._start(text, item) for text, item in samples]
        return [self._finish(one) for one in started]

    def _start(self, output_text: str, item: Mapping[str, Any]) -> _Started:
        if self._formula is not None:
            return {key: g._start(output_text, item) for key, g in self._subs.items()}
        try:
            return self._start_simple(output_text, item)
        except GraderError as exc:
            return exc
        except Exception as exc:  # one bad sample, not a crash
            return GraderError(f"{self.name}: {type(exc).__name__}: {exc}")

    def _start_simple(self, output_text: str, item: Mapping[str, Any]) -> _Started:
        spec = self.spec
        if isinstance(spec, ReasoningGymGrader):
            args: tuple[Any, ...] = (spec.dataset, output_text, dict(item), spec.config)
            return self._submit("reasoning_gym", (*args, spec.extract))
        text = render(self._input, output_text, item)
        if isinstance(spec, RegexMatchGrader):
            if self._re2 is not None:
                return float(self._re2.search(text) is not None)
            return self._submit("regex_match", (spec.pattern, spec.flags, text))
        if isinstance(spec, JsonValidGrader):
            return _json_score(text, spec.required_keys)
        reference = render(self._reference, output_text, item)
        if isinstance(spec, StringCheckGrader):
            return float(_OPERATIONS[spec.operation](text, reference))
        if isinstance(spec, TextSimilarityGrader):
            return self._submit("text_similarity", (spec.evaluation_metric, text, reference))
        return self._submit("math_verify", (text, reference))

    def _submit(self, kind: str, args: tuple[Any, ...]) -> Future[float]:
        return sandbox.submit(_pooled_score, (kind, args), self.timeout_s)

    def _finish(self, started: _Started) -> GradeResult | GraderError:
        if self._formula is not None:
            assert isinstance(started, dict)
            outcomes = {key: g._finish(started[key]) for key, g in self._subs.items()}
            failed = [o for o in outcomes.values() if isinstance(o, GraderError)]
            if failed:  # a timeout is what the step's metrics should count
                return next((o for o in failed if isinstance(o, GraderTimeout)), failed[0])
            subs = {key: o.score for key, o in outcomes.items() if isinstance(o, GradeResult)}
            try:
                return GradeResult(score=self._formula.evaluate(subs), sub_scores=subs)
            except ExprError as exc:
                return GraderError(f"{self.name}: {exc}")
        if isinstance(started, GraderError):
            return started
        if isinstance(started, Future):
            try:
                score = sandbox.result(started, self.name, self.timeout_s)
            except GraderTimeout as exc:
                return exc
            except GraderError as exc:
                return GraderError(f"{self.name}: {exc}")
        else:
            assert isinstance(started, float)
            score = started
        return GradeResult(score=score, sub_scores={self.name: score})


def grade_stats(outcomes: Sequence[GradeResult | GraderError]) -> dict[str, float]:
    """A step's grader counters: `grader_errors` (every sample scored 0 for an error,
    timeouts included) and `grader_timeouts` (those killed at their limit)."""
    errors = sum(isinstance(o, GraderError) for o in outcomes)
    timeouts = sum(isinstance(o, GraderTimeout) for o in outcomes)
    return {"grader_errors": float(errors), "grader_timeouts": float(timeouts)}


def build_grader(spec: AnyGraderSpec | Mapping[str, Any]) -> Grader:
    """A runnable grader from a spec (or raw grader JSON, validated with `parse_grader`)."""
    return Grader(parse_grader(spec))
