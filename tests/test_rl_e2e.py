"""End to end on lco-tiny: `lco train` with LCO-KLD raises the greedy reward on addition.

The CI variant runs 60 steps (about a minute on 2 cores) with fixed seeds; the README's
figures come from the 300-step variant, marked slow:
    .venv/bin/python -m pytest tests/test_rl_e2e.py -m slow
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from lco_core.cli_train import main as train_main
from lco_core.tasks import get_task, write_jsonl


def run_lco(
    tmp_path: Path, steps: int, capsys: pytest.CaptureFixture[str]
) -> tuple[float, float, list[float]]:
    """Train; returns (greedy eval reward before, after, sampled reward per step)."""
    task = get_task("addition")
    write_jsonl(task.examples(512, seed=1), tmp_path / "train.jsonl")
    write_jsonl(task.examples(128, seed=99), tmp_path / "val.jsonl")
    job = {
        "model": "lco-tiny",
        "training_file": "train.jsonl",
        "validation_file": "val.jsonl",
        "seed": 1,
        "method": {
            "type": "lco",
            "lco": {
                "grader": task.grader(),
                "hyperparameters": {
                    "batch_size": 8,
                    "n_samples": 8,
                    "max_completion_tokens": 6,
                    "max_steps": steps,
                    "eval_samples": 128,
                    "eval_interval": steps,
                    "beta": 2.0,
                },
            },
        },
    }
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job))
    assert (
        train_main(["--config", str(tmp_path / "job.yaml"), "--output", str(tmp_path / "run")]) == 0
    )
    summary = dict(
        line.strip().split(": ")
        for line in capsys.readouterr().out.splitlines()
        if line.strip().startswith(("initial_", "final_"))
    )
    metrics = [
        json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    ]
    assert [m["step"] for m in metrics] == list(range(1, steps + 1))
    return (
        float(summary["initial_eval_reward"]),
        float(summary["final_eval_reward"]),
        [m["reward_mean"] for m in metrics],
    )


@pytest.mark.e2e
def test_lco_raises_reward_on_addition(
    tiny_model_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before, after, rewards = run_lco(tmp_path, 60, capsys)
    assert after >= before + 0.05, (before, after)
    # The sampled reward on the training prompts rises too (first vs last third of steps).
    third = len(rewards) // 3
    assert sum(rewards[-third:]) / third > sum(rewards[:third]) / third


@pytest.mark.slow
def test_lco_raises_reward_on_addition_long(
    tiny_model_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before, after, _ = run_lco(tmp_path, 300, capsys)
    assert after >= before + 0.15, (before, after)
