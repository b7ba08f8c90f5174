"""Grader specs: OpenAI's grader JSON plus our built-ins, validated with pydantic.

`parse_grader` validates grader JSON (a SpecError names the field, as `grader.x`);
`check_grader_against_item` checks that a dataset item has every field the grader reads,
and `template_fields` lists them. Running a grader is `lco_spec.grading`'s part.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from lco_spec.errors import SpecError, pydantic_error_to_spec_error
from lco_spec.expr import FUNCTIONS, ExprError, parse_expression
from lco_spec.rg_scoring import RG_ITEM_FIELDS, RgExtract, check_rg_dataset, rg_source
from lco_spec.similarity import UNSUPPORTED_METRICS
from lco_spec.templates import Ref, Step, check_template, lookup, parse_template, path_text

Name = Annotated[str, Field(min_length=1, max_length=128)]
Template = Annotated[str, Field(max_length=16_384), AfterValidator(check_template)]
# Sub-grader names are formula variables, so they must be identifiers and not functions.
SubName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")]
# OpenAI's list; `cosine` is refused by the grader's validator, with the reason.
Metric = Literal[
    "fuzzy_match",
    "bleu",
    "gleu",
    "meteor",
    "cosine",
    "rouge_1",
    "rouge_2",
    "rouge_3",
    "rouge_4",
    "rouge_5",
    "rouge_l",
]


# Our extension to OpenAI's grader JSON: the hard limit on one call of a grader, in seconds.
DEFAULT_TIMEOUT_S = 2.0
MAX_TIMEOUT_S = 60.0
TimeoutS = Annotated[float, Field(gt=0, le=MAX_TIMEOUT_S)]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _SimpleSpec(_Spec):
    timeout_s: TimeoutS = DEFAULT_TIMEOUT_S


class StringCheckGrader(_SimpleSpec):
    """1.0 if `input` eq/ne `reference`, or contains it (like; ilike ignores case)."""

    type: Literal["string_check"]
    name: Name = "string_check"
    input: Template
    reference: Template
    operation: Literal["eq", "ne", "like", "ilike"] = "eq"


class TextSimilarityGrader(_SimpleSpec):
    """A similarity in [0, 1] between `input` and `reference` (see `similarity`)."""

    type: Literal["text_similarity"]
    name: Name = "text_similarity"
    input: Template
    reference: Template
    evaluation_metric: Metric = "fuzzy_match"

    @field_validator("evaluation_metric")
    @classmethod
    def _supported(cls, value: str) -> str:
        if value in UNSUPPORTED_METRICS:
            raise ValueError(f"evaluation_metric {value!r}: {UNSUPPORTED_METRICS[value]}")
        return value


class MathVerifyGrader(_SimpleSpec):
    """1.0 if the math answer in `input` equals `reference` (`math_verify` package)."""

    type: Literal["math_verify"]
    name: Name = "math_verify"
    input: Template
    reference: Template


class RegexMatchGrader(_SimpleSpec):
    """1.0 if `pattern` is found anywhere in `input` (a search; anchor with ^...$). Runs on
    RE2 (linear time, no catastrophic backtracking); a pattern RE2 cannot run (back
    references, lookaround) runs on Python's `re` in a worker process under `timeout_s`."""

    type: Literal["regex_match"]
    name: Name = "regex_match"
    input: Template
    pattern: Annotated[str, Field(min_length=1, max_length=1024)]
    flags: Literal["", "i"] = ""

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"invalid regular expression: {exc}") from None
        return value


class JsonValidGrader(_SimpleSpec):
    """1.0 if `input` is JSON (and, with `required_keys`, an object holding all of them)."""

    type: Literal["json_valid"]
    name: Name = "json_valid"
    input: Template
    required_keys: Annotated[
        tuple[Annotated[str, Field(max_length=256)], ...], Field(max_length=64)
    ] = ()


class ReasoningGymGrader(_SimpleSpec):
    """reasoning-gym's own scorer for `dataset` (see `reasoning_gym_score`), built from
    `config` (fields of the dataset's config; some scorers read it, as decimal_arithmetic's
    tolerance): the config the items were exported with. `extract` says which part of an
    output without <answer> tags is the answer (see `rg_answer`)."""

    type: Literal["reasoning_gym"]
    name: Name = "reasoning_gym"
    dataset: Annotated[str, Field(min_length=1, max_length=128)]
    config: Annotated[dict[str, Any], Field(max_length=64)] | None = None
    extract: RgExtract = "answer_tag"

    @field_validator("dataset")
    @classmethod
    def _known(cls, value: str) -> str:
        # Builds (and caches) the scorer now, so an unknown name is a 400 at submission
        # rather than a job whose every sample scores 0.
        return check_rg_dataset(value, None)

    @field_validator("config")
    @classmethod
    def _fits(cls, value: dict[str, Any] | None, info: ValidationInfo) -> dict[str, Any] | None:
        if value is not None and "dataset" in info.data:  # else the dataset's error is shown
            check_rg_dataset(info.data["dataset"], value)
        return value


