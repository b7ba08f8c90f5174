"""Built-in synthetic tasks with verifiable answers: datasets for demos, tests and lco-tiny.

Each task makes reinforcement items in OpenAI's JSONL shape (a user message plus the
`answer` the grader compares against), supervised items (user + assistant messages), and
the OpenAI grader JSON that scores its reinforcement items. Everything is deterministic
for a seed, and pure Python (the CLI imports this module without torch):

    task = get_task("addition")
    train, val = split_examples(task, n_train=1000, n_val=100, seed=0)
    write_jsonl(train, "train.jsonl")
    grader = task.grader()   # {"type": "string_check", ...}
"""

from __future__ import annotations

import itertools
import json
import os
import random
import string
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Item = dict[str, Any]


@dataclass(frozen=True)
class Task:
    """A synthetic task: `make(rng) -> (prompt, answer)` draws one problem."""

    name: str
    description: str
    make: Callable[[random.Random], tuple[str, str]] = field(repr=False)

    def _problems(self, n: int, seed: int) -> list[tuple[str, str]]:
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        # Seeded by (task name, seed) so two tasks with the same seed draw independent streams.
        rng = random.Random(f"{self.name}:{seed}")
        return [self.make(rng) for _ in range(n)]

    def examples(self, n: int, seed: int = 0) -> list[Item]:
        """`n` reinforcement items: `{"messages": [user], "answer": ...}`."""
        return [
            {"messages": [{"role": "user", "content": prompt}], "answer": answer}
            for prompt, answer in self._problems(n, seed)
        ]

    def sft_examples(self, n: int, seed: int = 0) -> list[Item]:
        """`n` supervised items: `{"messages": [user, assistant]}` with the answer as reply."""
        return [
            {
                "messages": [
                    {"role": "user", "content": prompt},
                    {"role": "assistant", "content": answer},
                ]
            }
            for prompt, answer in self._problems(n, seed)
        ]

    def dpo_examples(self, n: int, seed: int = 0) -> list[Item]:
        """`n` preference items (OpenAI's DPO format): the right answer preferred over another
        problem's answer (a plausible but wrong reply)."""
        problems = self._problems(n + 1, seed)
        items = []
        for (prompt, answer), (_, other) in itertools.pairwise(problems):
            wrong = other if other != answer else answer + answer[-1]
            items.append(
                {
                    "input": {"messages": [{"role": "user", "content": prompt}]},
                    "preferred_output": [{"role": "assistant", "content": answer}],
                    "non_preferred_output": [{"role": "assistant", "content": wrong}],
                }
            )
        return items

    def grader(self) -> dict[str, Any]:
        """OpenAI grader JSON: exact match of the sampled text with the item's `answer`."""
        return {
            "type": "string_check",
            "name": f"{self.name}_exact",
            "input": "{{sample.output_text}}",
            "reference": "{{item.answer}}",
            "operation": "eq",
        }


# Operands in 0..99: a ~1M-parameter model learns part of this in a minute of CPU
# training (one-digit sums early, carries late), which leaves room for RL to improve.
ADDITION_MAX = 99


def _addition(rng: random.Random) -> tuple[str, str]:
    a, b = rng.randint(0, ADDITION_MAX), rng.randint(0, ADDITION_MAX)
    return f"What is {a}+{b}?", str(a + b)


def _reverse(rng: random.Random) -> tuple[str, str]:
    # Random letter strings rather than a word list: no train/validation overlap to speak
    # of, and nothing to memorise; lengths 3-6 keep it within a tiny model's reach.
    word = "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(3, 6)))
    return f"Reverse the word: {word}", word[::-1]


TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        Task("addition", "Add two integers from 0 to 99; answer with the sum only.", _addition),
        Task("reverse", "Reverse a short lowercase word (3-6 letters).", _reverse),
    )
}


def get_task(name: str) -> Task:
    """The registered task `name`, or a `ValueError` listing the known ones."""
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}") from None


def list_tasks() -> list[Task]:
    return list(TASKS.values())


def train_seed(seed: int) -> int:
    """Training items of `seed` use even seeds, validation items odd ones: never the same."""
    return 2 * seed


def validation_seed(seed: int) -> int:
    return 2 * seed + 1


def split_examples(
    task: Task, n_train: int, n_val: int, seed: int = 0, *, supervised: bool = False
) -> tuple[list[Item], list[Item]]:
    """Train and validation items from disjoint seeds; validation prompts that also occur in
    the training items are dropped and replaced, so the two sets share no prompt (the pool of
    distinct problems must be large enough for that)."""
    make = task.sft_examples if supervised else task.examples
    train = make(n_train, train_seed(seed))
    seen = {item["messages"][0]["content"] for item in train}
    val: list[Item] = []
    # Draw in growing batches from the validation seed stream until enough fresh items.
    want = n_val
    for attempt in range(8):
        val = [
            item
            for item in make(want, validation_seed(seed))
            if item["messages"][0]["content"] not in seen
        ][:n_val]
        if len(val) == n_val:
            return train, val
        want = want * 2 + 16 * (attempt + 1)
    raise ValueError(
        f"task {task.name!r} has too few distinct problems for {n_train} train "
        f"and {n_val} validation items without overlap"
    )


def write_jsonl(items: Iterable[Item], path: str | os.PathLike[str]) -> Path:
    """Write one JSON object per line (UTF-8, no ASCII escaping) and return the path."""
    out = Path(path)
    with out.open("w", encoding="utf-8") as f:
        for item in items:
            f.write(json.dumps(item, ensure_ascii=False) + "\n")
    return out
