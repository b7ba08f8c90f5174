"""The stability study: LCO's three losses and the RL baselines, several seeds, two settings.

    lco experiment stability                 # the full study (about an hour on 2 CPU cores)
    lco experiment stability --preset quick  # the CI-sized pipeline check

Every run is an ordinary job: the study writes each run's `job.yaml` (the body `lco train`
and `POST /v1/fine_tuning/jobs` take) and trains it through `lco_core.runner.run_job`, so
one run can be reproduced alone with `lco train --config RUN/job.yaml --output RUN2`.
All algorithms get the same rollout budget (steps x prompts x samples) and the lco-tiny
default learning rates of `lco_spec.train_config` (no per-algorithm tuning). Settings: one
update per rollout batch (`single`), and the stress setting that reuses each batch for
several updates (`reuse`, `ppo_epochs` 4).

A finished run leaves `result.json` in its directory; a re-run of the study skips those
(`--fresh` retrains everything), so an interrupted study resumes where it stopped.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import yaml

from lco_core.experiments.analysis import RunData
from lco_core.tasks import get_task, split_examples, write_jsonl

LCO_LOSSES = ("lco_kld", "lco_mse", "lco_logcosh")
BASELINES = ("reinforce", "ppo_clip", "grpo")
# The job spec's `algorithm` for each name the study uses (LCO losses are `lco` + lco_loss).
SPEC_ALGORITHM = {"reinforce": "reinforce", "ppo_clip": "ppo", "grpo": "grpo"}


@dataclass(frozen=True)
class Setting:
    name: str
    ppo_epochs: int
    description: str


SINGLE = Setting("single", 1, "one update per rollout batch")
REUSE = Setting("reuse", 4, "each rollout batch reused for 4 updates (ppo_epochs 4)")


@dataclass(frozen=True)
class StudyConfig:
    """What the study runs. Hyperparameters not named here are the job spec's defaults."""

    algorithms: tuple[str, ...] = LCO_LOSSES + BASELINES
    seeds: tuple[int, ...] = (1, 2, 3)
    settings: tuple[Setting, ...] = (SINGLE, REUSE)
    model: str = "lco-tiny"
    task: str = "addition"
    steps: int = 100
    batch_size: int = 8  # prompts per step
    n_samples: int = 8  # samples per prompt (GRPO/LCO groups; PPO too, for one budget)
    max_completion_tokens: int = 6
    beta: float = 2.0
    eval_interval: int = 20
    eval_samples: int = 128  # held-out prompts, greedy
    n_train: int = 1000
    data_seed: int = 0
    # Re-train this many runs into a scratch dir and compare them with the study's own,
    # so the report states measured (not assumed) run-to-run reproducibility.
    repeat_runs: int = 1

    def describe(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "task": self.task,
            "algorithms": list(self.algorithms),
            "seeds": list(self.seeds),
            "settings": {s.name: s.description for s in self.settings},
            "steps": self.steps,
            "prompts per step": self.batch_size,
            "samples per prompt": self.n_samples,
            "rollouts per run": self.steps * self.batch_size * self.n_samples,
            "max completion tokens": self.max_completion_tokens,
            "beta (LCO)": self.beta,
            "greedy evaluation": f"{self.eval_samples} held-out prompts every "
            f"{self.eval_interval} steps",
            "training prompts": self.n_train,
        }


PRESETS: dict[str, StudyConfig] = {
    "full": StudyConfig(),
    # The pipeline on a CI budget: two algorithms (one LCO, one baseline), one seed, both
    # settings, a few steps. Its verdicts mean nothing (one seed reads as "unclear").
    "quick": StudyConfig(
        algorithms=("lco_kld", "grpo"),
        seeds=(1,),
        steps=16,
        batch_size=4,
        n_samples=4,
        eval_interval=6,
        eval_samples=16,
        n_train=64,
    ),
}


@dataclass(frozen=True)
class RunKey:
    setting: Setting
    algorithm: str
    seed: int

    @property
    def name(self) -> str:
        return f"{self.setting.name}/{self.algorithm}/seed-{self.seed}"


@dataclass
class StudyResult:
    config: StudyConfig
    runs: list[RunData]
    wall_s: float  # training time of the runs done by this invocation
    trained: int  # runs trained by this invocation (the rest were found complete)
    learning_rates: dict[str, float] = field(default_factory=dict)
    repeat: list[dict[str, Any]] = field(default_factory=list)


