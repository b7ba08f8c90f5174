"""Step time of 1 rank vs N ranks (FSDP2 under torchrun) on lco-tiny, SFT and LCO.

    PYTHONPATH=. .venv/bin/python scripts/bench_distributed.py [--nproc 2] [--steps 10]

Runs `lco train` on the CPU for each method, once as one process with one thread (torchrun
gives each rank one thread, so this is the like-for-like single rank) and once as N
ranks, and prints the median per-step phase times of the steps after the first two.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PHASES = ("time_step", "time_rollout", "time_update", "time_sync")


def jobs(root: Path, steps: int) -> dict[str, Path]:
    from lco_core.tasks import get_task, write_jsonl

    task = get_task("addition")
    write_jsonl(task.sft_examples(256, seed=1), root / "sft.jsonl")
    write_jsonl(task.examples(256, seed=1), root / "rl.jsonl")
    common = {"max_steps": steps, "eval_samples": 1, "eval_interval": 10_000}
    common["checkpoint_interval"] = 10_000
    bodies = {
        "sft": {
            "model": "lco-tiny",
            "training_file": "sft.jsonl",
            "seed": 1,
            "method": {
                "type": "supervised",
                "supervised": {"hyperparameters": {"batch_size": 16, **common}},
            },
        },
        "lco": {
            "model": "lco-tiny",
            "training_file": "rl.jsonl",
            "seed": 1,
            "method": {
                "type": "lco",
                "lco": {
                    "grader": task.grader(),
                    "hyperparameters": {
                        "batch_size": 8,
                        "n_samples": 8,
                        "max_completion_tokens": 8,
                        "rollout_engine": "hf",
                        **common,
                    },
                },
            },
        },
    }
    paths = {}
    for name, body in bodies.items():
        paths[name] = root / f"{name}.yaml"
        paths[name].write_text(yaml.safe_dump(body))
    return paths


def run(config: Path, out: Path, nproc: int) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "lco_core.cli_train", "--config", str(config)]
    command += ["--output", str(out), "--device", "cpu", "--nproc", str(nproc)]
    subprocess.run(command, env=env, check=True, capture_output=True)
    steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    later = steps[2:]
    return {k: statistics.median(m[k] for m in later) for k in PHASES if k in later[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name, config in jobs(root, args.steps).items():
            for n in (1, args.nproc):
                times = run(config, root / f"{name}-{n}", n)
                shown = ", ".join(f"{k.removeprefix('time_')} {v:.3f} s" for k, v in times.items())
                print(f"{name} {n} rank(s): {shown}")


if __name__ == "__main__":
    main()
