"""Why does LCO raise token entropy when it starts from an SFT'd policy? The demo's LCO stage,
run locally with the knobs that could cause or stop it, several seeds each.

    .venv/bin/python scripts/entropy_after_sft.py                    # ~15 min on 2 idle cores
    .venv/bin/python scripts/entropy_after_sft.py --seeds 1 --steps 32 --variants default grpo

The recipe is `scripts/demo.py`'s lco-tiny one: an SFT job (512 `addition` examples, one
epoch of 16, learning-rate multiplier 0.3, seed 1), trained once and cached under `--work`,
then LCO jobs from it: 8 prompts x 8 samples of up to 6 tokens a step, lr 1e-4, HF
rollouts, greedy evaluation on 128 held-out prompts before and after. Each variant changes
one knob from the job defaults (see VARIANTS). Per step the trainer logs the token entropy
of the policy that sampled (`entropy`, nats), the mean probability of the sampled tokens
(`sampled_prob`), KL to the old and the initial policy and the sampled reward; the table
gives each one's mean over the first and the last `--window` steps, averaged over seeds,
with the greedy reward before and after.

Runs are independent jobs (`run_job`); `--workers 2` runs two at once, one thread each. A
finished run leaves `result.json` and is not trained again (delete `--work` to start over).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

# name -> (algorithm, hyperparameters over the demo's). "default" is what a job gets today.
VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "grpo": {"algorithm": "grpo"},
    "beta 10": {"beta": 10.0},
    "split_pos_neg": {"split_pos_neg": True},
    "vocab_advantage estimate": {"vocab_advantage": "estimate"},
    "lr 3e-5": {"learning_rate": 3e-5},
    "lco_mse": {"lco_loss": "lco_mse"},
}
DEMO_LCO = {
    "batch_size": 8,
    "n_samples": 8,
    "max_completion_tokens": 6,
    "eval_samples": 128,
    "learning_rate": 1e-4,
    "rollout_engine": "hf",
    "diagnostic_interval": 1,
}
KEYS = ("entropy", "sampled_prob", "kl_old", "kl_init", "reward_mean")


def data(work: Path) -> dict[str, Path]:
    from lco_core.tasks import get_task, write_jsonl

    task = get_task("addition")
    work.mkdir(parents=True, exist_ok=True)
    files = {
        "sft": (task.sft_examples, 512, 11),
        "rl": (task.examples, 512, 1),
        "val": (task.examples, 128, 99),
    }
    out = {}
    for name, (make, n, seed) in files.items():
        path = work / f"{name}.jsonl"
        if not path.exists():
            write_jsonl(make(n, seed=seed), path)
        out[name] = path
    return out


def sft_model(work: Path) -> str:
    """The demo's SFT stage, trained once: the dir of its final checkpoint."""
    from lco_core.runner import run_job
    from lco_spec.job import parse_job_spec

    done = work / "sft" / "model.txt"
    if done.exists():
        return done.read_text().strip()
    files = data(work)
    hp = {"n_epochs": 1, "batch_size": 16, "learning_rate_multiplier": 0.3}
    spec = parse_job_spec(
        {"model": "lco-tiny", "training_file": str(files["sft"]), "seed": 1,
         "method": {"type": "supervised", "supervised": {"hyperparameters": hp}}}
    )  # fmt: skip
    print("training the SFT model (once) ...", flush=True)
    result = run_job(
        spec,
        training_file=files["sft"],
        validation_file=None,
        output_dir=work / "sft" / "out",
        device="cpu",
    )
    assert result.final_checkpoint is not None
    done.write_text(str(result.final_checkpoint))
    return str(result.final_checkpoint)


def train(run_dir: str, body: dict[str, Any], model: str) -> dict[str, Any]:
    """One LCO/GRPO run from the SFT model; writes `result.json` beside its metrics."""
    import torch

    from lco_core.runner import run_job
    from lco_spec.job import parse_job_spec

    torch.set_num_threads(1)
    path = Path(run_dir)
    started = time.perf_counter()
    result = run_job(
        parse_job_spec(body),
        training_file=Path(body["training_file"]),
        validation_file=Path(body["validation_file"]),
        output_dir=path / "out",
        model_path=model,
        device="cpu",
    )
    metrics = [json.loads(x) for x in (path / "out" / "metrics.jsonl").read_text().splitlines()]
    record = {"summary": result.summary, "metrics": metrics, "body": body,
              "wall_s": time.perf_counter() - started}  # fmt: skip
    (path / "result.json").write_text(json.dumps(record))
    return record


