"""The stability study: LCO's three losses and the RL baselines, tuned alike, then compared
on held-out seeds in two settings and on a second model and task.

    lco experiment stability                 # the whole study (see PRESETS for its budget)
    lco experiment stability --preset quick  # the CI-sized pipeline check

Three stages, each a set of ordinary jobs:
1. **Tuning** (`tune/`): every algorithm gets the same grid budget over its own knobs
   (`tuning.py`: learning rate for all, and `beta` for LCO; the others more learning rates) on
   the tuning seeds, one update per batch; the rule in `tuning.RULE`, fixed before the runs,
   picks each algorithm's setting.
2. **Held-out seeds** (`single/`, `reuse/`): the chosen settings on other seeds, with one
   update per rollout batch (`single`) and in the stress setting that reuses each batch for
   several updates (`reuse`, `ppo_epochs` 4).
3. **A second model and task** (`real/`, when the preset has one): the same chosen settings
   (the learning rate as the same multiple of that model's default) and both settings again.

The study writes each run's `job.yaml` (the body `lco train` and `POST
/v1/fine_tuning/jobs` take) and trains it through `lco_core.runner.run_job`, so one run can
be reproduced alone with `lco train --config RUN/job.yaml --output RUN2`. All algorithms get
the same rollout budget (steps x prompts x samples).

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

from lco_core.experiments.analysis import Rules, RunData, summarize_run
from lco_core.experiments.tuning import Candidate, Score, choose, score, tuning_grid
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
TUNE = Setting("tune", 1, "tuning runs: one update per rollout batch, tuning seeds")
RG_PREFIX = "rg:"
DEFAULT_CANDIDATE = Candidate(1.0)  # the job defaults: an untuned stage's setting


def _knobs() -> dict[str, tuple[float, ...]]:
    # beta: the default and a 5x softer target.
    return {"beta": (2.0, 10.0)}


@dataclass(frozen=True)
class StudyConfig:
    """What one stage of the study runs. Hyperparameters not named here are the job spec's
    defaults; a tuned candidate's learning-rate multiplier and knob override them."""

    algorithms: tuple[str, ...] = LCO_LOSSES + BASELINES
    seeds: tuple[int, ...] = (1, 2, 3, 4, 5)  # held-out seeds
    settings: tuple[Setting, ...] = (SINGLE, REUSE)
    model: str = "lco-tiny"  # lco-tiny, smollm2 (the packaged fixture) or a model dir
    task: str = "addition"  # a built-in task or rg:<dataset> (reasoning-gym, preset small)
    steps: int = 100
    batch_size: int = 8  # prompts per step
    n_samples: int = 8  # samples per prompt (GRPO/LCO groups; PPO too, for one budget)
    max_completion_tokens: int = 6
    eval_interval: int = 10  # the final reward is the mean of the last 3 evaluations
    eval_samples: int = 512  # held-out prompts, greedy
    n_train: int = 1000
    data_seed: int = 0
    # One base learning rate for every algorithm (a candidate's multiplier applies to it);
    # None: each algorithm's size-based default of `lco_spec.train_config.BASE_LR`. A
    # stage whose defaults differ by algorithm (the real-model table: LCO 2e-5, the rest
    # 1e-6) would otherwise hand one side a 20x larger step before any tuning.
    learning_rate: float | None = None
    # Tuning: seeds and grid (tuning.py). No tune_seeds: the stage takes its candidates
    # from the stage before it (or the defaults).
    tune_seeds: tuple[int, ...] = (101, 102)
    lr_factors: tuple[float, ...] = (0.3, 1.0, 3.0)
    knob_values: dict[str, tuple[float, ...]] = field(default_factory=_knobs)
    # The next stage: the chosen settings on another model and task.
    real: StudyConfig | None = None
    # Re-train this many runs into a scratch dir and compare them with the study's own,
    # so the report states measured (not assumed) run-to-run reproducibility.
    repeat_runs: int = 1

    def describe(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "task": self.task,
            "algorithms": list(self.algorithms),
            "held-out seeds": list(self.seeds),
            "settings": {s.name: s.description for s in self.settings},
            "steps": self.steps,
            "prompts per step": self.batch_size,
            "samples per prompt": self.n_samples,
            "rollouts per run": self.steps * self.batch_size * self.n_samples,
            "max completion tokens": self.max_completion_tokens,
            "base learning rate": "each algorithm's default for the model"
            if self.learning_rate is None
            else f"{self.learning_rate:g} for every algorithm",
            "greedy evaluation": f"{self.eval_samples} held-out prompts every "
            f"{self.eval_interval} steps",
            "training prompts": self.n_train,
        }


