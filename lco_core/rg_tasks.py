"""reasoning-gym datasets as tasks: the items, supervised twins and grader that
`lco tasks export rg:DATASET` writes, for benchmarks, tests and demos to make the same way.

    train, val, sft_train, sft_val, grader = export_rg("basic_arithmetic", 1000, 100, seed=0)
    # or a named setting that SmolLM2-135M-Instruct can partly solve (see PRESETS):
    train, val, sft_train, sft_val, grader = export_rg("basic_arithmetic", 64, 64, 0,
                                                       **preset("basic_arithmetic", "small"))

Items are `{"messages": [user question (+ instruction)], "answer", "metadata"}` in OpenAI's
JSONL shape; the grader is `{"type": "reasoning_gym", "dataset", "config"?, "extract"?}` and
scores them with the dataset's own scorer built from the same config. Pure Python:
reasoning_gym (numpy, sympy; never torch) is imported when a function runs, so the `lco`
CLI can import this module.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lco_spec.graders import RgExtract

Item = dict[str, Any]

# The oracle answers of this many exported items are graded as a check before writing.
_ORACLE_CHECKS = 16

# Named settings, per dataset: `export_rg`'s config, instruction and extract. "small" is
# sized for SmolLM2-135M-Instruct, the project's real-model fixture, so that RL has something
# to raise: greedy reward 0.36 on 64 held-out prompts, 0.12 at temperature 1, where 38% of
# groups of 8 samples disagree (scripts/rg_difficulty.py). The default basic_arithmetic (up
# to 6 terms of up to 4 digits) scores ~0; and the model never answers with a bare number
# whatever the instruction, so without `last_number` a right "7 + 5 = 12" would score 0.2.
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "basic_arithmetic": {
        "small": {
            "config": {
                "min_terms": 2,
                "max_terms": 2,
                "min_digits": 1,
                "max_digits": 2,
                "operators": ["+", "-"],
                "allow_parentheses": False,
                "allow_negation": False,
            },
            "instruction": "Respond with just the result.",
            "extract": "last_number",
        },
    },
}


def preset(dataset: str, name: str) -> dict[str, Any]:
    """`PRESETS[dataset][name]`: the `config`, `instruction` and `extract` keyword
    arguments of `export_rg`. Raises ValueError naming the presets there are."""
    if name not in PRESETS.get(dataset, {}):
        known = ", ".join(f"{d} {n}" for d, names in PRESETS.items() for n in names)
        raise ValueError(f"no preset {name!r} for {dataset}; presets: {known}")
    return json.loads(json.dumps(PRESETS[dataset][name]))  # a copy the caller may change


def rg_split(
    dataset: str,
    n_train: int,
    n_val: int,
    seed: int,
    config: Mapping[str, Any] | None = None,
    instruction: str | None = None,
) -> tuple[list[Item], list[Item]]:
    """Reinforcement items from reasoning-gym's `dataset` at `config` (its defaults for
    fields not given): the first `n_train` entries of one seeded stream for training, then
    the next `n_val` whose question is not a training question for validation. Each item
    is the question, followed by `instruction` on a new line when given, as the user
    message plus the entry's `answer` and `metadata`, as the reasoning_gym grader reads
    them, after a JSON round trip (tuples become lists), so they are what the file holds."""
    from lco_spec.graders import create_rg_dataset

    if n_train < 1 or n_val < 0:
        raise ValueError(f"need --size >= 1 and --n-val >= 0, got {n_train} and {n_val}")
    if instruction is not None and not instruction.strip():
        raise ValueError("the instruction is empty")
    # reasoning-gym draws entry i from Random(seed + i), so seeds 0 and 1 would share all
    # but one entry; a seed hashed from (dataset, seed) keeps two exports' streams apart,
    # as the built-in tasks seed by (task, seed). 31 bits: numpy seeds must stay < 2**32.
    digest = hashlib.sha256(f"{dataset}:{seed}".encode()).digest()
    rg_seed = int.from_bytes(digest[:4], "big") >> 1
    # The size is fixed up front (some datasets draw their task mix from it); the spare
    # entries replace validation items that repeat a training question.
    source = create_rg_dataset(dataset, config, size=n_train + 2 * n_val + 16, seed=rg_seed)

    def item(index: int) -> Item:
        try:
            entry = source[index]
        except Exception as exc:  # a config that validates may still fail to generate
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise ValueError(f"reasoning-gym's {dataset} cannot make an entry: {reason}") from None
        try:
            fields = json.loads(
                json.dumps({"answer": entry["answer"], "metadata": entry["metadata"]})
            )
        except (TypeError, ValueError) as exc:
            raise ValueError(f"reasoning-gym's {dataset} entries are not JSON: {exc}") from None
        question = entry["question"]
        if instruction is not None:
            question = f"{question}\n{instruction}"
        return {"messages": [{"role": "user", "content": question}], **fields}

    train = [item(i) for i in range(n_train)]
    seen = {t["messages"][0]["content"] for t in train}
    val: list[Item] = []
    for index in range(n_train, len(source)):
        if len(val) == n_val:
            break
        candidate = item(index)
        if candidate["messages"][0]["content"] not in seen:
            seen.add(candidate["messages"][0]["content"])
            val.append(candidate)
    if len(val) < n_val:
        raise ValueError(
            f"reasoning-gym's {dataset} has too few distinct questions for {n_train} train "
            f"and {n_val} validation items without overlap"
        )
    return train, val


def rg_grader(
    dataset: str,
    items: list[Item],
    config: Mapping[str, Any] | None = None,
    extract: RgExtract | None = None,
) -> dict[str, Any]:
    """The grader JSON for `dataset`'s items made at `config`, taking the answer as
    `extract` says (see `lco_spec.graders.rg_answer`; default: `answer_tag`), checked on
    them: it must accept the items and give the dataset's own answer full marks (ARC's
    scorers, for one, compare tuples, which a JSONL file cannot hold, and would score every
    answer 0.05)."""
    from lco_spec.graders import GraderError, build_grader, check_grader_against_item

    spec: dict[str, Any] = {"type": "reasoning_gym", "name": f"rg_{dataset}", "dataset": dataset}
    if config:
        spec["config"] = dict(config)
    if extract is not None:
        spec["extract"] = extract
    grader = build_grader(spec)
    for item in items[:_ORACLE_CHECKS]:
        check_grader_against_item(grader.spec, item, param_prefix="grader")
        if isinstance(item["answer"], str):
            try:
                score = grader.grade(item["answer"], item).score
            except GraderError as exc:
                raise ValueError(f"reasoning-gym's {dataset} scorer failed: {exc}") from None
            if score != 1.0:
                raise ValueError(
                    f"reasoning-gym's {dataset} scorer gives its own answer {score:g} once the "
                    "item has been through JSON, so it cannot be trained on from a file"
                )
    return spec


def sft_twins(items: list[Item]) -> list[Item] | None:
    """Supervised twins (the answer as the assistant reply) of the items with a non-empty
    answer, or None when there are items but none has one (datasets whose scorer checks
    any valid solution, such as graph_color, have no single answer)."""
    twins = [
        {"messages": [*item["messages"], {"role": "assistant", "content": item["answer"]}]}
        for item in items
        if isinstance(item["answer"], str) and item["answer"]
    ]
    return None if items and not twins else twins


def export_rg(
    dataset: str,
    n_train: int,
    n_val: int,
    seed: int,
    config: Mapping[str, Any] | None = None,
    instruction: str | None = None,
    extract: RgExtract | None = None,
) -> tuple[list[Item], list[Item], list[Item] | None, list[Item] | None, dict[str, Any]]:
    """(train, val, sft_train, sft_val, grader): `rg_split`'s items, their `sft_twins`
    (None for a dataset with no single answer) and the `rg_grader` that scores them.
    Raises ValueError (one line) for an unknown dataset, a bad config or extract, or a
    dataset whose scorer cannot grade its own answers from a file."""
    train, val = rg_split(dataset, n_train, n_val, seed, config, instruction)
    grader = rg_grader(dataset, train, config, extract)
    return train, val, sft_twins(train), sft_twins(val), grader