def window_mean(metrics: list[dict[str, Any]], key: str, n: int, last: bool) -> float:
    xs = [m[key] for m in metrics if key in m]
    xs = xs[-n:] if last else xs[:n]
    return statistics.fmean(xs) if xs else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", default=str(ROOT / ".cache" / "entropy-after-sft"))
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--steps", type=int, default=128, help="LCO steps (the demo: 128)")
    parser.add_argument("--window", type=int, default=10, help="steps averaged at each end")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--start", choices=["sft", "base"], default="sft", help="base: from lco-tiny itself"
    )
    args = parser.parse_args()
    from lco_core.models import resolve_model
    from lco_core.tasks import get_task

    work = Path(args.work)
    files = data(work)
    model = sft_model(work) if args.start == "sft" else resolve_model("lco-tiny")
    jobs = {}
    for name in args.variants:
        for seed in args.seeds:
            hp = DEMO_LCO | {"max_steps": args.steps, "eval_interval": args.steps} | VARIANTS[name]
            algorithm = hp.pop("algorithm", "lco")
            body = {"model": "lco-tiny", "training_file": str(files["rl"]),
                    "validation_file": str(files["val"]), "seed": seed,
                    "method": {"type": "reinforcement", "reinforcement": {
                        "grader": get_task("addition").grader(),
                        "hyperparameters": {"algorithm": algorithm, **hp}}}}  # fmt: skip
            slug = f"{args.start}-{name.replace(' ', '_')}-{args.steps}"
            run_dir = work / "runs" / slug / f"seed-{seed}"
            run_dir.mkdir(parents=True, exist_ok=True)
            jobs[(name, seed)] = (run_dir, body)
    records: dict[tuple[str, int], dict[str, Any]] = {}
    todo = []
    for key, (run_dir, body) in jobs.items():
        file = run_dir / "result.json"
        if file.exists() and json.loads(file.read_text())["body"] == body:
            records[key] = json.loads(file.read_text())
        else:
            todo.append(key)
    with ProcessPoolExecutor(args.workers, mp_context=get_context("spawn")) as pool:
        futures = {pool.submit(train, str(jobs[k][0]), jobs[k][1], model): k for k in todo}
        for future in as_completed(futures):
            key = futures[future]
            records[key] = future.result()
            s = records[key]["summary"]
            print(f"{key[0]} seed {key[1]}: {records[key]['wall_s']:.0f} s, greedy "
                  f"{s['initial_eval_reward']:.3f} -> {s['final_eval_reward']:.3f}", flush=True)  # fmt: skip

    w = args.window
    start = "the SFT'd lco-tiny" if args.start == "sft" else "lco-tiny (no SFT)"
    print(f"\nfrom {start}, {args.steps} steps, seeds {args.seeds}; first/last "
          f"{w} steps, mean over seeds")  # fmt: skip
    print("| run | entropy | sampled-token prob | KL to initial (last) | sampled reward | "
          "greedy reward |\n|---|---|---|---|---|---|")  # fmt: skip
    table = {}
    for name in args.variants:
        rows = [records[(name, s)] for s in args.seeds]

        def avg(key: str, last: bool, rows: list[dict[str, Any]] = rows) -> float:
            return statistics.fmean(window_mean(r["metrics"], key, w, last) for r in rows)

        def summ(key: str, rows: list[dict[str, Any]] = rows) -> float:
            return statistics.fmean(r["summary"][key] for r in rows)

        row = {k: (avg(k, False), avg(k, True)) for k in KEYS}
        row["greedy"] = (summ("initial_eval_reward"), summ("final_eval_reward"))
        table[name] = row
        print(f"| {name} | {row['entropy'][0]:.2f} -> {row['entropy'][1]:.2f} | "
              f"{row['sampled_prob'][0]:.3f} -> {row['sampled_prob'][1]:.3f} | "
              f"{row['kl_init'][1]:.3f} | "
              f"{row['reward_mean'][0]:.3f} -> {row['reward_mean'][1]:.3f} | "
              f"{row['greedy'][0]:.3f} -> {row['greedy'][1]:.3f} |")  # fmt: skip
    print(json.dumps({"start": args.start, "steps": args.steps, "seeds": args.seeds,
                      "table": table}))  # fmt: skip


if __name__ == "__main__":
    main()
