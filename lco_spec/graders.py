"""Graders in OpenAI's grader JSON, plus our built-ins for verifiable tasks. Pure Python.

The API validates a grader with `parse_grader` (and `check_grader_against_item` against
the first training item) and dry-runs it; the training core turns each completion into
a reward with `build_grader(spec).grade(output_text, item)`. A failure on one sample
raises `GraderError`, which the trainer counts and scores as 0.

Types: `string_check`, `text_similarity`, `multi` (OpenAI's), and `math_verify`,
`regex_match`, `json_valid`, `reasoning_gym` (ours). Templates read the dataset item as
`{{item.field}}` (nested: `{{item.a.b}}`, list index: `{{item.a.0}}`) and the completion as
`{{sample.output_text}}`. A `reasoning_gym` grader has no templates: it reads the item's
`answer` and `metadata`, as `lco tasks export rg:DATASET` writes them, and carries the
dataset's `config` and how to `extract` the answer from an output.

    >>> g = build_grader({"type": "string_check", "name": "exact", "operation": "eq",
    ...                   "input": "{{ sample.output_text }}", "reference": "{{item.answer}}"})
    >>> g.grade("42", {"answer": "42"})
    GradeResult(score=1.0, sub_scores={'exact': 1.0})
"""

from __future__ import annotations

import difflib
import functools
import json
import math
import re
import types
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, fields
from typing import Annotated, Any, Literal, Union, get_args, get_origin

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
from rapidfuzz import fuzz
from rapidfuzz.distance import LCSseq

from lco_spec import sandbox
from lco_spec.errors import GraderError, GraderTimeout, SpecError
from lco_spec.expr import FUNCTIONS, ExprError, parse_expression

# --- templates ---------------------------------------------------------------------------

# Only identifier-like `{{ ... }}` are references, so LaTeX such as `\frac{{a}}{b}` in a
# reference stays literal text; an identifier-like one that is not item./sample. is a typo.
_REF = re.compile(r"\{\{\s*([A-Za-z_][\w.\-]*)\s*\}\}")
SAMPLE_FIELDS = frozenset({"output_text"})


def _parse_template(text: str) -> list[str | tuple[str, ...]]:
    """Split a template into literal strings and reference paths like ("item", "a", "b")."""
    parts: list[str | tuple[str, ...]] = []
    pos = 0
    for m in _REF.finditer(text):
        path = tuple(m.group(1).split("."))
        if path[0] not in ("item", "sample") or len(path) < 2 or "" in path:
            raise ValueError(
                f"unknown template reference {m.group(0)!r}: "
                "use {{item.<field>}} or {{sample.output_text}}"
            )
        if path[0] == "sample" and ".".join(path[1:]) not in SAMPLE_FIELDS:
            raise ValueError(f"unknown sample field in {m.group(0)!r}: only sample.output_text")
        parts.extend([text[pos : m.start()], path])
        pos = m.end()
    parts.append(text[pos:])
    return [p for p in parts if p != ""]


def _check_template(text: str) -> str:
    _parse_template(text)
    return text


def _lookup(item: Any, path: tuple[str, ...]) -> Any:
    """Follow a dotted path through dicts (keys) and lists (integer indices); KeyError if absent."""
    value = item
    for key in path:
        if isinstance(value, Mapping) and key in value:
            value = value[key]
        elif isinstance(value, list) and key.isdecimal() and int(key) < len(value):
            value = value[int(key)]
        else:
            raise KeyError(".".join(path))
    return value


def _render(parts: list[str | tuple[str, ...]], output_text: str, item: Mapping[str, Any]) -> str:
    out = []
    for part in parts:
        if isinstance(part, str):
            out.append(part)
        elif part[0] == "sample":
            out.append(output_text)
        else:
            try:
                value = _lookup(item, part[1:])
            except KeyError:
                raise GraderError(f"item has no field {'.'.join(part[1:])!r}") from None
            out.append(value if isinstance(value, str) else json.dumps(value, ensure_ascii=False))
    return "".join(out)


