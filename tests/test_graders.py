"""Graders: each type and operation, metrics against hand-computed values, templates,
the multi formula (including hostile formulas), math_verify equivalences, and the
validation helpers' error params."""

from __future__ import annotations

import doctest
import math
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lco_spec import grader_specs, grading, math_answers, rg_scoring, sandbox, templates
from lco_spec import graders as graders_module
from lco_spec import similarity as similarity_module
from lco_spec.errors import SpecError
from lco_spec.graders import (
    GraderError,
    GradeResult,
    MultiGrader,
    build_grader,
    check_grader_against_item,
    math_equal,
    parse_grader,
    render_template,
    similarity,
    template_fields,
)
from lco_spec.job import parse_job_spec

OUT = "{{sample.output_text}}"
METRICS = ["fuzzy_match", "bleu", "gleu", "meteor", "rouge_1", "rouge_2", "rouge_3", "rouge_4"]
METRICS += ["rouge_5", "rouge_l"]


def grade(spec: dict[str, Any], output: str, item: dict[str, Any] | None = None) -> float:
    return build_grader(spec).grade(output, item or {}).score


def check(op: str, output: str, reference: str) -> float:
    spec = {"type": "string_check", "name": "s", "input": OUT, "reference": reference}
    return grade({**spec, "operation": op}, output)


# --- string_check ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("op", "output", "reference", "expected"),
    [
        ("eq", "Paris", "Paris", 1.0),
        ("eq", "Paris", "paris", 0.0),
        ("eq", "Paris ", "Paris", 0.0),
        ("ne", "Paris", "London", 1.0),
        ("ne", "Paris", "Paris", 0.0),
        ("like", "The capital is Paris.", "Paris", 1.0),
        ("like", "The capital is paris.", "Paris", 0.0),
        ("ilike", "THE CAPITAL IS PARIS.", "Paris", 1.0),
        ("ilike", "The capital is Lyon.", "Paris", 0.0),
    ],
)
def test_string_check(op: str, output: str, reference: str, expected: float) -> None:
    assert check(op, output, reference) == expected


def test_simple_grader_result_shape() -> None:
    spec = {"type": "string_check", "name": "exact", "input": OUT, "reference": "{{item.a}}"}
    result = build_grader(spec).grade("x", {"a": "x"})
    assert result == GradeResult(score=1.0, sub_scores={"exact": 1.0})


# --- text_similarity ---------------------------------------------------------------------

HYP, REF = "the cat sat on the mat", "the cat is on the mat"


@pytest.mark.parametrize(
    ("metric", "hyp", "ref", "expected"),
    [
        ("fuzzy_match", "kitten", "sitting", 8 / 13),  # Indel: LCS 4, 1 - 5/13
        ("fuzzy_match", "abc", "abc", 1.0),
        ("fuzzy_match", "abc", "xyz", 0.0),
        ("bleu", HYP, REF, (5 / 6 * 4 / 6 * 2 / 5 * 1 / 4) ** 0.25),
        ("bleu", "the cat", "the cat sat on the mat", math.exp(1 - 6 / 2)),  # brevity penalty
        ("bleu", "dog", REF, 0.0),
        ("gleu", HYP, REF, 9 / 18),
        ("rouge_1", HYP, REF, 5 / 6),
        ("rouge_2", HYP, REF, 3 / 5),
        ("rouge_3", HYP, REF, 1 / 4),
        ("rouge_4", HYP, REF, 0.0),
        ("rouge_l", HYP, REF, 5 / 6),
        ("rouge_l", "a b c d", "a x c y d", 2 * (3 / 4) * (3 / 5) / (3 / 4 + 3 / 5)),
        ("rouge_1", "The CAT!", "the cat !", 1.0),  # lowercased word/punctuation tokens
        ("rouge_1", "Ça va, très bien", "ça va très bien", 1.0),  # any script's words count
        ("rouge_2", "yes", "yes", 0.0),  # no bigram on either side: ROUGE-2 is 0 (rouge-score)
        ("rouge_2", "yes", "no", 0.0),
        # METEOR (nltk; exact and stem matches): F-mean 1, one chunk of 6: 1 - 0.5 (1/6)^3.
        ("meteor", HYP, HYP, 1 - 0.5 * (1 / 6) ** 3),
        ("meteor", "the cats sat", "the cat sat", 1 - 0.5 * (1 / 3) ** 3),  # stem match
    ],
)
def test_similarity_values(metric: str, hyp: str, ref: str, expected: float) -> None:
    assert similarity(metric, hyp, ref) == pytest.approx(expected)


