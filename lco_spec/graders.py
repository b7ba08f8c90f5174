"""Graders, one import for everything about them (the names importers have always used).

Where each part lives:

- `lco_spec.grader_specs`: the grader JSON (OpenAI's `string_check`, `text_similarity`,
  `multi`, and our `math_verify`, `regex_match`, `json_valid`, `reasoning_gym`),
  `parse_grader`, `check_grader_against_item`, `template_fields`;
- `lco_spec.templates`: `{{item.<path>}}` / `{{sample.<field>}}` templates;
- `lco_spec.grading`: `build_grader`, `Grader.grade` / `grade_many`, `grade_stats`;
- `lco_spec.sandbox`: the worker processes that give every slow call a hard time limit;
- `lco_spec.similarity`, `lco_spec.math_answers`, `lco_spec.rg_scoring`: the scorers.

    >>> g = build_grader({"type": "string_check", "name": "exact", "operation": "eq",
    ...                   "input": "{{ sample.output_text }}", "reference": "{{item.answer}}"})
    >>> g.grade("42", {"answer": "42"})
    GradeResult(score=1.0, sub_scores={'exact': 1.0})
"""

from lco_spec.errors import GraderError, GraderTimeout
from lco_spec.grader_specs import (
    DEFAULT_TIMEOUT_S,
    GRADER_TYPES,
    MAX_TIMEOUT_S,
    AnyGraderSpec,
    GraderSpec,
    JsonValidGrader,
    MathVerifyGrader,
    MultiGrader,
    ReasoningGymGrader,
    RegexMatchGrader,
    SimpleGraderSpec,
    StringCheckGrader,
    TextSimilarityGrader,
    check_grader_against_item,
    parse_grader,
    template_fields,
)
from lco_spec.grading import Grader, GradeResult, build_grader, grade_stats
from lco_spec.math_answers import math_equal
from lco_spec.rg_scoring import (
    RG_ITEM_FIELDS,
    RgExtract,
    _rg_dataset,
    create_rg_dataset,
    reasoning_gym_datasets,
    reasoning_gym_score,
    rg_answer,
    rg_config_key,
    unknown_rg_dataset,
)
from lco_spec.similarity import similarity
from lco_spec.templates import render_template

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "GRADER_TYPES",
    "MAX_TIMEOUT_S",
    "RG_ITEM_FIELDS",
    "AnyGraderSpec",
    "GradeResult",
    "Grader",
    "GraderError",
    "GraderSpec",
    "GraderTimeout",
    "JsonValidGrader",
    "MathVerifyGrader",
    "MultiGrader",
    "ReasoningGymGrader",
    "RegexMatchGrader",
    "RgExtract",
    "SimpleGraderSpec",
    "StringCheckGrader",
    "TextSimilarityGrader",
    "_rg_dataset",
    "build_grader",
    "check_grader_against_item",
    "create_rg_dataset",
    "grade_stats",
    "math_equal",
    "parse_grader",
    "reasoning_gym_datasets",
    "reasoning_gym_score",
    "render_template",
    "rg_answer",
    "rg_config_key",
    "similarity",
    "template_fields",
    "unknown_rg_dataset",
]
