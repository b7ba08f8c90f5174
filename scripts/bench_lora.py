"""Benchmark: one LCO step with a LoRA r=16 adapter vs the full fine-tune, same batch, same run.

    .venv/bin/python scripts/bench_lora.py                      # SmolLM2-135M, CPU, ~4 min
    .venv/bin/python scripts/bench_lora.py --micro-batch-size 1 # one sequence per forward
    .venv/bin/python scripts/bench_lora.py --model lco-tiny --repeats 5

Each variant runs in a fresh process (so peak memory is its own), built by the trainer's
real `build_trainer` from the same job spec but for `lora`: SmolLM2-135M-Instruct (the
real-model fixture, imported once into `.cache/models`), 4 prompts x 8 samples of up to 24
tokens of reasoning-gym `basic_arithmetic`, HF rollouts, seed 1. The rollouts of step 2
are generated once and then replayed (an engine that caches them), so every timed step
trains on the same completions in both variants; a LoRA adapter starts with B = 0, so the
two variants' first rollouts are the same tokens too.

Reported per variant: peak RSS of the process (`ru_maxrss`: weights, gradients, AdamW
state, activations, libraries), the peak RSS above the process's RSS once the trainer was
built (sampled every millisecond: what training adds), trainable parameters, and the
median time of a training step (reward, logprobs, update, optimiser step) over `--repeats`
steps after one warm-up step. Then the LoRA/full ratios; the targets are peak memory
<= 0.5x and step time <= 0.9x. `--micro-batch-size` (default auto: the trainer's
activation budget) and `--gradient-checkpointing` apply to both variants alike.

    .venv/bin/python scripts/bench_lora.py --vllm               # vLLM: merged sync vs adapters

`--vllm` compares the two ways a LoRA job's rollouts can run on vLLM (CPU here), on a rank-16
adapter with random B (a trained adapter's stand-in): (a) what the service does, the adapter
folded into the weights and synced into the engine after each update (`engine_state_dict`,
an in-place reload plus the post-sync probe), and (b) vLLM's own LoRA support
(`enable_lora`; a new adapter id per update, the adapter saved and loaded by the engine).
For each: the time of one sync (update -> engine serving it), the generation rate of a
step's rollouts, and the largest |vLLM logprob - trainer logprob| over the sampled tokens.

    .venv/bin/python scripts/bench_lora.py --reward --model lco-tiny --steps 150   # ~15 min

`--reward` trains LCO twice with the same budget, full and LoRA r=16 (auto learning rate,
10x), and prints the greedy held-out reward before and after with the 95% interval of the
gain (normal approximation of two means of n rewards in [0, 1], as the real-model service
test). lco-tiny: the README's recipe (`addition`, 512 training and 128 held-out prompts,
8 prompts x 8 samples of 6 tokens, beta 2, lr 1e-4, seed 1, HF rollouts). smollm2: the
service test's (`basic_arithmetic` small, 4 x 8 samples of 24 tokens, lr 2e-5, vLLM).
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
    """The local dir of `name` (smollm2: the real-model fixture, imported once)."""
    if name != "smollm2":
        from lco_core.models import resolve_model

        return resolve_model(name)
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
        "gradient_checkpointing": args.gradient_checkpointing,
        "micro_batch_size": args.micro_batch_size or "auto",
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
        metrics = trainer.train_step(2)  # step 1 would run the diagnostics too
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
        "micro_batch_size": metrics["micro_batch_size"],
    }


def trainer_logprobs(model: Any, prompts: list[list[int]], groups: Any) -> list[float]:
    """The trainer model's log-probability of every sampled token, for parity checks."""
    import torch

    out: list[float] = []
    with torch.no_grad():
        for prompt, group in zip(prompts, groups, strict=True):
            for c in group:
                ids = torch.tensor([prompt + c.token_ids])
                logp = torch.log_softmax(model(ids).logits[0].float(), -1)
                rows = torch.arange(len(prompt) - 1, len(prompt) - 1 + len(c.token_ids))
                out += logp[rows, torch.tensor(c.token_ids)].tolist()
    return out


