"""Every grade call has a hard time limit: the hostile inputs of issue 15 (a catastrophic
regex, sympy on a product of 10^9 terms or on (x+1)^2000) each return within the grader's
`timeout_s` with score 0, counted as `grader_timeouts`, and the pool goes on grading."""

from __future__ import annotations

import mmap
import time
from collections.abc import Iterator
from typing import Any

import pytest

from lco_spec import grading, sandbox
from lco_spec.errors import GraderError, GraderTimeout, SpecError
from lco_spec.graders import build_grader, grade_stats, parse_grader

OUT = "{{sample.output_text}}"
ITEM = {
    "messages": [{"role": "user", "content": "1+1="}],
    "answer": "2",
    "text": "a" * 41 + "!",
}
# Scheduling slack on a loaded 2-core machine (a timed-out call's worker is killed and
# replaced inside it); the limits themselves are what is tested. It stays under pebble's
# 3 s SIGTERM grace, which the stuck-in-C test must tell apart from a prompt SIGKILL.
SLACK_S = 2.5


def timed(spec: dict[str, Any], samples: list[tuple[str, dict[str, Any]]]) -> tuple[list, float]:
    grader = build_grader(spec)
    start = time.perf_counter()
    outcomes = grader.grade_many(samples)
    return outcomes, time.perf_counter() - start


def test_catastrophic_regex_of_the_issue_runs_in_linear_time() -> None:
    spec = {"type": "regex_match", "name": "r", "input": "{{item.text}}", "pattern": "(a+)+$"}
    outcomes, elapsed = timed(spec, [("x", ITEM)])
    assert outcomes[0].score == 0.0  # RE2: no backtracking, so no timeout either
    assert elapsed < 0.5
    # A long hostile input is still linear.
    outcomes, elapsed = timed(spec, [("x", {"text": "a" * 200_000 + "!"})])
    assert outcomes[0].score == 0.0 and elapsed < 0.5


def test_regex_that_re2_cannot_run_is_killed_at_its_limit() -> None:
    # A back reference needs a backtracking engine; this one backtracks exponentially.
    spec = {
        "type": "regex_match",
        "name": "r",
        "input": "{{item.text}}",
        "pattern": r"^(a+)+\1$",
        "timeout_s": 0.5,
    }
    outcomes, elapsed = timed(spec, [("x", ITEM)])
    assert isinstance(outcomes[0], GraderTimeout)
    assert "r: timed out after 0.5 s" in str(outcomes[0])
    assert elapsed < 0.5 + SLACK_S
    assert grade_stats(outcomes) == {"grader_errors": 1.0, "grader_timeouts": 1.0}
    # The same grader still answers a harmless input (its worker was replaced).
    assert build_grader(spec).grade("x", {"text": "aa"}).score == 1.0


@pytest.mark.parametrize(
    ("answer", "reference"),
    [
        ("5", r"$\prod_{k=1}^{10^{9}} k$"),
        (r"$(x+2)^{2000}$", r"$(x+1)^{2000}$"),
    ],
)
def test_math_verify_hostile_inputs_time_out(answer: str, reference: str) -> None:
    spec = {"type": "math_verify", "name": "m", "input": OUT, "reference": reference}
    outcomes, elapsed = timed({**spec, "timeout_s": 1.0}, [(answer, ITEM)])
    assert isinstance(outcomes[0], GraderTimeout), outcomes[0]
    assert elapsed < 1.0 + SLACK_S
    with pytest.raises(GraderError, match="timed out after 1 s"):
        build_grader({**spec, "timeout_s": 1.0}).grade(answer, ITEM)


def test_default_limit_is_two_seconds_and_a_batch_times_out_in_parallel() -> None:
    spec = {"type": "math_verify", "name": "m", "input": OUT, "reference": r"$(x+1)^{2000}$"}
    assert parse_grader(spec).timeout_s == 2.0
    hostile = [(r"$(x+2)^{2000}$", ITEM)] * 6
    outcomes, elapsed = timed({**spec, "timeout_s": 1.0}, hostile)
    assert grade_stats(outcomes) == {"grader_errors": 6.0, "grader_timeouts": 6.0}
    # The calls run side by side (LCO_GRADER_WORKERS: 2 on this 2-core machine), so six
    # hostile samples cost about three limits; one after another they would cost six at
    # least, whatever the machine's load (the bound is that, not a speed target).
    assert elapsed < 6 * 1.0