# The real-model stage: SmolLM2-135M-Instruct on reasoning-gym's basic_arithmetic. Its
# size is set by the study's budget (under 3 hours on 2 idle cores): on one CPU thread a
# step of 16 sequences costs about 22 s with one update and 72 s with four, so the stage
# compares LCO with GRPO (the group baseline its advantages come from) over 10 steps,
# 5 seeds and both settings: 90 minutes with 2 workers, measured.
SMOLLM2_STAGE = StudyConfig(
    algorithms=("lco_kld", "grpo"),
    model="smollm2",
    learning_rate=2e-5,  # the README's SmolLM2 runs, where LCO and GRPO both learned
    task="rg:basic_arithmetic",
    steps=10,
    batch_size=4,
    n_samples=4,
    max_completion_tokens=16,
    eval_interval=5,
    eval_samples=128,
    n_train=256,
    tune_seeds=(),
    repeat_runs=0,
)

# The pipeline on a CI budget: two algorithms (one LCO, one baseline), a 2-point grid, one
# tuning and two held-out seeds, both settings, a few steps, and a second stage on another
# task with the same budget. Its verdicts mean nothing.
_QUICK_STAGE = StudyConfig(
    algorithms=("lco_kld", "grpo"),
    seeds=(1, 2),
    steps=8,
    batch_size=4,
    n_samples=4,
    eval_interval=4,
    eval_samples=16,
    n_train=64,
    tune_seeds=(101,),
    lr_factors=(1.0, 3.0),
    knob_values={"beta": (2.0,)},
)
QUICK = replace(
    _QUICK_STAGE,
    real=replace(_QUICK_STAGE, task="reverse", settings=(SINGLE,), tune_seeds=(), repeat_runs=0),
)

PRESETS: dict[str, StudyConfig] = {
    "full": StudyConfig(real=SMOLLM2_STAGE),
    # The lco-tiny stages alone.
    "tiny": StudyConfig(),
    "quick": QUICK,
}


@dataclass(frozen=True)
class RunKey:
    setting: Setting
    algorithm: str
    seed: int
    candidate: Candidate = DEFAULT_CANDIDATE

    @property
    def name(self) -> str:
        if self.setting == TUNE:
            return f"tune/{self.algorithm}/{self.candidate.label}/seed-{self.seed}"
        return f"{self.setting.name}/{self.algorithm}/seed-{self.seed}"


@dataclass
class StudyResult:
    config: StudyConfig
    runs: list[RunData]
    wall_s: float  # training time of the runs done by this invocation
    trained: int  # runs trained by this invocation (the rest were found complete)
    learning_rates: dict[str, float] = field(default_factory=dict)
    repeat: list[dict[str, Any]] = field(default_factory=list)
    tuning: dict[str, list[Score]] = field(default_factory=dict)  # per algorithm, grid order
    tuning_runs: list[RunData] = field(default_factory=list)
    chosen: dict[str, Candidate] = field(default_factory=dict)
    real: StudyResult | None = None


def run_keys(cfg: StudyConfig, chosen: dict[str, Candidate]) -> list[RunKey]:
    # Seed-major: a study cut short still has every algorithm at its first seeds.
    return [
        RunKey(setting, algorithm, seed, chosen.get(algorithm, DEFAULT_CANDIDATE))
        for seed in cfg.seeds
        for setting in cfg.settings
        for algorithm in cfg.algorithms
    ]


def tuning_keys(cfg: StudyConfig) -> list[RunKey]:
    return [
        RunKey(TUNE, algorithm, seed, candidate)
        for seed in cfg.tune_seeds
        for algorithm in cfg.algorithms
        for candidate in tuning_grid(algorithm, cfg)
    ]


def job_body(
    cfg: StudyConfig, key: RunKey, data_dir: str, grader: dict[str, Any]
) -> dict[str, Any]:
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
        hp["lco_loss"] = key.algorithm
    hp.update(key.candidate.hyperparameters())
    if cfg.learning_rate is not None:
        hp["learning_rate"] = float(f"{cfg.learning_rate * hp.pop('learning_rate_multiplier'):.6g}")
    return {
        "model": model_dir(cfg.model),
        "training_file": f"{data_dir}/rl_train.jsonl",
        "validation_file": f"{data_dir}/rl_val.jsonl",
        "seed": key.seed,
        "method": {
            "type": "reinforcement",
            "reinforcement": {"grader": grader, "hyperparameters": hp},
        },
    }


def model_dir(model: str) -> str:
    """What a job names the model by: lco-tiny or a dir as given; `smollm2` is the packaged
    fixture, imported once into the checkout's `.cache/models` (as the tests do)."""
    if model != "smollm2":
        return model
    from lco_core.model_import import SMOLLM2_NAME, import_cached, packaged_gguf

    cache = Path(__file__).resolve().parents[2] / ".cache" / "models"
    return str(import_cached(packaged_gguf(), cache, SMOLLM2_NAME))


def task_data(cfg: StudyConfig) -> tuple[list[Any], list[Any], dict[str, Any]]:
    """Training and held-out items (disjoint) and the grader of the stage's task."""
    if cfg.task.startswith(RG_PREFIX):
        from lco_core.rg_tasks import export_rg, preset

        name = cfg.task.removeprefix(RG_PREFIX)
        train, val, _, _, grader = export_rg(
            name, cfg.n_train, cfg.eval_samples, cfg.data_seed, **preset(name, "small")
        )
        return train, val, grader
    task = get_task(cfg.task)
    train, val = split_examples(task, cfg.n_train, cfg.eval_samples, seed=cfg.data_seed)
    return train, val, task.grader()


