"""Grader templates in OpenAI's syntax (issue 16, item 2): nested fields, [n] indexes,
quoted keys, sample.output_text and sample.output_json paths render the right values,
and anything else is a 400 naming the field at job creation, never constant text."""

from __future__ import annotations

from typing import Any

import pytest

from lco_spec.errors import GraderError, SpecError
from lco_spec.graders import build_grader, check_grader_against_item, parse_grader
from lco_spec.job import parse_job_spec
from lco_spec.templates import render_template

OUT = "{{sample.output_text}}"


def exact(reference: str, input: str = OUT) -> dict[str, Any]:
    return {"type": "string_check", "name": "exact", "input": input, "reference": reference}


def test_list_index_reference_is_the_item_value_not_literal_text() -> None:
    """The issue's reproducer: `{{item.answers[0]}}` was kept as literal text."""
    grader = build_grader(exact("{{item.answers[0]}}"))
    item = {"answers": ["42", "forty-two"]}
    assert grader.grade("42", item).score == 1.0
    assert grader.grade("{{item.answers[0]}}", item).score == 0.0


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{item.a.b}}", "deep"),
        ("{{ item.answers[1] }}", "forty-two"),
        ("{{item.answers.1}}", "forty-two"),
        ("{{item.rows[1][0]}}", "c"),
        ("{{item.rows[0]}}", '["a", "b"]'),
        ("{{item.list[0].name}}", "first"),
        ('{{item["odd key"]}}', "odd"),
        ("{{item['odd key']}}", "odd"),
        ("{{item.my-field}}", "dash"),
        ("{{item.n}} and {{item.flag}}", "3 and true"),
        (r"\frac{{1}}{2} = {{item.n}}", r"\frac{{1}}{2} = 3"),
        ("{{sample.output_text}}!", '{"answer": {"value": 7}, "xs": [1, 2]}!'),
        ("{{sample.output_json.answer.value}}", "7"),
        ("{{sample.output_json.xs[1]}}", "2"),
        ("{{sample.output_json.answer}}", '{"value": 7}'),
    ],
)
def test_openai_template_syntax_renders(template: str, expected: str) -> None:
    item = {
        "a": {"b": "deep"},
        "answers": ["42", "forty-two"],
        "rows": [["a", "b"], ["c"]],
        "list": [{"name": "first"}],
        "odd key": "odd",
        "my-field": "dash",
        "n": 3,
        "flag": True,
    }
    sample = '{"answer": {"value": 7}, "xs": [1, 2]}'
    assert render_template(template, sample, item) == expected


def test_output_json_field_grades_and_a_non_json_sample_scores_zero() -> None:
    grader = build_grader(exact("{{item.answer}}", input="{{sample.output_json.answer}}"))
    assert grader.grade('{"answer": "Paris"}', {"answer": "Paris"}).score == 1.0
    # Not JSON, or JSON without the field: an error that scores 0 (counted), not "".
    for sample in ("Paris", '{"other": 1}', "[1]"):
        outcome = grader.grade_many([(sample, {"answer": "Paris"})])[0]
        assert isinstance(outcome, GraderError), sample
    # `ne` must not reward a sample for lacking the field it compares.
    ne = build_grader({**exact("Lyon", input="{{sample.output_json.city}}"), "operation": "ne"})
    assert isinstance(ne.grade_many([("no json", {})])[0], GraderError)


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{{item.answers[0}}", "cannot read template reference"),
        ("{{item.answers[-1]}}", "cannot read template reference"),
        ("{{ item.answer | upper }}", "cannot read template reference"),
        ("{{item.a b}}", "cannot read template reference"),
        ("{{answers[0]}}", "unknown template reference"),
        ("{{sample.choices[0]}}", "unknown sample field"),
        ("{{sample}}", "names no field"),
    ],
)
def test_unsupported_syntax_is_a_400_naming_the_field(template: str, message: str) -> None:
    with pytest.raises(SpecError, match=message) as info:
        parse_grader(exact(template))
    assert info.value.param == "grader.reference"
    multi = {
        "type": "multi",
        "graders": {"a": exact("x", input=template)},
        "calculate_output": "a",
    }
    with pytest.raises(SpecError, match=message) as info:
        parse_grader(multi)
    assert info.value.param == "grader.graders.a.input"


def test_job_creation_refuses_a_bad_template_with_its_param() -> None:
    body = {
        "model": "m",
        "training_file": "file-1",
        "method": {
            "type": "reinforcement",
            "reinforcement": {"grader": exact("{{item.answers[first]}}")},
        },
    }
    with pytest.raises(SpecError, match="cannot read template reference") as info:
        parse_job_spec(body)
    assert info.value.param == "method.reinforcement.grader.reference"


def test_item_check_names_the_missing_indexed_field() -> None:
    spec = parse_grader(exact("{{item.answers[3]}}"))
    check_grader_against_item(spec, {"answers": [1, 2, 3, 4]}, param_prefix="grader")
    with pytest.raises(SpecError, match=r"no field 'answers\[3\]'") as info:
        check_grader_against_item(spec, {"answers": [1]}, param_prefix="grader")
    assert info.value.param == "grader.reference"