@pytest.mark.parametrize("metric", METRICS)
def test_similarity_identity_and_empty(metric: str) -> None:
    text = "An answer, with a few more words."
    assert similarity(metric, text, text) == pytest.approx(1.0, abs=0.01)  # METEOR: 0.998
    assert similarity(metric, "", "") == 1.0
    assert similarity(metric, "", "something") == 0.0
    assert similarity(metric, "something", "") == 0.0


@settings(max_examples=50, deadline=None)
@given(st.sampled_from(METRICS), st.text(max_size=40), st.text(max_size=40))
def test_similarity_in_unit_interval(metric: str, a: str, b: str) -> None:
    assert 0.0 <= similarity(metric, a, b) <= 1.0


@pytest.mark.parametrize("metric", [*METRICS, "cosine"])
def test_every_openai_metric_works_or_is_a_400_naming_it(metric: str) -> None:
    spec = {"type": "text_similarity", "input": OUT, "reference": "{{item.ref}}"}
    spec["evaluation_metric"] = metric
    if metric == "cosine":
        with pytest.raises(SpecError, match="'cosine': cosine similarity needs") as info:
            parse_grader(spec)
        assert info.value.param == "grader.evaluation_metric"
        return
    assert grade(spec, HYP, {"ref": HYP}) == pytest.approx(1.0, abs=0.01)
    assert grade(spec, HYP, {"ref": "entirely different words here"}) < 0.5


def test_text_similarity_grader_uses_item() -> None:
    spec = {"type": "text_similarity", "name": "sim", "input": OUT, "reference": "{{item.ref}}"}
    spec["evaluation_metric"] = "rouge_1"
    assert grade(spec, HYP, {"ref": REF}) == pytest.approx(5 / 6)


# --- templates ---------------------------------------------------------------------------


def test_template_nested_list_whitespace_and_json_values() -> None:
    item = {"a": {"b": "deep"}, "xs": ["zero", "one"], "n": 3, "ok": True, "d": {"k": 1}}
    text = (
        "{{ item.a.b }}|{{item.xs.1}}|{{item.n}}|{{item.ok}}|{{item.d}}|{{  sample.output_text  }}"
    )
    assert render_template(text, "OUT", item) == 'deep|one|3|true|{"k": 1}|OUT'


def test_latex_braces_are_literal() -> None:
    assert render_template(r"\frac{{1}}{2}", "x", {}) == r"\frac{{1}}{2}"


@pytest.mark.parametrize("path", ["{{item.missing}}", "{{item.a.c}}", "{{item.xs.5}}"])
def test_missing_item_field_is_grader_error(path: str) -> None:
    spec = {"type": "string_check", "name": "s", "input": OUT, "reference": path}
    with pytest.raises(GraderError, match="item has no field"):
        build_grader(spec).grade("x", {"a": {"b": 1}, "xs": [1]})


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ("{{answer}}", "unknown template reference"),
        ("{{itm.answer}}", "unknown template reference"),
        ("{{item}}", "names no field"),
        ("{{item..a}}", "cannot read template reference"),
        ("{{sample.output_tools}}", "unknown sample field"),
        ("{{sample.output_text.x}}", "has no fields"),
    ],
)
def test_bad_template_is_spec_error(reference: str, message: str) -> None:
    with pytest.raises(SpecError, match=message) as info:
        parse_grader({"type": "string_check", "input": OUT, "reference": reference})
    assert info.value.param == "grader.reference"


