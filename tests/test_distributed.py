"""One job as 2 gloo ranks (FSDP2 under torchrun) computes what 1 rank computes.

SFT and LCO on lco-tiny, same seed and global batch: per-step loss and grad norm agree
within 1e-4 relative, the final checkpoints give the same logits, and a checkpoint written
by 2 ranks resumes with 1 rank (and the reverse), continuing the step count. About two
minutes on 2 CPU cores (most of it is starting torchrun and its ranks):

    PYTHONPATH=. .venv/bin/python -m pytest tests/test_distributed.py -q
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from lco_core.cli_train import main as train_main
from lco_core.tasks import get_task, write_jsonl

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available(), reason="torch.distributed is not built"
)

STEPS = 3
REL = 1e-4


def write_jobs(root: Path) -> dict[str, Path]:
    task = get_task("addition")
    write_jsonl(task.sft_examples(64, seed=1), root / "sft.jsonl")
    write_jsonl(task.examples(64, seed=1), root / "rl.jsonl")
    common = {"max_steps": STEPS, "eval_samples": 4, "checkpoint_interval": 1}
    jobs: dict[str, dict[str, Any]] = {
        "sft": {
            "model": "lco-tiny",
            "training_file": "sft.jsonl",
            "seed": 3,
            "method": {
                "type": "supervised",
                "supervised": {"hyperparameters": {"batch_size": 8, **common}},
            },
        },
        "lco": {
            "model": "lco-tiny",
            "training_file": "rl.jsonl",
            "seed": 3,
            "method": {
                "type": "lco",
                "lco": {
                    "grader": task.grader(),
                    "hyperparameters": {
                        "batch_size": 4,
                        "n_samples": 4,
                        "max_completion_tokens": 6,
                        "rollout_engine": "hf",
                        **common,
                    },
                },
            },
        },
    }
    paths = {}
    for name, job in jobs.items():
        paths[name] = root / f"{name}.yaml"
        paths[name].write_text(yaml.safe_dump(job))
    return paths


def train(config: Path, out: Path, nproc: int) -> list[dict[str, float]]:
    """`lco train` as `nproc` ranks (1: in this process); returns metrics.jsonl."""
    args = ["--config", str(config), "--output", str(out), "--device", "cpu"]
    if nproc == 1:
        assert train_main(args) == 0
    else:
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        done = subprocess.run(
            [sys.executable, "-m", "lco_core.cli_train", *args, "--nproc", str(nproc)],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stderr[-4000:]
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def logits(checkpoint: Path) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(checkpoint, local_files_only=True)
    ids = torch.arange(3, 40).view(1, -1)
    with torch.no_grad():
        return model(input_ids=ids).logits


def assert_same_steps(a: list[dict[str, float]], b: list[dict[str, float]]) -> None:
    assert [m["step"] for m in a] == [m["step"] for m in b] == list(range(1, STEPS + 1))
    for x, y in zip(a, b, strict=True):
        for key in ("loss", "grad_norm"):
            assert x[key] == pytest.approx(y[key], rel=REL, abs=1e-9), (x["step"], key)


def resume_with(run: Path, config: Path, out: Path, nproc: int) -> list[dict[str, float]]:
    """Resume `run`'s step-2 checkpoint (and its first two metric lines) with `nproc` ranks."""
    (out / "checkpoints").mkdir(parents=True)
    shutil.copytree(run / "checkpoints" / "step-2", out / "checkpoints" / "step-2")
    lines = (run / "metrics.jsonl").read_text().splitlines()[:2]
    (out / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    return train(config, out, nproc)


@pytest.mark.parametrize("method", ["sft", "lco"])
def test_two_ranks_train_as_one(tmp_path: Path, method: str) -> None:
    config = write_jobs(tmp_path)[method]
    one = train(config, tmp_path / "one", 1)
    two = train(config, tmp_path / "two", 2)
    assert {m["world_size"] for m in one} == {1}
    assert {m["world_size"] for m in two} == {2}
    assert_same_steps(one, two)
    final = f"checkpoints/step-{STEPS}"
    expected = logits(tmp_path / "one" / final)
    assert torch.allclose(logits(tmp_path / "two" / final), expected, rtol=1e-4, atol=1e-4)

    # A 2-rank checkpoint resumes with 1 rank, and a 1-rank one with 2: step 3 is the same.
    if method == "lco":
        down = resume_with(tmp_path / "two", config, tmp_path / "two-then-one", 1)
        up = resume_with(tmp_path / "one", config, tmp_path / "one-then-two", 2)
        assert [m["world_size"] for m in down] == [2, 2, 1]
        assert [m["world_size"] for m in up] == [1, 1, 2]
        assert_same_steps(down, one)
        assert_same_steps(up, one)
        for run in ("two-then-one", "one-then-two"):
            got = logits(tmp_path / run / final)
            assert torch.allclose(got, expected, rtol=1e-4, atol=1e-4), run