def run_keys(cfg: StudyConfig) -> list[RunKey]:
    # Seed-major: a study cut short still has every algorithm at its first seeds.
    return [
        RunKey(setting, algorithm, seed)
        for seed in cfg.seeds
        for setting in cfg.settings
        for algorithm in cfg.algorithms
    ]


def job_body(cfg: StudyConfig, key: RunKey, data_dir: str) -> dict[str, Any]:
    """The `lco train` / API job body of one run; file paths relative to the job file."""
    lco = key.algorithm in LCO_LOSSES
    hp: dict[str, Any] = {
        "algorithm": "lco" if lco else SPEC_ALGORITHM[key.algorithm],
        "batch_size": cfg.batch_size,
        "n_samples": cfg.n_samples,
        "max_completion_tokens": cfg.max_completion_tokens,
        "max_steps": cfg.steps,
        "ppo_epochs": key.setting.ppo_epochs,
        "eval_interval": cfg.eval_interval,
        "eval_samples": cfg.eval_samples,
        # Only the final checkpoint: the study reads metrics, not weights.
        "checkpoint_interval": cfg.steps,
        "rollout_engine": "hf",  # the reference engine: identical on every machine
        # The study's claims read the split grad norms, KL to old and to the initial policy
        # at every step.
        "diagnostic_interval": 1,
    }
    if lco:
        hp.update(lco_loss=key.algorithm, beta=cfg.beta)
    return {
        "model": cfg.model,
        "training_file": f"{data_dir}/rl_train.jsonl",
        "validation_file": f"{data_dir}/rl_val.jsonl",
        "seed": key.seed,
        "method": {
            "type": "reinforcement",
            "reinforcement": {"grader": get_task(cfg.task).grader(), "hyperparameters": hp},
        },
    }


def write_jobs(cfg: StudyConfig, work: Path) -> dict[RunKey, Path]:
    """The shared datasets and one job.yaml per run; returns each run's directory."""
    data = work / "data"
    data.mkdir(parents=True, exist_ok=True)
    train, val = split_examples(
        get_task(cfg.task), cfg.n_train, cfg.eval_samples, seed=cfg.data_seed
    )
    for items, name in ((train, "rl_train.jsonl"), (val, "rl_val.jsonl")):
        _replace_if_changed(write_jsonl(items, data / f".{name}.tmp"), data / name)
    dirs = {}
    for key in run_keys(cfg):
        run_dir = work / "runs" / key.name
        run_dir.mkdir(parents=True, exist_ok=True)
        rel = Path(*[".."] * len(run_dir.relative_to(work).parts)) / "data"
        tmp = run_dir / ".job.yaml.tmp"
        tmp.write_text(yaml.safe_dump(job_body(cfg, key, rel.as_posix()), sort_keys=False))
        _replace_if_changed(tmp, run_dir / "job.yaml")
        dirs[key] = run_dir
    return dirs


def _replace_if_changed(tmp: Path, path: Path) -> None:
    """Move `tmp` onto `path` atomically unless `path` already holds the same bytes: a
    report-only invocation beside a running study never disturbs a file a run is reading."""
    if path.is_file() and path.read_bytes() == tmp.read_bytes():
        tmp.unlink()
    else:
        os.replace(tmp, path)


def train_run(run_dir: str) -> dict[str, Any]:
    """Train the job in `run_dir/job.yaml` into `run_dir/out` and write `result.json`.
    A top-level function of plain arguments, so a process pool can run it."""
    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # 36 runs of "Loading weights" bars say nothing
    # One thread per run: the study shares 2 cores, and a fixed thread count keeps the
    # floating-point reduction order (and so the numbers) the same from run to run.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train(Path(run_dir))
    finally:
        torch.set_num_threads(threads)  # in-process runs leave the caller as it was


def _train(path: Path) -> dict[str, Any]:
    from lco_core.cli_train import load_config
    from lco_core.runner import run_job

    out = path / "out"
    shutil.rmtree(out, ignore_errors=True)  # a partial run restarts from scratch
    spec, train, val = load_config(path / "job.yaml")
    started = time.perf_counter()
    result = run_job(spec, training_file=train, validation_file=val, output_dir=out, device="cpu")
    wall = time.perf_counter() - started
    shutil.rmtree(out / "checkpoints", ignore_errors=True)  # weights are not studied
    job = yaml.safe_load((path / "job.yaml").read_text())
    record = {"status": result.status, "wall_s": wall, **result.summary, "job": job}
    (path / "result.json").write_text(json.dumps(record, indent=1) + "\n")
    return record