# --- multi -------------------------------------------------------------------------------


def multi(formula: str) -> dict[str, Any]:
    return {
        "type": "multi",
        "name": "combined",
        "graders": {
            "exact": {"type": "string_check", "input": OUT, "reference": "{{item.answer}}"},
            "fuzzy": {"type": "text_similarity", "input": OUT, "reference": "{{item.answer}}"},
        },
        "calculate_output": formula,
    }


def test_multi_formula_and_sub_scores() -> None:
    grader = build_grader(multi("0.5 * exact + 0.5 * fuzzy"))
    result = grader.grade("kitten", {"answer": "sitting"})
    assert result.sub_scores == {"exact": 0.0, "fuzzy": pytest.approx(8 / 13)}
    assert result.score == pytest.approx(4 / 13)
    assert grader.grade("sitting", {"answer": "sitting"}).score == 1.0


def test_multi_division_by_zero_is_grader_error() -> None:
    grader = build_grader(multi("fuzzy / exact"))
    assert grader.grade("a", {"answer": "a"}).score == 1.0
    with pytest.raises(GraderError, match="division by zero"):
        grader.grade("a", {"answer": "b"})


def test_multi_sub_grader_error_propagates() -> None:
    with pytest.raises(GraderError, match="item has no field 'answer'"):
        build_grader(multi("exact")).grade("a", {})


@pytest.mark.parametrize(
    ("formula", "message"),
    [
        ("__import__('os').system('true')", "unexpected character"),
        ("__import__(exact)", "unknown function '__import__'"),
        ("exact.__class__", "unexpected character '.'"),
        ("exact + other", "unknown names \\['other'\\]"),
        ("10 ** 10 ** 10 ** 10 +", "found end of formula"),
        ("exact" + " + exact" * 300, "String should have at most 1024 characters"),
        ("", "at least 1 character"),
    ],
)
def test_multi_refuses_bad_formulas(formula: str, message: str) -> None:
    with pytest.raises(SpecError, match=message) as info:
        parse_grader(multi(formula))
    assert info.value.param == "grader.calculate_output"


def test_multi_huge_exponent_is_bounded_at_runtime() -> None:
    grader = build_grader(multi("(fuzzy + 9) ** 9 ** 9 ** 9"))
    start = time.monotonic()
    with pytest.raises(GraderError, match="cannot evaluate"):
        grader.grade("a", {"answer": "a"})
    assert time.monotonic() - start < 1.0


def test_multi_structure_errors() -> None:
    nested = multi("inner")
    nested["graders"] = {"inner": multi("exact")}
    with pytest.raises(SpecError) as info:
        parse_grader(nested)
    assert info.value.param == "grader.graders.inner.type"
    clash = multi("min")
    clash["graders"] = {"min": clash["graders"]["exact"]}
    with pytest.raises(SpecError, match="clash with formula functions"):
        parse_grader(clash)
    bad_name = multi("exact")
    bad_name["graders"] = {"not-an-identifier": bad_name["graders"]["exact"]}
    with pytest.raises(SpecError) as info:
        parse_grader(bad_name)
    assert info.value.param == "grader.graders.not-an-identifier"


# --- math_verify -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "reference", "expected"),
    [
        ("42", "42.0", True),
        ("1/2", "0.5", True),
        (r"$\frac{1}{2}$", "0.5", True),
        (r"so the answer is $\boxed{42}$.", "42", True),
        ("x = 3", "3", True),
        ("0.3333", "1/3", False),  # rounding beyond 6 decimals is not equality
        ("43", "42", False),
        ("I don't know", "42", False),
        ("", "42", False),
    ],
)
def test_math_equal(answer: str, reference: str, expected: bool) -> None:
    assert math_equal(answer, reference) is expected


