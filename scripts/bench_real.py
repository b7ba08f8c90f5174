"""Benchmark: one RL step on a real model (SmolLM2-135M-Instruct), time per phase and peak RSS.

    .venv/bin/python scripts/bench_real.py                    # 8 prompts x 8 samples x 64 tokens
    .venv/bin/python scripts/bench_real.py --engines hf --repeats 2 --threads 2

Each measurement runs in a fresh process, so its peak resident set size (`ru_maxrss`) is
its own: loading the model, the rollout engine and one step. Measured side by side in one
run, alternating:

* `step/hf`, `step/vllm`: one LCO step (`RLTrainer.train_step`, not a diagnostic step) with
  that rollout engine: rollout, reward, update, sync, and the step's total;
* `floor`: the same step's two unavoidable parts alone, in one process: HF generate of the
  same prompts with the same sampling seed (so the same completions), and one
  forward/backward of those tokens in the same micro-batches (SFT loss, no optimiser);
* `diagnostic/hf`: a diagnostic step (the split grad norm and KL after the update), to show
  what `diagnostic_interval` saves.

Targets (issue "real models"): with hf rollouts, peak RSS <= 3.0 GB for full fine-tuning in
float32; with vLLM, only the engine's weights and KV cache on top; the step's time <= 1.2 x
(generate + forward/backward). The prompts are reasoning-gym's `basic_arithmetic` (default
config), which SmolLM2 answers at length, so completions use most of the 64-token budget.
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
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def peak_rss_gb(who: int = resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss / 2**20  # KiB on Linux


def job_spec(model: str, data: Path, args: argparse.Namespace, engine: str) -> dict[str, Any]:
    grader = json.loads((data / "grader.json").read_text())
    hp = {
        "batch_size": args.prompts,
        "n_samples": args.samples,
        "max_completion_tokens": args.tokens,
        "max_steps": 10,
        "rollout_engine": engine,
        "eval_samples": 1,
        "learning_rate": 1e-6,
    }
    if args.micro_batch_size:
        hp["micro_batch_size"] = args.micro_batch_size
    return {
        "model": model,
        "training_file": str(data / "rl_train.jsonl"),
        "seed": 0,
        "method": {"type": "lco", "lco": {"grader": grader, "hyperparameters": hp}},
    }


def child(args: argparse.Namespace) -> dict[str, Any]:
    """One measurement in this (fresh) process; returns its figures."""
    import torch

    torch.set_num_threads(args.threads)
    from lco_core.callbacks import Callbacks
    from lco_core.runner import build_trainer
    from lco_spec.job import parse_job_spec

    kind, _, engine = args.child.partition("/")
    data = Path(args.data)
    spec = parse_job_spec(job_spec(args.model, data, args, engine or "hf"))
    with tempfile.TemporaryDirectory() as out:
        trainer: Any = build_trainer(
            spec,
            training_file=data / "rl_train.jsonl",
            validation_file=None,
            output_dir=Path(out),
            callbacks=Callbacks(),
        )
        n_params = sum(p.numel() for p in trainer.model.parameters())
        result: dict[str, Any] = {"variant": args.child, "parameters": n_params}
        if kind in ("step", "diagnostic"):
            step = 1 if kind == "diagnostic" else 2  # step 1 measures the diagnostics
            trainer.step = step - 1
            started = time.perf_counter()
            metrics = trainer.train_step(step)
            result["time_step"] = time.perf_counter() - started
            result.update({k: v for k, v in metrics.items() if k.startswith("time_")})
            result["tokens"] = metrics["response_len_mean"] * args.prompts * args.samples
            result["micro_batch_size"] = metrics["micro_batch_size"]
        else:
            result.update(floor(trainer, args, step=2))
        trainer.close()
    result["peak_rss_gb"] = peak_rss_gb()
    # vLLM's engine runs in a child process of its own: the largest child's peak, once the
    # engine has exited (trainer.close() above).
    result["engine_peak_rss_gb"] = peak_rss_gb(resource.RUSAGE_CHILDREN)
    return result


def floor(trainer: Any, args: argparse.Namespace, step: int) -> dict[str, float]:
    """Generate alone, then one forward/backward of the same tokens alone."""
    import torch

    from lco_core.fused import chunked_loss
    from lco_core.losses import LossConfig, TokenData
    from lco_core.rl import build_rollouts

    cfg = trainer.cfg
    _items, prompts, params = trainer.step_batch(step)  # the step's own: same completions
    torch.manual_seed(cfg.seed * 7919 + step)
    started = time.perf_counter()
    groups = trainer.engine.generate(prompts, params)
    generate_s = time.perf_counter() - started
    ro = build_rollouts(prompts, groups, trainer.pad_id)
    trainer.model.train()
    n = len(ro.tokens)
    started = time.perf_counter()
    for micro in torch.arange(len(ro.lengths)).split(cfg.micro_batch_size):
        input_ids, attention, rows, cols, index = ro.pack(micro)
        h = trainer.hidden(trainer.base, input_ids, attention)[rows, cols]
        zeros = torch.zeros(len(index))
        data = TokenData(
            tokens=ro.tokens[index],
            advantages=zeros,
            weights=torch.full((len(index),), 1.0 / n),
            old_logprobs=zeros,
            old_logits=zeros,
        )
        res = chunked_loss(
            h,
            trainer.head.weight,
            trainer.head.bias,
            data,
            "sft",
            LossConfig(),
            cfg.loss_chunk_size,
        )
        res.loss.backward()
    return {
        "time_generate": generate_s,
        "time_forward_backward": time.perf_counter() - started,
        "tokens": float(n),
        "micro_batch_size": float(cfg.micro_batch_size),
    }


def run_child(variant: str, args: argparse.Namespace, data: Path) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", variant, "--data", str(data), "--model", args.model]
    cmd += ["--prompts", str(args.prompts), "--samples", str(args.samples)]
    cmd += ["--tokens", str(args.tokens), "--threads", str(args.threads)]
    cmd += ["--micro-batch-size", str(args.micro_batch_size)]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "VLLM_LOGGING_LEVEL": "ERROR"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"{variant} failed (exit {proc.returncode})")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="", help="a HF model dir (default: SmolLM2 fixture)")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--micro-batch-size", type=int, default=0, help="0: auto")
    parser.add_argument("--engines", default="hf,vllm", help="comma-separated: hf, vllm")
    parser.add_argument("--no-diagnostic", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return 0
    if not args.model:
        from lco_core.model_import import SMOLLM2_NAME, import_cached, packaged_gguf

        print("importing SmolLM2-135M-Instruct into .cache/models (once per checkout)...")
        args.model = str(import_cached(packaged_gguf(), REPO / ".cache" / "models", SMOLLM2_NAME))
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "cli.main",
                "tasks",
                "export",
                "rg:basic_arithmetic",
                "--size",
                "64",
                "--val-size",
                "8",
                "--seed",
                "0",
                "--out",
                str(data),
            ],
            check=True,
            cwd=REPO,
            stdout=subprocess.DEVNULL,
        )
        variants = [f"step/{e}" for e in args.engines.split(",")] + ["floor"]
        if not args.no_diagnostic:
            variants.append("diagnostic/hf")
        runs: dict[str, list[dict[str, Any]]] = {}
        for repeat in range(args.repeats):
            for variant in variants:
                print(f"[{repeat + 1}/{args.repeats}] {variant} ...", flush=True)
                result = run_child(variant, args, data)
                runs.setdefault(variant, []).append(result)
                print(
                    "    "
                    + json.dumps(
                        {k: round(v, 3) if isinstance(v, float) else v for k, v in result.items()}
                    )
                )
    report(runs, args)
    return 0


def med(runs: list[dict[str, Any]], key: str) -> float:
    return (
        statistics.median(r[key] for r in runs if key in r)
        if any(key in r for r in runs)
        else float("nan")
    )


def report(runs: dict[str, list[dict[str, Any]]], args: argparse.Namespace) -> None:
    print(
        f"\nOne RL step (LCO), {args.prompts} prompts x {args.samples} samples x <= {args.tokens} "
        f"tokens, {args.threads} threads, median of {args.repeats}:"
    )
    phases = (
        "time_rollout",
        "time_reward",
        "time_old_logprobs",
        "time_update",
        "time_sync",
        "time_metrics",
    )
    print(
        "| variant | step s | "
        + " | ".join(p.removeprefix("time_") for p in phases)
        + " | tokens | micro-batch | peak RSS GB |"
    )
    print("|---" * (len(phases) + 5) + "|")
    for variant, rs in runs.items():
        if variant == "floor":
            continue
        cells = " | ".join(f"{med(rs, p):.2f}" for p in phases)
        print(
            f"| {variant} | {med(rs, 'time_step'):.2f} | {cells} | {med(rs, 'tokens'):.0f} | "
            f"{med(rs, 'micro_batch_size'):.0f} | {med(rs, 'peak_rss_gb'):.2f} | "
            f"{med(rs, 'engine_peak_rss_gb'):.2f} |"
        )
    if "floor" in runs:
        fl = runs["floor"]
        gen, fb = med(fl, "time_generate"), med(fl, "time_forward_backward")
        print(
            f"\nfloor: generate {gen:.2f} s + forward/backward {fb:.2f} s = {gen + fb:.2f} s "
            f"({med(fl, 'tokens'):.0f} tokens), peak RSS {med(fl, 'peak_rss_gb'):.2f} GB"
        )
        for variant in runs:
            if variant.startswith("step/hf"):
                ratio = med(runs[variant], "time_step") / (gen + fb)
                print(f"{variant} / floor = {ratio:.2f} (target <= 1.2)")


if __name__ == "__main__":
    sys.exit(main())
