"""Built-in tasks: deterministic, correct answers, OpenAI-shaped items, graders that fit them."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from lco_core.tasks import TASKS, get_task, list_tasks, split_examples, write_jsonl
from lco_spec.graders import build_grader, check_grader_against_item

TASK_NAMES = sorted(TASKS)


def test_registry_has_the_builtin_tasks() -> None:
    assert {"addition", "reverse"} <= set(TASKS)
    assert [t.name for t in list_tasks()] == list(TASKS)
    with pytest.raises(ValueError, match="unknown task 'nope'"):
        get_task("nope")


@pytest.mark.parametrize("name", TASK_NAMES)
def test_same_seed_same_items_other_seed_other_items(name: str) -> None:
    task = get_task(name)
    assert task.examples(50, seed=3) == task.examples(50, seed=3)
    assert task.sft_examples(50, seed=3) == task.sft_examples(50, seed=3)
    assert task.examples(50, seed=3) != task.examples(50, seed=4)
    # A longer draw extends a shorter one: n does not reshuffle the stream.
    assert task.examples(80, seed=3)[:50] == task.examples(50, seed=3)


@pytest.mark.parametrize("name", TASK_NAMES)
def test_items_are_openai_shaped_and_match_their_sft_twins(name: str) -> None:
    task = get_task(name)
    for rl, sft in zip(task.examples(20, seed=1), task.sft_examples(20, seed=1), strict=True):
        assert set(rl) == {"messages", "answer"}
        assert rl["messages"] == [{"role": "user", "content": rl["messages"][0]["content"]}]
        assert sft["messages"] == [*rl["messages"], {"role": "assistant", "content": rl["answer"]}]


def test_addition_answers_are_sums() -> None:
    for item in get_task("addition").examples(200, seed=0):
        a, b = map(
            int, re.fullmatch(r"What is (\d+)\+(\d+)\?", item["messages"][0]["content"]).groups()
        )  # type: ignore[union-attr]
        assert item["answer"] == str(a + b)


def test_reverse_answers_are_reversed_words() -> None:
    for item in get_task("reverse").examples(200, seed=0):
        word = item["messages"][0]["content"].rsplit(": ", 1)[1]
        assert re.fullmatch(r"[a-z]{3,6}", word)
        assert item["answer"] == word[::-1]


@pytest.mark.parametrize("name", TASK_NAMES)
def test_grader_references_fields_the_items_have_and_scores_them(name: str) -> None:
    task = get_task(name)
    spec = task.grader()
    assert spec["type"] == "string_check"
    grader = build_grader(spec)
    for item in task.examples(10, seed=2):
        check_grader_against_item(grader.spec, item)  # raises if a {{item.x}} is missing
        assert grader.grade(item["answer"], item).score == 1.0
        assert grader.grade(item["answer"] + " ", item).score == 0.0


@pytest.mark.parametrize("supervised", [False, True])
def test_split_is_deterministic_and_disjoint(supervised: bool) -> None:
    task = get_task("addition")
    train, val = split_examples(task, 500, 100, seed=5, supervised=supervised)
    assert (train, val) == split_examples(task, 500, 100, seed=5, supervised=supervised)
    assert len(train) == 500 and len(val) == 100
    prompts = {item["messages"][0]["content"] for item in train}
    assert not prompts & {item["messages"][0]["content"] for item in val}
    assert ("answer" in train[0]) is not supervised


def test_split_refuses_when_the_task_cannot_supply_disjoint_items(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import lco_core.tasks as tasks

    monkeypatch.setattr(tasks, "ADDITION_MAX", 1)  # only 4 distinct problems
    with pytest.raises(ValueError, match="too few distinct problems"):
        split_examples(get_task("addition"), 50, 10)


def test_write_jsonl_round_trips(tmp_path: Path) -> None:
    items = [*get_task("reverse").examples(5, seed=0), {"messages": [], "answer": "ünï"}]
    path = write_jsonl(items, tmp_path / "x.jsonl")
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == items
    assert "ünï" in lines[-1]  # UTF-8, not \u escapes


def test_tasks_module_does_not_import_torch() -> None:
    code = "import sys, lco_core.tasks; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