def test_math_verify_grader() -> None:
    spec = {"type": "math_verify", "name": "m", "input": OUT, "reference": "{{item.answer}}"}
    assert grade(spec, r"The result is $\boxed{\frac{3}{4}}$", {"answer": "0.75"}) == 1.0
    assert grade(spec, r"The result is $\boxed{\frac{3}{5}}$", {"answer": "0.75"}) == 0.0
    assert grade(spec, "12", {"answer": 12}) == 1.0  # numeric item fields render as text
    with pytest.raises(GraderError, match="no parseable math answer"):
        build_grader(spec).grade("42", {"answer": "not a number"})


@pytest.mark.parametrize("tower", [r"$10^{10^{10}}$", "10**10**10", r"$(10^{10})!$"])
def test_math_verify_refuses_huge_values_quickly(tower: str) -> None:
    # Without the guard sympy evaluates these exactly and never returns.
    start = time.monotonic()
    with pytest.raises(GraderError, match="too large"):
        math_equal(tower, "5")
    with pytest.raises(GraderError, match="too large"):
        math_equal("5", tower)
    assert time.monotonic() - start < 10.0


# --- regex_match and json_valid ----------------------------------------------------------


def test_regex_match() -> None:
    spec = {"type": "regex_match", "name": "r", "input": OUT, "pattern": r"answer:\s*(\d+)$"}
    assert grade(spec, "so the answer: 42") == 1.0
    assert grade(spec, "so the ANSWER: 42") == 0.0
    assert grade({**spec, "flags": "i"}, "so the ANSWER: 42") == 1.0
    assert grade(spec, "answer: 42 then more") == 0.0


@pytest.mark.parametrize(
    ("pattern", "message"),
    [("(unclosed", "invalid regular expression"), ("a" * 1025, "at most 1024 characters")],
)
def test_regex_pattern_checked_at_validation(pattern: str, message: str) -> None:
    with pytest.raises(SpecError, match=message) as info:
        parse_grader({"type": "regex_match", "input": OUT, "pattern": pattern})
    assert info.value.param == "grader.pattern"


@pytest.mark.parametrize(
    ("output", "keys", "expected"),
    [
        ('{"a": 1}', [], 1.0),
        ("[1, 2]", [], 1.0),
        ("  42 ", [], 1.0),
        ("{'a': 1}", [], 0.0),
        ('{"a": 1', [], 0.0),
        ("[" * 100_000, [], 0.0),
        ('{"a": 1, "b": null}', ["a", "b"], 1.0),
        ('{"a": 1}', ["a", "b"], 0.0),
        ('["a", "b"]', ["a"], 0.0),
    ],
)
def test_json_valid(output: str, keys: list[str], expected: float) -> None:
    assert grade({"type": "json_valid", "input": OUT, "required_keys": keys}, output) == expected


