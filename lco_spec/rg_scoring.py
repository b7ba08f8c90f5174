"""reasoning-gym datasets and their scorers, for the `reasoning_gym` grader and `lco tasks`.

An exported item carries the entry's `answer` and `metadata` beside its prompt; the
grader rebuilds the entry and asks the dataset's own `score_answer`. Importing
reasoning_gym costs about a second (numpy and sympy, never torch), so it happens only
inside these functions.
"""

from __future__ import annotations

import difflib
import functools
import json
import math
import re
import types
from collections.abc import Mapping, Sequence
from dataclasses import fields
from typing import Any, Literal, Union, get_args, get_origin

from lco_spec.errors import GraderError

RgExtract = Literal["answer_tag", "last_number"]

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


def rg_source(item: Mapping[str, Any]) -> str | None:
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


def check_rg_dataset(name: str, config: Mapping[str, Any] | None) -> str:
    """`name` if reasoning-gym builds its scorer at `config` (cached), else ValueError: a
    pydantic validator, so an unknown name is a 400 at submission, not a job of zeros."""
    try:
        _rg_dataset(name, rg_config_key(config))
    except ValueError:
        raise
    except Exception as exc:  # pydantic would let anything else out as a 500
        raise ValueError(f"reasoning-gym cannot build {name!r}: {exc}") from None
    return name