def vllm_compare(args: argparse.Namespace) -> dict[str, Any]:
    """(a) merged weights synced vs (b) vLLM LoRA adapters; see the module docstring."""
    import torch
    from vllm import SamplingParams as VSamplingParams
    from vllm.inputs import TokensPrompt
    from vllm.lora.request import LoRARequest

    from lco_core.data import encode_prompt
    from lco_core.lora import add_adapter, trainer_model
    from lco_core.models import load_model_and_tokenizer
    from lco_core.rg_tasks import export_rg, preset
    from lco_core.rollout import SamplingParams
    from lco_core.vllm_engine import VLLMEngine
    from lco_spec.job import LoraConfig

    path = model_path(args.model)
    model, tokenizer = load_model_and_tokenizer(path)
    adapter = add_adapter(model, LoraConfig(r=args.r), seed=1, param="lora")
    with torch.no_grad():
        for name, p in adapter.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)
    inner = trainer_model(adapter).eval()
    rows = export_rg("basic_arithmetic", 4, 1, 1, **preset("basic_arithmetic", "small"))[0]
    prompts = [encode_prompt(tokenizer, row["messages"]) for row in rows]
    params = SamplingParams(n=8, temperature=1.0, max_tokens=24, seed=7)
    work = Path(tempfile.mkdtemp(prefix="bench-lora-vllm-"))

    def timed(fn: Any) -> tuple[Any, float]:
        started = time.perf_counter()
        result = fn()
        return result, time.perf_counter() - started

    def rate(groups: Any, seconds: float) -> float:
        return sum(len(c.token_ids) for g in groups for c in g) / seconds

    def parity(groups: Any) -> float:
        engine_lp = [lp for g in groups for c in g for lp in c.logprobs]
        mine = trainer_logprobs(inner, prompts, groups)
        return max(abs(a - b) for a, b in zip(engine_lp, mine, strict=True))

    result: dict[str, Any] = {"model": args.model, "r": args.r}
    merged = VLLMEngine.from_model(inner, tokenizer, seed=1)
    try:
        syncs = [timed(lambda: merged.sync_weights(inner))[1] for _ in range(2)]
        merged.generate(prompts, params)  # warm-up
        groups, seconds = timed(lambda: merged.generate(prompts, params))
        assert merged.last_sync is not None
        result["merged"] = {"sync_s": syncs[-1], "tokens_per_s": rate(groups, seconds),
                            "max_logprob_diff": parity(groups),
                            "probe_diff": merged.last_sync.probe_max_abs_diff}  # fmt: skip
    finally:
        merged.close()

    lora_kwargs = {"enable_lora": True, "max_lora_rank": args.r, "max_loras": 1}
    native = VLLMEngine(path, tokenizer, seed=1, llm_kwargs=lora_kwargs)
    try:

        def generate(version: int) -> Any:
            request = LoRARequest(f"v{version}", version, str(work / f"v{version}"))
            per_prompt = [
                VSamplingParams(
                    n=8,
                    temperature=1.0,
                    top_p=1.0,
                    top_k=0,
                    max_tokens=24,
                    seed=7 + i,
                    stop_token_ids=native.eos_ids,
                    logprobs=0,
                    detokenize=False,
                )
                for i in range(len(prompts))
            ]
            outs = native.llm.generate(
                [TokensPrompt(prompt_token_ids=p) for p in prompts], per_prompt,
                lora_request=request, use_tqdm=False,
            )  # fmt: skip
            return [[native._completion(c) for c in out.outputs] for out in outs]

        sync = []
        for version in (1, 2, 3):  # an update each: save the adapter, serve it under a new id
            _, save_s = timed(lambda v=version: adapter.save_pretrained(work / f"v{v}"))
            _, first_s = timed(lambda v=version: generate(v))
            groups, steady_s = timed(lambda v=version: generate(v))
            sync.append(save_s + max(first_s - steady_s, 0.0))
        result["adapters"] = {"sync_s": sync[-1], "tokens_per_s": rate(groups, steady_s),
                              "max_logprob_diff": parity(groups)}  # fmt: skip
    finally:
        native.close()
    return result


def gain_interval(before: float, after: float, n: int) -> tuple[float, float]:
    """95% interval of after - before (tests/test_real_model_service.py's approximation)."""

    def var(p: float) -> float:
        return min(max(p, 0.0), 1.0) * (1 - min(max(p, 0.0), 1.0)) / n

    half = 1.96 * (var(before) + var(after)) ** 0.5
    return after - before - half, after - before + half