# --- validation helpers ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "param"),
    [
        ({"type": "string_check", "input": OUT, "reference": "x", "extra": 1}, "grader.extra"),
        ({"type": "string_check", "input": OUT, "reference": "x", "operation": "gt"}, "grader.operation"),
        ({"type": "string_check", "input": OUT}, "grader.reference"),
        ({"type": "python", "source": "print(1)"}, "grader.type"),
        ({"input": OUT}, "grader.type"),
        ({"type": "text_similarity", "input": OUT, "reference": "x", "evaluation_metric": "cosine"},
         "grader.evaluation_metric"),
        ({"type": "string_check", "name": "", "input": OUT, "reference": "x"}, "grader.name"),
        ({"type": "string_check", "input": "x" * 20_000, "reference": "x"}, "grader.input"),
        ("not an object", "grader"),
    ],
)  # fmt: skip
def test_parse_grader_error_params(data: Any, param: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_grader(data)
    assert info.value.param == param


def test_parse_grader_nested_param_and_idempotence() -> None:
    bad = multi("exact")
    bad["graders"]["fuzzy"]["evaluation_metric"] = "cosine"
    with pytest.raises(SpecError, match="cosine similarity needs an embedding model") as info:
        parse_grader(bad)
    assert info.value.param == "grader.graders.fuzzy.evaluation_metric"
    spec = parse_grader(multi("exact"))
    assert isinstance(spec, MultiGrader)
    assert parse_grader(spec) is spec


def test_template_fields() -> None:
    spec = parse_grader(multi("exact"))
    assert template_fields(spec) == {"answer"}
    other = {"type": "string_check", "input": "{{item.q.text}} {{sample.output_text}}"}
    assert template_fields(parse_grader({**other, "reference": "{{ item.gold.0 }}"})) == {
        "q.text",
        "gold.0",
    }


def test_check_grader_against_item() -> None:
    spec = parse_grader(multi("exact"))
    check_grader_against_item(spec, {"answer": "x", "messages": []})
    with pytest.raises(SpecError, match="no field 'answer'") as info:
        check_grader_against_item(spec, {"messages": []})
    assert info.value.param == "method.reinforcement.grader.graders.exact.reference"
    nested = parse_grader({"type": "string_check", "input": OUT, "reference": "{{item.a.b}}"})
    with pytest.raises(SpecError, match=r"no field 'a\.b'") as info:
        check_grader_against_item(nested, {"a": {}}, param_prefix="grader")
    assert info.value.param == "grader.reference"


@pytest.fixture
def fresh_pool() -> Iterator[None]:
    """Grader workers forked after the test's monkeypatches (and gone after it), so the
    patches reach the calls that run in them."""
    sandbox.shutdown()
    yield
    sandbox.shutdown()


def test_unexpected_exception_becomes_grader_error(
    monkeypatch: pytest.MonkeyPatch, fresh_pool: None
) -> None:
    def boom(*args: Any) -> float:
        raise RuntimeError("kaput")

    monkeypatch.setattr(grading, "similarity", boom)
    spec = {"type": "text_similarity", "name": "t", "input": OUT, "reference": "x"}
    with pytest.raises(GraderError, match="t: RuntimeError: kaput"):
        build_grader(spec).grade("x", {})


def test_job_spec_accepts_grader() -> None:
    body = {
        "model": "m",
        "training_file": "file-1",
        "method": {"type": "lco", "lco": {"grader": multi("exact")}},
    }
    spec = parse_job_spec(body)
    assert isinstance(spec.method.rl.grader, MultiGrader)
    assert spec.method.rl.grader.graders["exact"].type == "string_check"


@pytest.mark.parametrize(
    "module",
    [
        graders_module,
        grading,
        grader_specs,
        templates,
        similarity_module,
        math_answers,
        rg_scoring,
        sandbox,
    ],
)
def test_docstring_examples(module: Any) -> None:
    result = doctest.testmod(module)
    assert result.failed == 0


# --- reasoning_gym -----------------------------------------------------------------------


def rg_item(dataset: str, index: int = 0) -> dict[str, Any]:
    """An item as `lco tasks export rg:DATASET` writes it, from reasoning-gym directly."""
    import json

    import reasoning_gym

    entry = reasoning_gym.create_dataset(dataset, size=index + 1, seed=7)[index]
    fields = json.loads(json.dumps({"answer": entry["answer"], "metadata": entry["metadata"]}))
    return {"messages": [{"role": "user", "content": entry["question"]}], **fields}


def rg_spec(dataset: str = "basic_arithmetic") -> dict[str, Any]:
    return {"type": "reasoning_gym", "name": "rg", "dataset": dataset}


@pytest.mark.parametrize("dataset", ["basic_arithmetic", "letter_counting"])
def test_reasoning_gym_grader_scores_with_the_datasets_scorer(dataset: str) -> None:
    item = rg_item(dataset)
    answer = item["answer"]
    wrong = str(int(answer) + 1)  # both datasets answer with an integer
    assert answer not in wrong  # the default scorer gives partial credit for containment
    grader = build_grader(rg_spec(dataset))
    assert grader.grade(answer, item) == GradeResult(score=1.0, sub_scores={"rg": 1.0})
    assert grader.grade(f"  {answer}\n", item).score == 1.0  # the whole output, trimmed
    assert grader.grade(f"Thinking... <answer> {answer} </answer>", item).score == 1.0
    # With tags only the last tagged answer counts, not the text around it.
    assert grader.grade(f"{answer} <answer>{wrong}</answer>", item).score == 0.0
    assert grader.grade(wrong, item).score == 0.0
    assert grader.grade("", item).score == 0.0


def test_reasoning_gym_grader_in_multi_and_item_fields() -> None:
    spec = parse_grader(
        {
            "type": "multi",
            "graders": {
                "rg": rg_spec(),
                "tagged": {"type": "regex_match", "input": OUT, "pattern": "<answer>"},
            },
            "calculate_output": "0.9 * rg + 0.1 * tagged",
        }
    )
    item = rg_item("basic_arithmetic")
    result = build_grader(spec).grade(f"<answer>{item['answer']}</answer>", item)
    assert result.score == pytest.approx(1.0)
    assert result.sub_scores == {"rg": 1.0, "tagged": 1.0}
    assert build_grader(spec).grade(item["answer"], item).score == pytest.approx(0.9)
    assert template_fields(spec) == {"answer", "metadata"}


@pytest.mark.parametrize(
    ("data", "param", "message"),
    [
        (rg_spec("basic_arithmetc"), "grader.dataset", "did you mean basic_arithmetic"),
        (rg_spec("nope"), "grader.dataset", "`lco tasks list` shows all"),
        (rg_spec("composite"), "grader.dataset", "unknown reasoning-gym dataset"),
        ({"type": "reasoning_gym"}, "grader.dataset", "Field required"),
        ({**rg_spec(), "source": "x"}, "grader.source", "Extra inputs"),
        (
            {**rg_spec(), "config": {"min_term": 2}},
            "grader.config",
            "basic_arithmetic has no config field 'min_term'; did you mean 'min_terms'",
        ),
        ({**rg_spec(), "config": {"seed": 1}}, "grader.config", "no config field 'seed'"),
        (
            {**rg_spec(), "config": {"min_terms": "2"}},
            "grader.config",
            "config field 'min_terms' must be an integer, got '2'",
        ),
        (
            {**rg_spec(), "config": {"format_style": "plain"}},
            "grader.config",
            "must be one of 'simple', 'natural'",
        ),
        (
            {**rg_spec(), "config": {"min_terms": 3, "max_terms": 2}},
            "grader.config",
            "reasoning-gym refuses this basic_arithmetic config: max_terms must be >= min_terms",
        ),
        ({**rg_spec(), "config": [2]}, "grader.config", "valid dictionary"),
        (
            {"type": "multi", "graders": {"r": rg_spec("nope")}, "calculate_output": "r"},
            "grader.graders.r.dataset",
            "unknown reasoning-gym dataset 'nope'",
        ),
    ],
)
def test_reasoning_gym_grader_validation(data: dict[str, Any], param: str, message: str) -> None:
    with pytest.raises(SpecError, match=message) as info:
        parse_grader(data)
    assert info.value.param == param


def test_reasoning_gym_grader_scores_with_its_config() -> None:
    # decimal_arithmetic's scorer accepts an error of one unit in the last configured
    # decimal place: the grader must build it from the config the items were made with.
    config = {"min_num_decimal_places": 1, "max_num_decimal_places": 1}
    item = {"messages": [{"role": "user", "content": "?"}], "answer": "1.5", "metadata": {}}
    with_config = build_grader({**rg_spec("decimal_arithmetic"), "config": config})
    assert with_config.grade("1.55", item).score == 1.0
    assert build_grader(rg_spec("decimal_arithmetic")).grade("1.55", item).score == 0.0
    assert parse_grader({**rg_spec(), "config": {}}).config == {}  # the defaults


def test_reasoning_gym_last_number_extract_scores_a_chatty_right_answer() -> None:
    item = rg_item("basic_arithmetic")
    answer, expression = item["answer"], item["metadata"]["expression"]
    chatty = f"To calculate {expression}, we get {answer}."
    last_number = build_grader({**rg_spec(), "extract": "last_number"})
    assert last_number.grade(chatty, item).score == 1.0
    assert build_grader(rg_spec()).grade(chatty, item).score < 0.5  # partial credit only
    # Tags still win, and an output with no number is scored whole.
    assert last_number.grade(f"{answer} <answer>{int(answer) + 1}</answer>", item).score == 0
    assert last_number.grade(f"{answer} + 1 = {int(answer) + 1}", item).score == 0
    assert last_number.grade("no idea", item).score == 0
    with pytest.raises(SpecError, match="'answer_tag' or 'last_number'") as info:
        parse_grader({**rg_spec(), "extract": "first_number"})
    assert info.value.param == "grader.extract"


def test_reasoning_gym_unknown_dataset_in_a_job_spec_names_the_field() -> None:
    body = {
        "model": "m",
        "training_file": "file-1",
        "method": {"type": "lco", "lco": {"grader": rg_spec("nope")}},
    }
    with pytest.raises(SpecError, match="unknown reasoning-gym dataset") as info:
        parse_job_spec(body)
    assert info.value.param == "method.lco.grader.dataset"


def test_reasoning_gym_grader_checked_against_items() -> None:
    spec = parse_grader(rg_spec())
    item = rg_item("basic_arithmetic")
    check_grader_against_item(spec, item)
    without = {k: v for k, v in item.items() if k != "metadata"}
    with pytest.raises(SpecError, match="no field 'metadata'") as info:
        check_grader_against_item(spec, without)
    assert info.value.param == "method.reinforcement.grader.dataset"
    with pytest.raises(GraderError, match="no field 'metadata'"):
        build_grader(spec).grade("1", without)
    # Items of another dataset would be scored, wrongly, by this one's scorer: refused.
    with pytest.raises(SpecError, match="made by reasoning-gym's 'letter_counting'") as info:
        check_grader_against_item(spec, rg_item("letter_counting"), param_prefix="grader")
    assert info.value.param == "grader.dataset"


def test_reasoning_gym_scores_are_clipped_and_nan_is_an_error(
    monkeypatch: pytest.MonkeyPatch, fresh_pool: None
) -> None:
    scores = iter([1.5, -0.5, math.nan])

    class Scorer:
        def score_answer(self, answer: str, entry: dict[str, Any]) -> float:
            return next(scores)

    grader = build_grader(rg_spec())
    monkeypatch.setattr(rg_scoring, "_rg_dataset", lambda name, config=None: Scorer())
    item = rg_item("basic_arithmetic")
    # Each call may land on another worker, each with its own copy of `scores`: one worker.
    monkeypatch.setenv("LCO_GRADER_WORKERS", "1")
    assert grader.grade("x", item).score == 1.0
    assert grader.grade("x", item).score == 0.0
    with pytest.raises(GraderError, match="returned nan"):
        grader.grade("x", item)


def test_multi_takes_openai_formula_syntax() -> None:
    """Issue 16's `(a + b ^ 2) / 2`: `^` is power in OpenAI's calculate_output."""
    spec = {
        "type": "multi",
        "graders": {
            "a": {"type": "string_check", "input": OUT, "reference": "{{item.answer}}"},
            "b": {"type": "text_similarity", "input": OUT, "reference": "{{item.answer}}"},
        },
        "calculate_output": "(a + b ^ 2) / 2",
    }
    result = build_grader(spec).grade("kitten", {"answer": "sitting"})
    assert result.score == pytest.approx((0 + (8 / 13) ** 2) / 2)
    functions = (
        "min(a, b) + max(a, b) + abs(a) + floor(b) + ceil(b) + exp(a) + sqrt(b) + log(1 + b)"
    )
    assert parse_grader({**spec, "calculate_output": functions}).calculate_output == functions