_Simple = (
    StringCheckGrader
    | TextSimilarityGrader
    | MathVerifyGrader
    | RegexMatchGrader
    | JsonValidGrader
    | ReasoningGymGrader
)
SimpleGraderSpec = Annotated[_Simple, Field(discriminator="type")]


class MultiGrader(_Spec):
    """Sub-graders combined by `calculate_output`, a formula over their names (lco_spec.expr).
    `timeout_s`, when given, is the limit of each sub-grader that sets none of its own."""

    type: Literal["multi"]
    name: Name = "multi"
    timeout_s: TimeoutS | None = None
    graders: Annotated[dict[SubName, SimpleGraderSpec], Field(min_length=1, max_length=16)]
    calculate_output: Annotated[str, Field(min_length=1, max_length=1024)]

    @field_validator("graders")
    @classmethod
    def _names_not_functions(cls, value: dict[str, Any]) -> dict[str, Any]:
        clash = sorted(set(value) & set(FUNCTIONS))
        if clash:
            raise ValueError(f"sub-grader names {clash} clash with formula functions")
        return value

    @field_validator("calculate_output")
    @classmethod
    def _formula(cls, value: str, info: ValidationInfo) -> str:
        try:
            expression = parse_expression(value)
        except ExprError as exc:
            raise ValueError(str(exc)) from None
        # `graders` is absent from info.data when it failed validation itself.
        names = sorted(info.data.get("graders") or ())
        unknown = sorted(expression.variables - set(names)) if names else []
        if unknown:
            raise ValueError(f"unknown names {unknown}; the sub-graders are {names}")
        return value


AnyGraderSpec = _Simple | MultiGrader
GraderSpec = Annotated[AnyGraderSpec, Field(discriminator="type")]
GRADER_TYPES = frozenset(
    get_args(m.model_fields["type"].annotation)[0] for m in get_args(AnyGraderSpec)
)
_ADAPTER: TypeAdapter[AnyGraderSpec] = TypeAdapter(GraderSpec)


def parse_grader(data: Any, param: str = "grader") -> AnyGraderSpec:
    """Validate grader JSON, or raise SpecError whose `param` names the field (`grader.x`)."""
    if isinstance(data, AnyGraderSpec):
        return data
    try:
        return _ADAPTER.validate_python(data)
    except ValidationError as exc:
        raise pydantic_error_to_spec_error(exc, prefix=param, tagged_root=True) from None


def _item_refs(spec: AnyGraderSpec, where: str = "") -> Iterator[tuple[str, tuple[Step, ...], str]]:
    """(param path relative to the grader, item field path, how it is read) for every item
    field `spec` reads: its templates' `{{item.x}}`, and a reasoning_gym grader's fields."""
    if isinstance(spec, MultiGrader):
        for key, sub in spec.graders.items():
            yield from _item_refs(sub, f"{where}graders.{key}.")
        return
    if isinstance(spec, ReasoningGymGrader):
        for field in RG_ITEM_FIELDS:
            yield f"{where}dataset", (field,), "read by the reasoning_gym grader"
        return
    for name in ("input", "reference"):
        text = getattr(spec, name, None)
        if isinstance(text, str):
            for part in parse_template(text):
                if isinstance(part, Ref) and part.namespace == "item":
                    yield f"{where}{name}", part.path, f"used as {{{{item.{part.text()}}}}}"


def template_fields(spec: AnyGraderSpec) -> set[str]:
    """The item fields a grader reads, as paths (`gold.answer`, `answers[0]`).

    >>> template_fields(parse_grader({"type": "string_check", "input": "{{sample.output_text}}",
    ...                               "reference": "{{ item.gold.answer }}"}))
    {'gold.answer'}
    """
    return {path_text(path) for _, path, _ in _item_refs(spec)}


def check_grader_against_item(
    spec: AnyGraderSpec, item: Mapping[str, Any], param_prefix: str = "method.reinforcement.grader"
) -> None:
    """Raise SpecError if `item` lacks a field the grader reads (param = the template's field,
    or a reasoning_gym grader's `dataset`), or was made by another reasoning-gym dataset."""
    for where, path, used in _item_refs(spec):
        try:
            lookup(item, path)
        except KeyError:
            field = path_text(path)
            raise SpecError(
                f"the dataset item has no field {field!r} ({used})",
                param=f"{param_prefix}.{where}",
            ) from None
    source = rg_source(item)
    for where, sub in _simple_graders(spec):
        # Another dataset's scorer would grade these items without complaint, and wrongly.
        if isinstance(sub, ReasoningGymGrader) and source not in (None, sub.dataset):
            raise SpecError(
                f"the dataset item was made by reasoning-gym's {source!r}, not {sub.dataset!r}",
                param=f"{param_prefix}.{where}dataset",
            )


def _simple_graders(spec: AnyGraderSpec) -> Iterator[tuple[str, AnyGraderSpec]]:
    """(param path prefix relative to the grader, spec) for `spec` or each multi sub-grader."""
    if isinstance(spec, MultiGrader):
        for key, sub in spec.graders.items():
            yield f"graders.{key}.", sub
    else:
        yield "", spec
