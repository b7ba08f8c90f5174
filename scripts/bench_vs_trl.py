"""Benchmark: this project's GRPO and LCO steps against TRL's `GRPOTrainer`, side by side.

    .venv/bin/python scripts/bench_vs_trl.py                       # tiny and 25M, 2 threads
    .venv/bin/python scripts/bench_vs_trl.py --models smollm2 --steps 2 --repeats 1

Same model files, same prompts (the built-in `addition` task in its chat form), the same
64 completions per step (8 prompts x 8 samples, up to `--tokens` new tokens, temperature
1), HF generate in both, one update per rollout batch, no KL term, float32 on CPU,
`--threads` threads. Each variant runs in a fresh process that loads the model, takes one
warm-up step and then `--steps` timed steps; variants alternate (TRL, GRPO, LCO, TRL, ...)
for `--repeats` rounds so that load on a shared machine falls on all of them alike.
Reported: the median seconds per step, split into generation (the model's `generate`
calls, timed the same way in both) and the rest (update and bookkeeping), the tokens
generated per step, and each process's peak RSS.

Models: `tiny` is a random-init Qwen2 of lco-tiny's shape (2 layers, hidden 128, its
259-token byte vocabulary); `qwen25m` a random-init Qwen2 of 25M parameters (8 layers,
hidden 512, same tokenizer); `smollm2` the SmolLM2-135M-Instruct fixture. Random weights
rarely emit the end-of-turn token, so both sides generate about the full budget.

TRL runs in a virtual environment of its own, `.cache/bench_vs_trl/venv`, which this
script creates on first use with `TRL_PINS` (TRL is never a dependency of the project).
Our defaults are kept (auto micro-batches, `diagnostic_interval` 10: the warm-up step 1 is
the diagnostic one, the timed steps are plain); TRL's too, with one forward/backward over
the whole batch (`per_device_train_batch_size` = 64).
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
CACHE = REPO / ".cache" / "bench_vs_trl"
VENV = CACHE / "venv"
# TRL and what it runs on, pinned; torch and transformers are the project's own versions.
TRL_PINS = (
    "trl==1.16.0",
    "datasets==5.2.0",
    "torch==2.13.0",
    "transformers==5.19.0",
    "accelerate==1.15.0",
    "numpy==2.3.5",
)
# Random-init shapes (hidden, intermediate, layers, heads, kv heads) over lco-tiny's tokenizer.
SHAPES = {"tiny": (128, 512, 2, 4, 2), "qwen25m": (512, 1408, 8, 8, 2)}
VARIANTS = ("trl", "grpo", "lco")
LEARNING_RATE = 1e-6


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


# --- setup (the project's venv) -------------------------------------------------------


def model_dir(name: str) -> Path:
    """The model's HF dir: built once under CACHE (random init), or the SmolLM2 fixture."""
    if name == "smollm2":
        from lco_core.model_import import SMOLLM2_NAME, import_cached, packaged_gguf

        return import_cached(packaged_gguf(), REPO / ".cache" / "models", SMOLLM2_NAME)
    dest = CACHE / "models" / name
    if (dest / "config.json").is_file():
        return dest
    import torch
    from transformers import GenerationConfig, Qwen2ForCausalLM

    from lco_core.tiny_model import (
        IM_END_ID,
        PAD_TOKEN_ID,
        TinyBuildConfig,
        build_byte_tokenizer,
        tiny_config,
    )

    hidden, intermediate, layers, heads, kv_heads = SHAPES[name]
    shape = TinyBuildConfig(
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_layers=layers,
        num_heads=heads,
        num_kv_heads=kv_heads,
    )
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(tiny_config(shape))
    model.generation_config = GenerationConfig(eos_token_id=IM_END_ID, pad_token_id=PAD_TOKEN_ID)
    tmp = dest.with_name(dest.name + ".tmp")
    model.save_pretrained(tmp)
    build_byte_tokenizer().save_pretrained(tmp)
    tmp.rename(dest)
    return dest


def write_data(path: Path) -> None:
    """512 `addition` prompts, in the chat form both trainers read."""
    from lco_core.tasks import get_task, split_examples, write_jsonl

    train, _ = split_examples(get_task("addition"), n_train=512, n_val=1, seed=0)
    write_jsonl(train, path)