def test_multi_with_a_timed_out_sub_grader_is_a_timeout() -> None:
    spec = {
        "type": "multi",
        "name": "both",
        "timeout_s": 0.5,
        "graders": {
            "exact": {"type": "string_check", "input": OUT, "reference": "{{item.answer}}"},
            "math": {"type": "math_verify", "input": OUT, "reference": r"$(x+1)^{2000}$"},
        },
        "calculate_output": "exact + math",
    }
    grader = build_grader(spec)
    assert grader._subs["math"].timeout_s == 0.5  # the multi's limit, as it set none
    outcomes, elapsed = timed(spec, [(r"$(x+2)^{2000}$", ITEM)])
    assert isinstance(outcomes[0], GraderTimeout)
    assert elapsed < 0.5 + SLACK_S


@pytest.mark.parametrize("value", [0, -1, 61, "soon"])
def test_timeout_setting_is_bounded(value: Any) -> None:
    spec = {"type": "math_verify", "input": OUT, "reference": "1", "timeout_s": value}
    with pytest.raises(SpecError) as info:
        parse_grader(spec)
    assert info.value.param == "grader.timeout_s"


def test_re2_keeps_flags_and_backtracking_patterns_still_work() -> None:
    def regex(pattern: str, text: str, flags: str = "") -> float:
        spec = {"type": "regex_match", "input": OUT, "pattern": pattern, "flags": flags}
        return build_grader(spec).grade(text, {}).score

    assert regex("^PARIS$", "paris", "i") == 1.0
    assert regex("^PARIS$", "paris") == 0.0
    assert regex(r"(?<=answer: )\d+", "answer: 42") == 1.0  # lookbehind: Python's re
    assert regex(r"(\w)\1", "hello") == 1.0  # back reference: Python's re


def test_pool_overhead_is_small() -> None:
    """What a pooled call costs beyond its own work (text_similarity on short strings):
    about 0.1-0.2 ms on the development machine; bounded loosely here for loaded CI."""
    spec = {"type": "text_similarity", "input": OUT, "reference": "{{item.answer}}"}
    grader = build_grader(spec)
    grader.grade("2", ITEM)  # start the pool
    samples = [(str(i), ITEM) for i in range(2000)]
    start = time.perf_counter()
    outcomes = grader.grade_many(samples)
    per_call_ms = (time.perf_counter() - start) / len(samples) * 1000
    assert all(not isinstance(o, GraderError) for o in outcomes)
    print(f"pooled text_similarity: {per_call_ms:.3f} ms per call")
    assert per_call_ms < 5.0


@pytest.fixture
def fresh_pool() -> Iterator[None]:
    """Grader workers forked inside the test (after its patches and settings), and gone
    after it."""
    sandbox.shutdown()
    yield
    sandbox.shutdown()


def test_worker_memory_limit_is_on_top_of_what_it_inherited(
    monkeypatch: pytest.MonkeyPatch, fresh_pool: None
) -> None:
    # A parent with a large address space (a trainer maps GBs; CUDA far more) ...
    reserved = mmap.mmap(-1, 6 * 1024**3)  # 6 GiB reserved, never touched
    monkeypatch.setenv("LCO_GRADER_MEMORY_MB", "256")
    spec = {"type": "text_similarity", "input": OUT, "reference": "{{item.answer}}"}
    try:
        # ... still grades: the limit is 256 MB more than the fork inherited, not 256 MB.
        assert build_grader(spec).grade("2", ITEM).score == 1.0
        # A call that wants more than that fails at once, as an error, not a swap storm.
        monkeypatch.setattr(grading, "similarity", lambda *args: len(bytearray(1024**3)))
        sandbox.shutdown()
        with pytest.raises(GraderError, match="out of memory"):
            build_grader(spec).grade("2", ITEM)
    finally:
        reserved.close()


def test_a_call_stuck_in_c_is_killed_at_its_limit(
    monkeypatch: pytest.MonkeyPatch, fresh_pool: None
) -> None:
    """A worker inside one long C call (as sympy in a big integer product) runs no Python
    signal handler, so a SIGTERM handler would wait pebble's 3 s grace before SIGKILL."""
    spec = {"type": "text_similarity", "input": OUT, "reference": "x", "timeout_s": 0.5}
    build_grader(spec)  # warms up here with the real metric, before the patch
    monkeypatch.setattr(grading, "similarity", lambda *args: float(sum(range(10**13))))
    outcomes, elapsed = timed(spec, [("x", ITEM)])
    assert isinstance(outcomes[0], GraderTimeout)
    assert elapsed < 0.5 + SLACK_S