def load_run(key: RunKey, run_dir: Path) -> RunData | None:
    """The finished run in `run_dir`, or None if it has not finished (or finished a job
    other than the one its job.yaml now holds)."""
    result_file = run_dir / "result.json"
    if not result_file.is_file():
        return None
    record = json.loads(result_file.read_text())
    if record.get("job") != yaml.safe_load((run_dir / "job.yaml").read_text()):
        return None
    metrics = [
        json.loads(line)
        for line in (run_dir / "out" / "metrics.jsonl").read_text().splitlines()
        if line.strip()
    ]
    return RunData(
        algorithm=key.algorithm,
        setting=key.setting.name,
        seed=key.seed,
        metrics=metrics,
        initial_eval=float(record.get("initial_eval_reward", math.nan)),
        final_eval=float(record.get("final_eval_reward", math.nan)),
        wall_s=float(record["wall_s"]),
        finished_at=result_file.stat().st_mtime,
    )


def _run_all(dirs: Sequence[Path], workers: int) -> Iterator[tuple[Path, dict[str, Any]]]:
    if workers <= 1:
        for d in dirs:
            yield d, train_run(str(d))
        return
    # spawn: a fresh interpreter per worker, never a fork of a process holding torch threads.
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        futures = {pool.submit(train_run, str(d)): d for d in dirs}
        for future in as_completed(futures):
            yield futures[future], future.result()


def learning_rates(cfg: StudyConfig, dirs: dict[RunKey, Path]) -> dict[str, float]:
    """The learning rate each algorithm resolves to (the model's defaults, untuned)."""
    from lco_core.cli_train import load_config
    from lco_spec.train_config import resolve_config

    rates = {}
    for key, run_dir in dirs.items():
        if key.algorithm not in rates:
            spec, _, _ = load_config(run_dir / "job.yaml")
            rates[key.algorithm] = resolve_config(spec, n_train=cfg.n_train).learning_rate
    return rates


def compare_runs(a: RunData, b: RunData) -> dict[str, Any]:
    """Largest absolute difference between two runs of one job, per headline metric."""
    keys = ("reward_mean", "grad_norm", "entropy", "kl_old", "kl_init")
    diffs = {
        k: max(
            (abs(x - y) for x, y in zip(a.series(k), b.series(k), strict=True)),
            default=0.0,
        )
        for k in keys
    }
    diffs["final_eval"] = abs(a.final_eval - b.final_eval)
    return diffs


def run_study(
    cfg: StudyConfig,
    work: Path,
    *,
    workers: int = 1,
    fresh: bool = False,
    train: bool = True,
    on_run: Callable[[str, dict[str, Any], int, int], None] | None = None,
) -> StudyResult:
    """Train every run not yet finished under `work` and load them all (with `train`
    False, only load what has finished: a report on a partial study).

    `on_run(name, record, done, total)` is called as each run finishes (the CLI prints it).
    """
    if fresh:
        shutil.rmtree(work / "runs", ignore_errors=True)
        shutil.rmtree(work / "repeat", ignore_errors=True)
    dirs = write_jobs(cfg, work)
    todo = [d for key, d in dirs.items() if train and load_run(key, d) is None]
    names = {d: key.name for key, d in dirs.items()}
    started = time.perf_counter()
    done = len(dirs) - len(todo)
    for run_dir, record in _run_all(todo, workers):
        done += 1
        if on_run is not None:
            on_run(names[run_dir], record, done, len(dirs))
    wall = time.perf_counter() - started
    runs = [r for key, d in dirs.items() if (r := load_run(key, d)) is not None]

    repeat = []
    for key in list(dirs)[: cfg.repeat_runs]:
        again = work / "repeat" / key.name
        if train and load_run(key, again) is None and load_run(key, dirs[key]) is not None:
            again.mkdir(parents=True, exist_ok=True)
            # Same depth under `work` as runs/, so the job's relative data paths still hold.
            shutil.copy(dirs[key] / "job.yaml", again / "job.yaml")
            train_run(str(again))
        first, second = load_run(key, dirs[key]), load_run(key, again)
        if first is not None and second is not None:
            repeat.append({"run": key.name, **compare_runs(first, second)})
    return StudyResult(
        config=cfg,
        runs=runs,
        wall_s=wall,
        trained=len(todo),
        learning_rates=learning_rates(cfg, dirs),
        repeat=repeat,
    )


def preset(name: str, **overrides: Any) -> StudyConfig:
    """A named preset with some fields replaced (None values are ignored)."""
    return replace(PRESETS[name], **{k: v for k, v in overrides.items() if v is not None})