def ensure_trl_venv() -> Path:
    """TRL's own venv's python, created with TRL_PINS on first use."""
    python = VENV / "bin" / "python"
    marker = VENV / "pins.txt"
    if python.is_file() and marker.is_file() and marker.read_text() == "\n".join(TRL_PINS):
        return python
    print(f"creating TRL's venv in {VENV} ({', '.join(TRL_PINS)}); a few minutes, once...")
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", *TRL_PINS], check=True)
    marker.write_text("\n".join(TRL_PINS))
    return python


# --- one measurement (a fresh process) ------------------------------------------------


class _GenerateTimer:
    """Wraps a model's `generate` and adds up the seconds spent in it."""

    def __init__(self, model: Any) -> None:
        self.seconds = 0.0
        self._generate = model.generate
        model.generate = self

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return self._generate(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - started


def measure_ours(args: argparse.Namespace) -> list[dict[str, float]]:
    """Warm-up + timed steps of our trainer (`RLTrainer.train_step`), `args.variant`."""
    from lco_core.callbacks import Callbacks
    from lco_core.runner import build_trainer
    from lco_core.tasks import get_task
    from lco_spec.job import parse_job_spec

    grader = get_task("addition").grader()  # exact match, as TRL's reward function below
    hp = {
        "algorithm": args.variant,
        "rollout_engine": "hf",
        "batch_size": args.prompts,
        "n_samples": args.samples,
        "max_completion_tokens": args.tokens,
        "max_steps": 1 + args.steps,
        "learning_rate": LEARNING_RATE,
        "temperature": 1.0,
        "kl_coef": 0.0,
    }
    spec = parse_job_spec(
        {
            "model": args.model_dir,
            "training_file": args.data,
            "seed": 0,
            "method": {
                "type": "reinforcement",
                "reinforcement": {"grader": grader, "hyperparameters": hp},
            },
        }
    )
    rows = []
    with tempfile.TemporaryDirectory() as out:
        trainer: Any = build_trainer(
            spec,
            training_file=Path(args.data),
            validation_file=None,
            output_dir=Path(out),
            callbacks=Callbacks(),
            device="cpu",
        )
        timer = _GenerateTimer(trainer.model)
        for step in range(1, 2 + args.steps):
            timer.seconds = 0.0
            started = time.perf_counter()
            metrics = trainer.train_step(step)
            total = time.perf_counter() - started
            tokens = metrics["response_len_mean"] * args.prompts * args.samples
            rows.append({"step_s": total, "generate_s": timer.seconds, "tokens": tokens})
        trainer.close()
    return rows


def measure_trl(args: argparse.Namespace) -> list[dict[str, float]]:
    """Warm-up + timed steps of TRL's GRPOTrainer (run by TRL's venv's python)."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    items = [json.loads(line) for line in Path(args.data).read_text().splitlines()]
    dataset = Dataset.from_list([{"prompt": i["messages"], "answer": i["answer"]} for i in items])

    def exact(completions: list[Any], answer: list[str], **_: Any) -> list[float]:
        return [float(c[0]["content"] == a) for c, a in zip(completions, answer, strict=True)]

    model = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(args.model_dir)
    timer = _GenerateTimer(model)
    rows: list[dict[str, float]] = []

    class Steps(TrainerCallback):
        def on_step_begin(self, *_: Any, **__: Any) -> None:
            timer.seconds = 0.0
            self.started = time.perf_counter()

        def on_step_end(self, *_: Any, **__: Any) -> None:
            rows.append({"step_s": time.perf_counter() - self.started, "generate_s": timer.seconds})

    with tempfile.TemporaryDirectory() as out:
        config = GRPOConfig(
            output_dir=out,
            per_device_train_batch_size=args.prompts * args.samples,
            num_generations=args.samples,
            gradient_accumulation_steps=1,
            steps_per_generation=1,
            num_iterations=1,
            max_completion_length=args.tokens,
            temperature=1.0,
            beta=0.0,
            learning_rate=LEARNING_RATE,
            max_steps=1 + args.steps,
            logging_steps=1,
            save_strategy="no",
            report_to="none",
            use_cpu=True,
            bf16=False,
            seed=0,
            dataloader_num_workers=0,
        )
        trainer = GRPOTrainer(
            model=model,
            reward_funcs=exact,
            args=config,
            train_dataset=dataset,
            processing_class=tokenizer,
            callbacks=[Steps()],
        )
        trainer.train()
        # Completion lengths per step, from TRL's own log.
        lengths = [h["completions/mean_length"] for h in trainer.state.log_history if
                   "completions/mean_length" in h]  # fmt: skip
    for row, length in zip(rows, lengths, strict=False):
        row["tokens"] = length * args.prompts * args.samples
    return rows


def child(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    torch.set_num_threads(args.threads)
    rows = measure_trl(args) if args.variant == "trl" else measure_ours(args)
    return {"variant": args.variant, "steps": rows, "peak_rss_gb": peak_rss_gb()}


# --- the driver -----------------------------------------------------------------------


def run_child(
    python: Path, variant: str, model: Path, data: Path, args: argparse.Namespace
) -> dict[str, Any]:
    cmd = [
        str(python),
        __file__,
        "--child",
        variant,
        "--model-dir",
        str(model),
        "--data",
        str(data),
    ]
    for flag in ("prompts", "samples", "tokens", "steps", "threads"):
        cmd += [f"--{flag}", str(getattr(args, flag))]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "TOKENIZERS_PARALLELISM": "false"}
    env["PYTHONPATH"] = str(REPO) if variant != "trl" else ""
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"{variant} failed (exit {proc.returncode})")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def summarize(results: list[dict[str, Any]]) -> dict[str, float]:
    """Medians over the timed steps (each process's first step is its warm-up)."""
    timed = [row for r in results for row in r["steps"][1:]]
    step = statistics.median(r["step_s"] for r in timed)
    gen = statistics.median(r["generate_s"] for r in timed)
    return {
        "step_s": step,
        "generate_s": gen,
        "rest_s": statistics.median(r["step_s"] - r["generate_s"] for r in timed),
        "tokens": statistics.median(r.get("tokens", float("nan")) for r in timed),
        "peak_rss_gb": max(r["peak_rss_gb"] for r in results),
        "n": len(timed),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="tiny,qwen25m", help="tiny, qwen25m, smollm2")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--steps", type=int, default=0, help="timed steps (0: per model)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", help="also write the figures here")
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.variant = args.child
        print(json.dumps(child(args)))
        return 0
    trl_python = ensure_trl_venv()
    CACHE.mkdir(parents=True, exist_ok=True)
    data = CACHE / "addition.jsonl"
    write_data(data)
    default_steps = {"tiny": 20, "qwen25m": 8, "smollm2": 2}
    figures: dict[str, dict[str, dict[str, float]]] = {}
    for name in args.models.split(","):
        model = model_dir(name)
        steps = args.steps or default_steps[name]
        run_args = argparse.Namespace(**{**vars(args), "steps": steps})
        results: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANTS}
        for repeat in range(args.repeats):
            for variant in VARIANTS:
                print(f"{name} [{repeat + 1}/{args.repeats}] {variant} ...", flush=True)
                python = trl_python if variant == "trl" else Path(sys.executable)
                results[variant].append(run_child(python, variant, model, data, run_args))
        figures[name] = {v: summarize(rs) for v, rs in results.items()}
        report(name, figures[name], args, steps)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    return 0


def report(
    name: str, fig: dict[str, dict[str, float]], args: argparse.Namespace, steps: int
) -> None:
    print(
        f"\n{name}: {args.prompts} prompts x {args.samples} samples x <= {args.tokens} tokens, "
        f"{args.threads} threads, median of {fig['trl']['n']:.0f} timed steps "
        f"({args.repeats} x {steps})"
    )
    print("| trainer | s/step | generate | rest | tokens/step | peak RSS GB |")
    print("|---|---|---|---|---|---|")
    labels = {"trl": "TRL 1.16 GRPOTrainer", "grpo": "ours, GRPO", "lco": "ours, LCO"}
    for variant in VARIANTS:
        f = fig[variant]
        print(
            f"| {labels[variant]} | {f['step_s']:.2f} | {f['generate_s']:.2f} | {f['rest_s']:.2f} "
            f"| {f['tokens']:.0f} | {f['peak_rss_gb']:.2f} |"
        )
    grpo_trl = fig["grpo"]["step_s"] / fig["trl"]["step_s"]
    lco_grpo = fig["lco"]["step_s"] / fig["grpo"]["step_s"]
    print(f"ours GRPO / TRL = {grpo_trl:.2f} (target <= 1.0); LCO / GRPO = {lco_grpo:.2f} "
          "(target <= 1.05)")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