def reward_compare(args: argparse.Namespace) -> dict[str, Any]:
    """Full vs LoRA LCO with the same budget; see the module docstring."""
    from lco_core.runner import run_job
    from lco_core.tasks import get_task, write_jsonl
    from lco_spec.job import parse_job_spec

    work = Path(tempfile.mkdtemp(prefix="bench-lora-reward-"))
    train, val = work / "train.jsonl", work / "val.jsonl"
    hp: dict[str, Any] = {"max_steps": args.steps, "eval_interval": args.steps,
                          "checkpoint_interval": args.steps, "beta": 2.0}  # fmt: skip
    if args.model == "lco-tiny":
        task = get_task("addition")
        write_jsonl(task.examples(512, seed=1), train)
        write_jsonl(task.examples(128, seed=99), val)
        grader, n_eval, lr = task.grader(), 128, 1e-4
        hp |= {"batch_size": 8, "n_samples": 8, "max_completion_tokens": 6,
               "rollout_engine": "hf"}  # fmt: skip
    else:
        from lco_core.rg_tasks import export_rg, preset

        rows, val_rows, _, _, grader = export_rg(
            "basic_arithmetic", 512, 128, 1, **preset("basic_arithmetic", "small")
        )
        train.write_text("".join(json.dumps(r) + "\n" for r in rows))
        val.write_text("".join(json.dumps(r) + "\n" for r in val_rows))
        n_eval, lr = 128, 2e-5
        hp |= {"batch_size": 4, "n_samples": 8, "max_completion_tokens": 24,
               "rollout_engine": "vllm"}  # fmt: skip
    hp["eval_samples"] = n_eval
    found: dict[str, Any] = {}
    from lco_spec.train_config import LORA_LR_FACTOR

    lora = {"lora": {"r": args.r}, "learning_rate": lr * LORA_LR_FACTOR}
    for name, extra in (("full", {"learning_rate": lr}), ("lora", lora)):
        spec = parse_job_spec(
            {"model": args.model, "training_file": str(train), "validation_file": str(val),
             "seed": 1, "method": {"type": "lco", "lco": {"grader": grader,
                                                          "hyperparameters": hp | extra}}}
        )  # fmt: skip
        started = time.perf_counter()
        result = run_job(
            spec,
            training_file=train,
            validation_file=val,
            output_dir=work / name,
            model_path=model_path(args.model),
        )
        before = result.summary["initial_eval_reward"]
        after = result.summary["final_eval_reward"]
        low, high = gain_interval(before, after, n_eval)
        found[name] = {"before": before, "after": after, "gain": after - before,
                       "ci95": [low, high], "seconds": time.perf_counter() - started}  # fmt: skip
        print(f"{name:<5} reward {before:.3f} -> {after:.3f} (gain {after - before:+.3f}, 95% "
              f"[{low:+.3f}, {high:+.3f}]) in {found[name]['seconds']:.0f} s", flush=True)  # fmt: skip
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2", help="smollm2, lco-tiny or a model dir")
    parser.add_argument("--r", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--vllm", action="store_true", help="merged sync vs vLLM adapters")
    parser.add_argument("--reward", action="store_true", help="held-out reward, full vs LoRA")
    parser.add_argument("--steps", type=int, default=150, help="--reward: steps per run")
    parser.add_argument(
        "--gradient-checkpointing", action="store_true", help="both variants recompute activations"
    )
    parser.add_argument(
        "--micro-batch-size", type=int, default=0, help="sequences per forward (0: auto)"
    )
    parser.add_argument("--variant", choices=["full", "lora"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.reward:
        print(json.dumps(reward_compare(args)))
        return
    if args.vllm:
        found = vllm_compare(args)
        for way in ("merged", "adapters"):
            row = found[way]
            print(f"{way:<9} sync {row['sync_s']:.2f} s, {row['tokens_per_s']:.0f} tokens/s, "
                  f"max |logprob diff| {row['max_logprob_diff']:.2e}")  # fmt: skip
        print(json.dumps(found))
        return
    if args.variant:
        print(json.dumps(child(args)))
        return
    rows = {}
    for variant in ("full", "lora"):
        cmd = [sys.executable, __file__, "--variant", variant, "--model", args.model,
               "--r", str(args.r), "--repeats", str(args.repeats),
               "--threads", str(args.threads)]  # fmt: skip
        cmd += ["--gradient-checkpointing"] if args.gradient_checkpointing else []
        cmd += ["--micro-batch-size", str(args.micro_batch_size)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT)
        rows[variant] = json.loads(out.stdout.strip().splitlines()[-1])
    header = f"{'variant':<10}{'trainable':>14}{'peak RSS MB':>13}{'train +MB':>11}{'step s':>9}"
    gc = ", gradient checkpointing" if args.gradient_checkpointing else ""
    print(f"model {args.model}, LCO, 4 prompts x 8 samples x 24 tokens, r={args.r}{gc}")
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