def write_jobs(cfg: StudyConfig, work: Path, keys: Sequence[RunKey]) -> dict[RunKey, Path]:
    """The shared datasets and one job.yaml per run; returns each run's directory."""
    data = work / "data"
    data.mkdir(parents=True, exist_ok=True)
    train, val, grader = task_data(cfg)
    for items, name in ((train, "rl_train.jsonl"), (val, "rl_val.jsonl")):
        _replace_if_changed(write_jsonl(items, data / f".{name}.tmp"), data / name)
    dirs = {}
    for key in keys:
        run_dir = work / "runs" / key.name
        run_dir.mkdir(parents=True, exist_ok=True)
        rel = Path(*[".."] * len(run_dir.relative_to(work).parts)) / "data"
        tmp = run_dir / ".job.yaml.tmp"
        body = job_body(cfg, key, rel.as_posix(), grader)
        tmp.write_text(yaml.safe_dump(body, sort_keys=False))
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
        setting=key.setting.name if key.setting != TUNE else f"tune:{key.candidate.label}",
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


def learning_rates(runs: Sequence[RunData]) -> dict[str, float]:
    """The (peak) learning rate each algorithm's runs trained with, read from their logged
    `lr`, so a report regenerated after the job defaults move still states what ran."""
    rates: dict[str, float] = {}
    for run in runs:
        if run.algorithm not in rates and run.series("lr"):
            rates[run.algorithm] = max(run.series("lr"))
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
    chosen: dict[str, Candidate] | None = None,
    rules: Rules | None = None,
) -> StudyResult:
    """Train every run not yet finished under `work` and load them all (with `train`
    False, only load what has finished: a report on a partial study). Tunes first when
    `cfg.tune_seeds` is set (else uses `chosen`, or the defaults), then the held-out seeds,
    then `cfg.real` under `work/real` with the same choices.

    `on_run(name, record, done, total)` is called as each run finishes (the CLI prints it).
    """
    rules = rules or Rules()
    if fresh:
        for sub in ("runs", "repeat", "real"):
            shutil.rmtree(work / sub, ignore_errors=True)
    started = time.perf_counter()
    trained = 0

    def train_all(keys: list[RunKey]) -> dict[RunKey, Path]:
        nonlocal trained
        dirs = write_jobs(cfg, work, keys)
        todo = [d for key, d in dirs.items() if train and load_run(key, d) is None]
        names = {d: key.name for key, d in dirs.items()}
        done = len(dirs) - len(todo)
        for run_dir, record in _run_all(todo, workers):
            done += 1
            trained += 1
            if on_run is not None:
                on_run(names[run_dir], record, done, len(dirs))
        return dirs

    tuning: dict[str, list[Score]] = {}
    tuning_runs: dict[RunKey, RunData] = {}
    if cfg.tune_seeds:
        tune_dirs = train_all(tuning_keys(cfg))
        tuning_runs = {
            key: r for key, d in tune_dirs.items() if (r := load_run(key, d)) is not None
        }
        chosen = {}
        for algorithm in cfg.algorithms:
            scores = []
            for candidate in tuning_grid(algorithm, cfg):
                found = [
                    summarize_run(r, rules)
                    for key, r in tuning_runs.items()
                    if key.algorithm == algorithm and key.candidate == candidate
                ]
                scores.append(score(candidate, found))
            tuning[algorithm] = scores
            if any(s.n for s in scores):
                chosen[algorithm] = choose(scores, tie=1 / cfg.eval_samples).candidate
    chosen = chosen or {}
    if cfg.tune_seeds and len(chosen) < len(cfg.algorithms):
        # A partial report: the held-out stage waits for the tuning to finish.
        return StudyResult(cfg, [], time.perf_counter() - started, trained, tuning=tuning,
                           tuning_runs=list(tuning_runs.values()), chosen=chosen)  # fmt: skip
    dirs = train_all(run_keys(cfg, chosen))
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
    real = None
    if cfg.real is not None:
        real = run_study(cfg.real, work / "real", workers=workers, train=train, on_run=on_run,
                         chosen=chosen, rules=rules)  # fmt: skip
    return StudyResult(
        config=cfg,
        runs=runs,
        wall_s=time.perf_counter() - started,
        trained=trained,
        learning_rates=learning_rates(runs),
        repeat=repeat,
        tuning=tuning,
        tuning_runs=list(tuning_runs.values()),
        chosen=chosen,
        real=real,
    )


def preset(name: str, **overrides: Any) -> StudyConfig:
    """A named preset with some fields replaced (None values are ignored)."""
    return replace(PRESETS[name], **{k: v for k, v in overrides.items() if v is not None})
