"""Built-in tasks: deterministic, correct answers, OpenAI-shaped items, graders that fit them."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

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


# --- reasoning-gym datasets (lco tasks export rg:DATASET) ----------------------------------

RG_DATASETS = ["basic_arithmetic", "letter_counting"]  # arithmetic, and counting letters
RG_FILES = ("sft_train.jsonl", "sft_val.jsonl", "rl_train.jsonl", "rl_val.jsonl", "grader.json")


def export(*args: str) -> int:
    """`lco tasks export ...` in-process (the subprocess costs a second of imports)."""
    from cli.main import main

    return main(["tasks", "export", *args])


@pytest.fixture(scope="module")
def rg_exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("rg")
    for dataset in RG_DATASETS:
        assert (
            export(f"rg:{dataset}", "--size", "40", "--val-size", "8", "--out", str(root / dataset))
            == 0
        )
    return {dataset: root / dataset for dataset in RG_DATASETS}


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize("dataset", RG_DATASETS)
def test_rg_export_writes_valid_openai_datasets(dataset: str, rg_exports: dict[str, Path]) -> None:
    from lco_spec.datasets import parse_dataset

    out = rg_exports[dataset]
    assert sorted(p.name for p in out.iterdir()) == sorted(RG_FILES)
    for split, n in (("train", 40), ("val", 8)):
        rl = parse_dataset((out / f"rl_{split}.jsonl").read_bytes(), "reinforcement")
        sft = parse_dataset((out / f"sft_{split}.jsonl").read_bytes(), "supervised")
        assert len(rl) == len(sft) == n
        for item, twin in zip(rl, sft, strict=True):
            assert set(item) == {"messages", "answer", "metadata"}
            assert [m["role"] for m in item["messages"]] == ["user"]
            assert item["metadata"]["source_dataset"] == dataset
            assert twin["messages"] == [
                *item["messages"],
                {"role": "assistant", "content": item["answer"]},
            ]
    train_q = {i["messages"][0]["content"] for i in read_jsonl(out / "rl_train.jsonl")}
    assert not train_q & {i["messages"][0]["content"] for i in read_jsonl(out / "rl_val.jsonl")}


@pytest.mark.parametrize("dataset", RG_DATASETS)
def test_rg_export_grader_validates_and_scores_the_items(
    dataset: str, rg_exports: dict[str, Path]
) -> None:
    from lco_spec.graders import ReasoningGymGrader, parse_grader

    out = rg_exports[dataset]
    spec = parse_grader(json.loads((out / "grader.json").read_text()))
    assert isinstance(spec, ReasoningGymGrader) and spec.dataset == dataset
    grader = build_grader(spec)
    for name in ("rl_train.jsonl", "rl_val.jsonl"):
        for item in read_jsonl(out / name):
            check_grader_against_item(spec, item)
            assert grader.grade(item["answer"], item).score == 1.0
            wrong = str(int(item["answer"]) + 1)  # never contains the right answer
            assert grader.grade(wrong, item).score == 0.0


def test_rg_export_same_seed_same_files(tmp_path: Path) -> None:
    def files(seed: int, where: str) -> dict[str, bytes]:
        args = ("--size", "30", "--n-val", "5", "--seed", str(seed), "--out", str(tmp_path / where))
        assert export("rg:basic_arithmetic", *args) == 0
        return {name: (tmp_path / where / name).read_bytes() for name in RG_FILES}

    first = files(3, "a")
    assert files(3, "b") == first
    other = files(4, "c")
    assert other["rl_train.jsonl"] != first["rl_train.jsonl"]
    # reasoning-gym seeds entry i with seed + i; ours are hashed, so seeds 3 and 4 do not
    # give the same entries shifted by one.
    questions = {i["messages"][0]["content"] for i in read_jsonl(tmp_path / "a/rl_train.jsonl")}
    shared = questions & {
        i["messages"][0]["content"] for i in read_jsonl(tmp_path / "c/rl_train.jsonl")
    }
    assert len(shared) < 5


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("rg:basic_arithmetc", "unknown reasoning-gym dataset 'basic_arithmetc'; did you mean"),
        ("rg:", "unknown reasoning-gym dataset ''"),
        ("nope", "unknown task 'nope'; known tasks: addition, reverse; or rg:DATASET"),
    ],
)
def test_export_unknown_names_say_where_to_look(
    name: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert export(name, "--out", str(tmp_path / "out")) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message}") and "`lco tasks list`" in err
    assert not (tmp_path / "out").exists()


def test_rg_export_refuses_datasets_whose_scorer_does_not_survive_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # ARC's scorer compares tuples; out of a JSONL file they are lists and score 0.05.
    assert export("rg:arc_agi", "--size", "2", "--n-val", "1", "--out", str(tmp_path)) == 1
    assert "cannot be trained on from a file" in capsys.readouterr().err


def test_tasks_list_shows_builtin_and_rg_datasets(capsys: pytest.CaptureFixture[str]) -> None:
    from cli.main import main

    assert main(["tasks", "list"]) == 0
    names = {line.split()[0] for line in capsys.readouterr().out.splitlines() if line[:2] == "  "}
    assert {"addition", "reverse", "rg:basic_arithmetic", "rg:letter_counting"} <= names
    assert "rg:composite" not in names  # needs a config naming other datasets


def test_reasoning_gym_and_the_cli_do_not_import_torch() -> None:
    # The API process validates reasoning_gym graders, so importing it must not load torch;
    # the lco CLI imports neither it nor lco_core until a command runs.
    code = (
        "import sys, cli.main; assert 'reasoning_gym' not in sys.modules;"
        "assert not any(m.startswith('lco_core') for m in sys.modules);"
        "import reasoning_gym, lco_spec.graders as g; g._rg_dataset('basic_arithmetic');"
        "from lco_core.rg_tasks import export_rg, preset;"
        "export_rg('basic_arithmetic', 2, 1, 0, **preset('basic_arithmetic', 'small'));"
        "sys.exit('torch' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


# --- reasoning-gym configs, instructions and presets ----------------------------------------

SMALL_ARITH = {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 2}


def test_rg_export_applies_the_config(tmp_path: Path) -> None:
    args = ("--size", "30", "--n-val", "10", "--config", json.dumps(SMALL_ARITH))
    assert export("rg:basic_arithmetic", *args, "--out", str(tmp_path)) == 0
    items = read_jsonl(tmp_path / "rl_train.jsonl") + read_jsonl(tmp_path / "rl_val.jsonl")
    for item in items:
        numbers = re.findall(r"\d+", item["messages"][0]["content"])
        assert len(numbers) == 2 and all(int(n) < 100 for n in numbers), item
        assert item["metadata"]["num_terms"] == 2 and item["metadata"]["num_digits"] in (1, 2)
    assert any(item["metadata"]["num_digits"] == 2 for item in items)
    grader = json.loads((tmp_path / "grader.json").read_text())
    assert grader["config"] == SMALL_ARITH  # the scorer is built as the items were


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ('{"min_term": 2}', "basic_arithmetic has no config field 'min_term'; did you mean"),
        ('{"min_terms": 3, "max_terms": 2}', "max_terms must be >= min_terms"),
        ('{"max_digits": "2"}', "config field 'max_digits' must be an integer, got '2'"),
        ('{"size": 5}', "basic_arithmetic has no config field 'size'"),
        ('{"min_terms": 2', "--config is not JSON"),
        ("[2]", "--config must be a JSON object"),
    ],
)
def test_rg_export_bad_config_is_a_one_line_error(
    config: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert export("rg:basic_arithmetic", "--config", config, "--out", str(tmp_path / "out")) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_rg_export_appends_the_instruction(tmp_path: Path) -> None:
    args = ("--size", "5", "--n-val", "3", "--instruction", "Answer with the number only.")
    assert export("rg:letter_counting", *args, "--out", str(tmp_path)) == 0
    for split in ("train", "val"):
        rl = read_jsonl(tmp_path / f"rl_{split}.jsonl")
        sft = read_jsonl(tmp_path / f"sft_{split}.jsonl")
        for item, twin in zip(rl, sft, strict=True):
            question = item["messages"][0]["content"]
            assert question.startswith("How many times") and question.endswith(
                '"?\nAnswer with the number only.'
            )
            assert twin["messages"][0]["content"] == question


def test_rg_preset_is_its_config_instruction_and_extract(tmp_path: Path) -> None:
    from lco_core.rg_tasks import PRESETS, export_rg, preset

    small = PRESETS["basic_arithmetic"]["small"]
    args = ("--size", "20", "--n-val", "5", "--seed", "2")
    preset_args = ("--preset", "small", "--out", str(tmp_path / "a"))
    assert export("rg:basic_arithmetic", *args, *preset_args) == 0
    explicit = ("--config", json.dumps(small["config"]), "--instruction", small["instruction"])
    explicit += ("--extract", small["extract"])
    assert export("rg:basic_arithmetic", *args, *explicit, "--out", str(tmp_path / "b")) == 0
    for name in RG_FILES:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    train, _, _, _, spec = export_rg(
        "basic_arithmetic", 20, 5, 2, **preset("basic_arithmetic", "small")
    )
    assert train == read_jsonl(tmp_path / "a/rl_train.jsonl")
    assert spec == json.loads((tmp_path / "a/grader.json").read_text())


def test_rg_export_grader_scores_right_answers_with_the_config() -> None:
    from lco_core.rg_tasks import export_rg, preset

    train, val, _, _, spec = export_rg(
        "basic_arithmetic", 30, 10, 0, **preset("basic_arithmetic", "small")
    )
    assert spec["config"]["max_digits"] == 2
    grader = build_grader(spec)
    for item in train + val:
        check_grader_against_item(grader.spec, item)
        assert grader.grade(item["answer"], item).score == 1.0
        assert grader.grade(f"<answer>{item['answer']}</answer>", item).score == 1.0
        assert grader.grade(str(int(item["answer"]) + 1), item).score < 1.0
        # The preset takes an untagged output's last number: right but chatty scores 1.
        expression = item["metadata"]["expression"]
        assert grader.grade(f"{expression} = {item['answer']}.", item).score == 1.0
        assert grader.grade(f"{expression} = {int(item['answer']) + 1}.", item).score == 0.0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("rg:basic_arithmetic", "--preset", "huge"), "no preset 'huge' for basic_arithmetic"),
        (("rg:letter_counting", "--preset", "small"), "no preset 'small' for letter_counting"),
        (
            ("rg:basic_arithmetic", "--preset", "small", "--config", "{}"),
            "--preset sets the config, instruction and extract",
        ),
        (("addition", "--config", "{}"), "--config, --instruction, --extract and --preset are"),
        (("addition", "--instruction", "Be brief."), "--config, --instruction, --extract"),
        (("addition", "--extract", "last_number"), "--config, --instruction, --extract"),
    ],
)
def test_rg_export_refuses_misused_options(
    args: tuple[str, ...], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert export(*args, "--out", str(tmp_path / "out")) == 1
    assert capsys.readouterr().err.startswith(f"error: {message}")
    assert not (tmp_path / "out").exists()