def render_template(text: str, output_text: str, item: Mapping[str, Any]) -> str:
    """Substitute references; non-string item values are rendered as JSON.

    >>> render_template("{{item.q.n}}: {{sample.output_text}}", "yes", {"q": {"n": 3}})
    '3: yes'
    """
    return _render(_parse_template(text), output_text, item)


# --- specs -------------------------------------------------------------------------------

Name = Annotated[str, Field(min_length=1, max_length=128)]
Template = Annotated[str, Field(max_length=16_384), AfterValidator(_check_template)]
# Sub-grader names are formula variables, so they must be identifiers and not functions.
SubName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")]
Metric = Literal[
    "fuzzy_match", "bleu", "gleu", "rouge_1", "rouge_2", "rouge_3", "rouge_4", "rouge_5", "rouge_l"
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


RgExtract = Literal["answer_tag", "last_number"]


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
        return _checked_rg_dataset(value, None)

    @field_validator("config")
    @classmethod
    def _fits(cls, value: dict[str, Any] | None, info: ValidationInfo) -> dict[str, Any] | None:
        if value is not None and "dataset" in info.data:  # else the dataset's error is shown
            _checked_rg_dataset(info.data["dataset"], value)
        return value


def _checked_rg_dataset(name: str, config: Mapping[str, Any] | None) -> str:
    try:
        _rg_dataset(name, rg_config_key(config))
    except ValueError:
        raise
    except Exception as exc:  # pydantic would let anything else out as a 500
        raise ValueError(f"reasoning-gym cannot build {name!r}: {exc}") from None
    return name


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
        first = exc.errors()[0]
        loc = first["loc"]
        # A discriminated union inserts the chosen tag into the location: noise to a user.
        parts = [param] + [
            str(p)
            for i, p in enumerate(loc)
            if p != "[key]"
            and not (p in GRADER_TYPES and (i == 0 or (i >= 2 and loc[i - 2] == "graders")))
        ]
        if first["type"] in ("union_tag_invalid", "union_tag_not_found"):
            parts.append("type")
        raise SpecError(first["msg"].removeprefix("Value error, "), param=".".join(parts)) from None


def _item_refs(spec: AnyGraderSpec, where: str = "") -> Iterator[tuple[str, tuple[str, ...], str]]:
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
            for part in _parse_template(text):
                if isinstance(part, tuple) and part[0] == "item":
                    used = f"used as {{{{item.{'.'.join(part[1:])}}}}}"
                    yield f"{where}{name}", part[1:], used


def template_fields(spec: AnyGraderSpec) -> set[str]:
    """The dotted item fields a grader reads.

    >>> template_fields(parse_grader({"type": "string_check", "input": "{{sample.output_text}}",
    ...                               "reference": "{{ item.gold.answer }}"}))
    {'gold.answer'}
    """
    return {".".join(path) for _, path, _ in _item_refs(spec)}


def check_grader_against_item(
    spec: AnyGraderSpec, item: Mapping[str, Any], param_prefix: str = "method.reinforcement.grader"
) -> None:
    """Raise SpecError if `item` lacks a field the grader reads (param = the template's field,
    or a reasoning_gym grader's `dataset`), or was made by another reasoning-gym dataset."""
    for where, path, used in _item_refs(spec):
        try:
            _lookup(item, path)
        except KeyError:
            field = ".".join(path)
            raise SpecError(
                f"the dataset item has no field {field!r} ({used})",
                param=f"{param_prefix}.{where}",
            ) from None
    source = _rg_source(item)
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


# --- text similarity ---------------------------------------------------------------------

_WORD = re.compile(r"\w+|[^\w\s]")


def _tokens(text: str) -> list[str]:
    # n-gram metrics compare lowercased word and punctuation tokens.
    return _WORD.findall(text.lower())


def _ngrams(tokens: list[str], n: int) -> Counter[tuple[str, ...]]:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def _bleu(hyp: list[str], ref: list[str]) -> float:
    # Sentence BLEU up to 4-grams, never above the hypothesis length (short answers would
    # otherwise always score 0), with add-one smoothing for n >= 2 (Lin & Och, 2004).
    order = min(4, len(hyp))
    log_p = 0.0
    for n in range(1, order + 1):
        h, r = _ngrams(hyp, n), _ngrams(ref, n)
        match, total = sum((h & r).values()), sum(h.values())
        if n == 1 and match == 0:
            return 0.0
        log_p += math.log((match + (n > 1)) / (total + (n > 1))) / order
    brevity = min(0.0, 1.0 - len(ref) / len(hyp))
    return math.exp(log_p + brevity)


def _gleu(hyp: list[str], ref: list[str]) -> float:
    # Google-BLEU (Wu et al., 2016): min(precision, recall) over all 1- to 4-grams.
    match = total_h = total_r = 0
    for n in range(1, 5):
        h, r = _ngrams(hyp, n), _ngrams(ref, n)
        match += sum((h & r).values())
        total_h, total_r = total_h + sum(h.values()), total_r + sum(r.values())
    return match / max(total_h, total_r)


def _f1(overlap: float, n_hyp: int, n_ref: int) -> float:
    if overlap == 0:
        return 0.0
    precision, recall = overlap / n_hyp, overlap / n_ref
    return 2 * precision * recall / (precision + recall)


def _rouge_n(n: int) -> Callable[[list[str], list[str]], float]:
    def rouge(hyp: list[str], ref: list[str]) -> float:
        h, r = _ngrams(hyp, n), _ngrams(ref, n)
        if not h or not r:  # shorter than n tokens: only an exact match counts
            return float(hyp == ref)
        return _f1(sum((h & r).values()), sum(h.values()), sum(r.values()))

    return rouge


def _rouge_l(hyp: list[str], ref: list[str]) -> float:
    return _f1(LCSseq.similarity(hyp, ref), len(hyp), len(ref))


_TOKEN_METRICS: dict[str, Callable[[list[str], list[str]], float]] = {
    "bleu": _bleu,
    "gleu": _gleu,
    "rouge_l": _rouge_l,
    **{f"rouge_{n}": _rouge_n(n) for n in range(1, 6)},
}


def similarity(metric: str, hypothesis: str, reference: str) -> float:
    """Score in [0, 1]. fuzzy_match is rapidfuzz's normalised Indel ratio on the raw text;
    the n-gram metrics work on lowercased tokens.

    >>> round(similarity("fuzzy_match", "kitten", "sitting"), 4)
    0.6154
    >>> similarity("rouge_1", "the cat sat", "The cat sat!")
    0.8571428571428571
    >>> similarity("bleu", "a b c d", "a b c d")
    1.0
    """
    if metric == "fuzzy_match":
        return fuzz.ratio(hypothesis, reference) / 100.0
    hyp, ref = _tokens(hypothesis), _tokens(reference)
    if not hyp or not ref:
        return float(hyp == ref)
    return _TOKEN_METRICS[metric](hyp, ref)


# --- math ---------------------------------------------------------------------------------

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


# --- reasoning-gym --------------------------------------------------------------------------

# The fields of a reasoning-gym entry that an exported item carries beside its prompt.
RG_ITEM_FIELDS = ("answer", "metadata")
# Datasets that cannot be built from their default config (composite mixes others by config).
_RG_NEEDS_CONFIG = frozenset({"composite"})


def reasoning_gym_datasets() -> list[str]:
    """The reasoning-gym dataset names usable here, sorted. Imports reasoning_gym (about a
    second: numpy and sympy, never torch)."""
    try:
        from reasoning_gym.factory import DATASETS
    except ImportError:
        raise ValueError("reasoning_gym is not installed (pip install reasoning-gym)") from None
    return sorted(set(DATASETS) - _RG_NEEDS_CONFIG)


def unknown_rg_dataset(name: str) -> str:
    """The message for a dataset name reasoning-gym does not have: close names and where
    to see them all."""
    names = reasoning_gym_datasets()
    close = difflib.get_close_matches(name, names, n=3)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    return (
        f"unknown reasoning-gym dataset {name!r}; {hint}`lco tasks list` shows all "
        f"{len(names)} (e.g. {', '.join(names[:4])}, ...)"
    )


def create_rg_dataset(
    name: str, config: Mapping[str, Any] | None = None, *, size: int, seed: int
) -> Any:
    """reasoning-gym's dataset `name` of `size` entries from `seed`, with `config` (fields
    of its config dataclass, JSON values; the rest keep their defaults).

    Raises ValueError, one line, for an unknown dataset, an unknown field, `seed` or `size`
    in `config` (the caller's to set), a value of the wrong JSON type, or one the dataset's
    own validation refuses.
    """
    if name not in reasoning_gym_datasets():  # also says so if it is not installed
        raise ValueError(unknown_rg_dataset(name))
    from reasoning_gym.factory import DATASETS

    dataset_cls, config_cls = DATASETS[name]
    by_name = {f.name: f for f in fields(config_cls) if f.init}
    settable = sorted(set(by_name) - {"seed", "size"})
    config = dict(config or {})
    for key, value in config.items():
        if key not in settable:
            close = difflib.get_close_matches(key, settable, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ValueError(
                f"{name} has no config field {key!r}; {hint}its fields: {', '.join(settable)}"
            )
        wanted = _rg_value_error(by_name[key].type, value)
        if wanted:
            raise ValueError(f"{name} config field {key!r} must be {wanted}, got {value!r}")
    try:
        built = config_cls(**config, size=size, seed=seed)
        if hasattr(built, "validate"):
            built.validate()
        return dataset_cls(config=built)
    except Exception as exc:  # validate() asserts; constructors raise what they like
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise ValueError(f"reasoning-gym refuses this {name} config: {reason}") from None


def _rg_value_error(annotation: Any, value: Any) -> str | None:
    """What a config field annotated `annotation` takes, when the JSON `value` is not that;
    None when it fits or the type is not one JSON can hold (reasoning-gym's own validation
    judges those).

    >>> _rg_value_error(int, 2), _rg_value_error(int, True), _rg_value_error(float, 1)
    (None, 'an integer', None)
    >>> _rg_value_error(Literal["a", "b"], "c"), _rg_value_error(list[str], ["+"])
    ("one of 'a', 'b'", None)
    """
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Literal:
        return None if value in args else f"one of {', '.join(map(repr, args))}"
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [_rg_value_error(a, value) for a in args if a is not type(None)]
        if None in options:
            return None
        return " or ".join([*map(str, options), *(["null"] if type(None) in args else [])])
    if annotation in (list, tuple) or origin in (list, tuple, Sequence):
        return None if isinstance(value, list) else "a list"
    kinds: dict[Any, tuple[tuple[type, ...], str]] = {
        bool: ((bool,), "true or false"),
        int: ((int,), "an integer"),
        float: ((int, float), "a number"),
        str: ((str,), "a string"),
    }
    if annotation not in kinds:
        return None
    accepted, wanted = kinds[annotation]
    fits = isinstance(value, accepted) and (annotation is bool or not isinstance(value, bool))
    return None if fits else wanted


def rg_config_key(config: Mapping[str, Any] | None) -> str | None:
    """`config` as canonical JSON (the cache key of its scorer); None for the default."""
    try:
        return json.dumps(config, sort_keys=True) if config else None
    except (TypeError, ValueError):
        raise ValueError("a reasoning-gym config must hold JSON values only") from None


@functools.cache
def _rg_dataset(name: str, config_key: str | None = None) -> Any:
    """A dataset object whose `score_answer` scores `name`'s entries; one per name and
    config (`rg_config_key`). Built from the config the items were exported with, as some
    scorers read it (ARC's board format, puzzle24's number range). size=1 keeps
    construction cheap.
    """
    config = json.loads(config_key) if config_key else None
    return create_rg_dataset(name, config, size=1, seed=0)


def _rg_source(item: Mapping[str, Any]) -> str | None:
    metadata = item.get("metadata")
    source = metadata.get("source_dataset") if isinstance(metadata, Mapping) else None
    return source if isinstance(source, str) else None


# A number not glued to a digit before it, so the 3 of "5-3" is 3, not -3.
_NUMBER = re.compile(r"(?<![\d.])-?\d+(?:\.\d+)?")


def rg_answer(output_text: str, extract: RgExtract = "answer_tag") -> str:
    """The answer in a completion: the last `<answer>...</answer>` when there is one
    (trimmed), as reasoning-gym's examples take it. Without tags, `answer_tag` takes the
    whole trimmed output, so that a model that just answers (a small one after SFT on bare
    answers) is scored too; `last_number` takes the output's last number (the whole output
    when it has none), so that a chatty but right answer to a numeric task counts: reward
    for being right, not for being terse.

    >>> rg_answer("I think <answer> 7 </answer>"), rg_answer(" 7\\n")
    ('7', '7')
    >>> rg_answer("5 - 8 = -3.", "last_number"), rg_answer("So 12-5 is 7", "last_number")
    ('-3', '7')
    """
    from reasoning_gym.utils import extract_answer

    answer = extract_answer(output_text)
    if answer is not None:
        return answer
    if extract == "last_number":
        numbers = _NUMBER.findall(output_text)
        if numbers:
            return str(numbers[-1])
    return output_text.strip()


def reasoning_gym_score(
    dataset: str,
    output_text: str,
    item: Mapping[str, Any],
    config: Mapping[str, Any] | None = None,
    extract: RgExtract = "answer_tag",
) -> float:
    """reasoning-gym's `score_answer(rg_answer(output_text, extract), entry)` clipped to
    [0, 1] by `dataset`'s scorer at `config`, the entry rebuilt from the item: its prompt
    as `question`, its `answer` and `metadata`."""
    entry: dict[str, Any] = {}
    for field in RG_ITEM_FIELDS:
        if field not in item:
            raise GraderError(f"item has no field {field!r}")
        entry[field] = item[field]
    messages = item.get("messages")
    if isinstance(messages, list) and messages and isinstance(messages[-1], Mapping):
        entry["question"] = messages[-1].get("content")
    scorer = _rg_dataset(dataset, rg_config_key(config))
    score = float(scorer.score_answer(rg_answer(output_text, extract), entry))
    if not math.isfinite(score):
        raise GraderError(f"reasoning-gym's {dataset} scorer returned {score}")
    return min(1.0, max(0.0, score))


# --- runtime -----------------------------------------------------------------------------


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
        self._input = _parse_template(getattr(spec, "input", ""))
        self._reference = _parse_template(getattr(spec, "reference", ""))
        self._re2 = None
        if isinstance(spec, RegexMatchGrader):
            self._re2 = _compile_re2(spec.pattern, spec.flags)
        if isinstance(spec, MathVerifyGrader):
            sandbox.warm("math_verify", "sympy")
        elif isinstance(spec, ReasoningGymGrader):
            sandbox.warm("reasoning_gym")
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
        text = _render(self._input, output_text, item)
        if isinstance(spec, RegexMatchGrader):
            if self._re2 is not None:
                return float(self._re2.search(text) is not None)
            return self._submit("regex_match", (spec.pattern, spec.flags, text))
        if isinstance(spec, JsonValidGrader):
            return _json_score(text, spec.required_keys)
        reference = _render(self._reference, output_text, item)
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
