"""Benchmark: one LCO step with a LoRA r=16 adapter vs the full fine-tune, same batch, same run.

    .venv/bin/python scripts/bench_lora.py                      # SmolLM2-135M, CPU, ~3 min
    .venv/bin/python scripts/bench_lora.py --model lco-tiny --repeats 5

Each variant runs in a fresh process (so peak memory is its own), built by the trainer's
real `build_trainer` from the same job spec but for `lora`: SmolLM2-135M-Instruct (the
real-model fixture, imported once into `.cache/models`), 4 prompts x 8 samples of up to 24
tokens of reasoning-gym `basic_arithmetic`, HF rollouts, seed 1. The rollouts of step 1
are generated once and then replayed (an engine that caches them), so every timed step
trains on the same completions in both variants; a LoRA adapter starts with B = 0, so the
two variants' first rollouts are the same tokens too.

Reported per variant: peak RSS of the process (`ru_maxrss`: weights, gradients, AdamW
state, activations, libraries), the peak RSS above the process's RSS once the trainer was
built (sampled every millisecond: what training adds), trainable parameters, and the
median time of a training step (reward, logprobs, update, optimiser step) over `--repeats`
steps after one warm-up step. Then the LoRA/full ratios; the targets are peak memory
<= 0.5x and step time <= 0.9x.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class PeakRSS(threading.Thread):
    """Samples the resident set size every millisecond; `peak` is the highest value seen."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak = rss_mb()
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            self.peak = max(self.peak, rss_mb())
            time.sleep(0.001)


class ReplayEngine:
    """Generates once, then returns the same completions for every call."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.cached: Any = None

    def generate(self, prompts: Any, params: Any) -> Any:
        if self.cached is None:
            self.cached = self.engine.generate(prompts, params)
        return self.cached

    def sync_weights(self, model: Any) -> None:
        self.engine.sync_weights(model)

    def close(self) -> None:
        self.engine.close()


def model_path(name: str) -> str:
    if name != "smollm2":
        return name
    from lco_core.model_import import SMOLLM2_NAME, import_cached, packaged_gguf

    return str(import_cached(packaged_gguf(), ROOT / ".cache" / "models", SMOLLM2_NAME))


def child(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from lco_core.callbacks import Callbacks
    from lco_core.rg_tasks import export_rg, preset
    from lco_core.runner import build_trainer
    from lco_spec.job import parse_job_spec

    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="bench-lora-"))
    train, _, _, _, grader = export_rg(
        "basic_arithmetic", 64, 1, 1, **preset("basic_arithmetic", "small")
    )
    data = work / "train.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in train))
    hp: dict[str, Any] = {
        "batch_size": 4,
        "n_samples": 8,
        "max_completion_tokens": 24,
        "rollout_engine": "hf",
        "max_steps": 100,
        "eval_samples": 1,
        "diagnostic_interval": 1000,
        "split_grad_norm": False,
    }
    if args.variant == "lora":
        hp["lora"] = {"r": args.r}
    spec = parse_job_spec(
        {
            "model": args.model,
            "training_file": str(data),
            "seed": 1,
            "method": {"type": "lco", "lco": {"grader": grader, "hyperparameters": hp}},
        }
    )
    trainer: Any = build_trainer(
        spec,
        training_file=data,
        validation_file=None,
        output_dir=work / "run",
        callbacks=Callbacks(),
        model_path=model_path(args.model),
        device="cpu",
    )
    trainer.engine = ReplayEngine(trainer.engine)
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    built = rss_mb()
    sampler = PeakRSS()
    sampler.start()
    times, rollout_s = [], 0.0
    for i in range(args.repeats + 1):
        torch.manual_seed(1)
        started = time.perf_counter()
        metrics = trainer.train_step(1)
        elapsed = time.perf_counter() - started
        if i == 0:
            rollout_s = metrics["time_rollout"]
        else:
            times.append(elapsed)
    sampler.done.set()
    sampler.join()
    return {
        "variant": args.variant,
        "trainable_params": trainable,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "train_added_mb": sampler.peak - built,
        "step_s": statistics.median(times),
        "rollout_s": rollout_s,
        "loss": metrics["loss"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2", help="smollm2, lco-tiny or a model dir")
    parser.add_argument("--r", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--variant", choices=["full", "lora"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(child(args)))
        return
    rows = {}
    for variant in ("full", "lora"):
        cmd = [sys.executable, __file__, "--variant", variant, "--model", args.model,
               "--r", str(args.r), "--repeats", str(args.repeats),
               "--threads", str(args.threads)]  # fmt: skip
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT)
        rows[variant] = json.loads(out.stdout.strip().splitlines()[-1])
    header = f"{'variant':<10}{'trainable':>14}{'peak RSS MB':>13}{'train +MB':>11}{'step s':>9}"
    print(f"model {args.model}, LCO, 4 prompts x 8 samples x 24 tokens, r={args.r}")
    print(header)
    for row in rows.values():
        print(
            f"{row['variant']:<10}{row['trainable_params']:>14,}{row['peak_rss_mb']:>13.0f}"
            f"{row['train_added_mb']:>11.0f}{row['step_s']:>9.2f}"
        )
    full, lora = rows["full"], rows["lora"]
    ratios = {
        "peak_rss": lora["peak_rss_mb"] / full["peak_rss_mb"],
        "train_added": lora["train_added_mb"] / max(full["train_added_mb"], 1e-9),
        "step_time": lora["step_s"] / full["step_s"],
    }
    print(
        f"LoRA/full: peak RSS {ratios['peak_rss']:.2f}x (target <= 0.5), memory training "
        f"adds {ratios['train_added']:.2f}x, step time {ratios['step_time']:.2f}x "
        "(target <= 0.9)"
    )
    print(json.dumps({"rows": rows, "ratios": ratios}))


if __name__ == "__main__":
    main()
