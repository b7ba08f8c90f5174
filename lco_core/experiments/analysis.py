"""The stability study's numbers: per-run events, per-algorithm summaries and claim verdicts.

Pure Python over the per-step dicts of `metrics.jsonl`, so every rule can be tested on
synthetic series. Each threshold lives in `Rules` and the report prints them, so a verdict
can be re-derived by hand from the data:

    runs = [RunData("lco_kld", "single", 1, metrics, initial_eval=0.3, final_eval=0.5), ...]
    groups = summarize(runs, Rules())

The claim verdicts built on these summaries are in `verdicts.py`.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Outcome = Literal["held", "not held", "unclear"]


@dataclass(frozen=True)
class Rules:
    """Every definition and threshold the report's table and verdicts use."""

    # Sampled reward (64 samples a step) is noisy: events are read on a trailing mean.
    smooth_window: int = 10
    # Collapse event: the smoothed reward falls below `collapse_fraction` of its running
    # best, once that best exceeded `collapse_floor` (no events while the reward is still
    # at noise level). The detector re-arms only after a recovery to `rearm_fraction` of
    # the best, so noise around the threshold counts once.
    collapse_floor: float = 0.1
    collapse_fraction: float = 0.5
    rearm_fraction: float = 0.8
    # Entropy collapse: the smoothed token entropy falls below this fraction of step 1's;
    # entropy explosion: it rises above this multiple of step 1's (the policy flattening).
    entropy_collapse_fraction: float = 0.1
    entropy_explosion_factor: float = 2.0
    # Grad-norm spike: a step whose grad norm exceeds `spike_factor` x the median of all
    # earlier steps (needs `spike_min_history` earlier steps).
    spike_factor: float = 5.0
    spike_min_history: int = 10
    # Grad-norm trend: mean over the last quarter of steps / mean over the first quarter.
    shrink_ratio: float = 0.9
    grow_ratio: float = 1.1
    # A smooth grad-norm trace has at most this many spikes in any one run.
    max_spikes_smooth: int = 1
    # A run's final greedy reward: the mean of its last `final_evals` evaluations (one
    # evaluation moves by 1/prompts per prompt; three smooth a lucky or unlucky one).
    final_evals: int = 3
    # Reward comparisons are paired by seed: the 95% t-interval of the mean per-seed
    # difference. Non-inferior ("at least as good") when its lower end is above
    # -`noninferiority_margin`; inferior when its upper end is below it.
    noninferiority_margin: float = 0.02
    # Runs with a collapse (reward event or entropy collapse) that make a pattern.
    pattern_runs: int = 2


@dataclass
class RunData:
    """One finished run: its per-step metrics and greedy evaluation before and after."""

    algorithm: str
    setting: str
    seed: int
    metrics: list[dict[str, float]]
    initial_eval: float
    final_eval: float
    wall_s: float = 0.0
    finished_at: float = 0.0  # Unix time the run ended

    def series(self, key: str) -> list[float]:
        return [float(m[key]) for m in self.metrics if key in m]


def trailing_mean(xs: Sequence[float], window: int) -> list[float]:
    """Mean of each full window of `window` values ending at each index from window-1 on."""
    if len(xs) < window:
        return [statistics.fmean(xs)] if xs else []
    total = sum(xs[:window])
    out = [total / window]
    for i in range(window, len(xs)):
        total += xs[i] - xs[i - window]
        out.append(total / window)
    return out


def collapse_events(rewards: Sequence[float], rules: Rules) -> int:
    """Times the smoothed reward fell below `collapse_fraction` of its running best."""
    events, best, armed = 0, -math.inf, True
    for value in trailing_mean(rewards, rules.smooth_window):
        best = max(best, value)
        if armed and best >= rules.collapse_floor and value < rules.collapse_fraction * best:
            events += 1
            armed = False
        elif not armed and value >= rules.rearm_fraction * best:
            armed = True
    return events


def entropy_collapsed(entropy: Sequence[float], rules: Rules) -> bool:
    if not entropy or entropy[0] <= 0:
        return False
    smoothed = trailing_mean(entropy, rules.smooth_window)
    return min(smoothed) < rules.entropy_collapse_fraction * entropy[0]


def grad_spikes(norms: Sequence[float], rules: Rules) -> int:
    """Steps whose grad norm exceeds `spike_factor` x the median of all earlier steps."""
    spikes = 0
    for i in range(rules.spike_min_history, len(norms)):
        if norms[i] > rules.spike_factor * statistics.median(norms[:i]):
            spikes += 1
    return spikes


def entropy_exploded(entropy: Sequence[float], rules: Rules) -> bool:
    if not entropy or entropy[0] <= 0:
        return False
    smoothed = trailing_mean(entropy, rules.smooth_window)
    return max(smoothed) > rules.entropy_explosion_factor * entropy[0]


def final_eval(run: RunData, rules: Rules) -> float:
    """Mean of the run's last `final_evals` greedy evaluations (its final one if it logged
    fewer)."""
    evals = run.series("eval_reward")[-rules.final_evals :]
    return statistics.fmean(evals) if evals else run.final_eval


def epoch_ratio(run: RunData) -> float:
    """Median over steps of (grad norm in the last pass over a reused batch) / (first pass);
    nan with one pass per batch."""
    ratios = [
        float(m["grad_norm_last_epoch"]) / float(m["grad_norm_first_epoch"])
        for m in run.metrics
        if m.get("grad_norm_first_epoch", 0) > 0 and "grad_norm_last_epoch" in m
    ]
    return statistics.median(ratios) if ratios else math.nan


def grad_norm_ratio(norms: Sequence[float]) -> float:
    """Mean grad norm over the last quarter of steps / over the first quarter."""
    first, last = _quarters(norms)
    return last / first if first > 0 else math.nan


def zero_signal_trend(runs: Sequence[RunSummary]) -> tuple[float, float]:
    """Mean share of groups whose rewards are all equal, first and last quarter of steps."""
    first = [r.zero_std_early for r in runs if not math.isnan(r.zero_std_early)]
    last = [r.zero_std_late for r in runs if not math.isnan(r.zero_std_late)]
    return (
        statistics.fmean(first) if first else math.nan,
        statistics.fmean(last) if last else math.nan,
    )


def _quarters(xs: Sequence[float]) -> tuple[float, float]:
    if not xs:
        return math.nan, math.nan
    quarter = max(1, len(xs) // 4)
    return statistics.fmean(xs[:quarter]), statistics.fmean(xs[-quarter:])


@dataclass(frozen=True)
class RunSummary:
    algorithm: str
    setting: str
    seed: int
    initial_eval: float
    final_eval: float
    final_sampled: float  # mean sampled reward over the last tenth of the steps
    best_sampled: float  # best smoothed sampled reward
    collapse_events: int
    entropy_collapse: bool
    entropy_explosion: bool
    spikes: int
    grad_norm_ratio: float
    step_time: float  # median seconds per step
    kl_init_final: float
    wall_s: float
    zero_std_early: float = math.nan  # share of zero-spread groups, first quarter of steps
    zero_std_late: float = math.nan  # and last quarter
    epoch_ratio: float = math.nan  # grad norm, last / first pass over a reused batch
    entropy_start: float = math.nan  # token entropy at step 1 and over the last tenth
    entropy_end: float = math.nan
    steps: int = 0  # training steps the run logged

    @property
    def collapsed(self) -> bool:
        return self.collapse_events > 0 or self.entropy_collapse

    @property
    def unstable(self) -> bool:
        """A reward or entropy collapse, or an entropy explosion."""
        return self.collapsed or self.entropy_explosion


def summarize_run(run: RunData, rules: Rules) -> RunSummary:
    rewards = run.series("reward_mean")
    norms = run.series("grad_norm")
    tail = max(1, math.ceil(len(rewards) / 10))
    kl_init = run.series("kl_init")
    entropy = run.series("entropy")
    zero_early, zero_late = _quarters(run.series("zero_std_group_frac"))
    return RunSummary(
        algorithm=run.algorithm,
        setting=run.setting,
        seed=run.seed,
        initial_eval=run.initial_eval,
        final_eval=final_eval(run, rules),
        final_sampled=statistics.fmean(rewards[-tail:]),
        best_sampled=max(trailing_mean(rewards, rules.smooth_window)),
        collapse_events=collapse_events(rewards, rules),
        entropy_collapse=entropy_collapsed(entropy, rules),
        entropy_explosion=entropy_exploded(entropy, rules),
        spikes=grad_spikes(norms, rules),
        grad_norm_ratio=grad_norm_ratio(norms),
        step_time=statistics.median(run.series("time_step")),
        kl_init_final=kl_init[-1] if kl_init else math.nan,
        wall_s=run.wall_s,
        zero_std_early=zero_early,
        zero_std_late=zero_late,
        epoch_ratio=epoch_ratio(run),
        entropy_start=entropy[0] if entropy else math.nan,
        entropy_end=statistics.fmean(entropy[-tail:]) if entropy else math.nan,
        steps=len(rewards),
    )


def identical_pairs(runs: Sequence[RunData]) -> list[tuple[str, str, str]]:
    """(setting, a, b) for algorithms whose runs gave the same per-step reward and grad norm
    for every seed: equivalent updates, worth saying so rather than counting them twice."""
    by: dict[tuple[str, str], dict[int, RunData]] = {}
    for r in runs:
        by.setdefault((r.setting, r.algorithm), {})[r.seed] = r
    pairs = []
    keys = list(by)
    for i, (setting, a) in enumerate(keys):
        for other_setting, b in keys[i + 1 :]:
            x, y = by[(setting, a)], by[(other_setting, b)]
            if other_setting != setting or x.keys() != y.keys():
                continue
            if all(
                x[k].series(m) == y[k].series(m) for k in x for m in ("reward_mean", "grad_norm")
            ):
                pairs.append((setting, a, b))
    return pairs


# Two-sided 95% quantiles of Student's t by degrees of freedom (1-30); the normal's beyond.
T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
        2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
        2.060, 2.056, 2.052, 2.048, 2.045, 2.042)  # fmt: skip


def t_interval(xs: Sequence[float]) -> tuple[float, float, float]:
    """Mean and 95% t-interval (low, high) of `xs` (nan bounds with fewer than two)."""
    mean, std = mean_std(xs)
    if len(xs) < 2:
        return mean, math.nan, math.nan
    q = T975[len(xs) - 2] if len(xs) - 1 <= len(T975) else 1.96
    half = q * std / math.sqrt(len(xs))
    return mean, mean - half, mean + half


def mean_std(xs: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (nan with fewer than two values)."""
    mean = statistics.fmean(xs) if xs else math.nan
    return mean, statistics.stdev(xs) if len(xs) > 1 else math.nan


@dataclass(frozen=True)
class GroupSummary:
    """One algorithm in one setting, across its seeds."""

    algorithm: str
    setting: str
    runs: tuple[RunSummary, ...]

    @property
    def n(self) -> int:
        return len(self.runs)

    @property
    def final_eval(self) -> tuple[float, float]:
        return mean_std([r.final_eval for r in self.runs])

    @property
    def initial_eval(self) -> float:
        return statistics.fmean(r.initial_eval for r in self.runs)

    @property
    def final_sampled(self) -> tuple[float, float]:
        return mean_std([r.final_sampled for r in self.runs])

    @property
    def best_sampled(self) -> float:
        return statistics.fmean(r.best_sampled for r in self.runs)

    @property
    def collapse_events(self) -> int:
        return sum(r.collapse_events for r in self.runs)

    @property
    def entropy_collapses(self) -> int:
        return sum(r.entropy_collapse for r in self.runs)

    @property
    def entropy_explosions(self) -> int:
        return sum(r.entropy_explosion for r in self.runs)

    @property
    def runs_with_collapse(self) -> int:
        return sum(r.collapsed for r in self.runs)

    @property
    def unstable_runs(self) -> int:
        return sum(r.unstable for r in self.runs)

    @property
    def epoch_ratio(self) -> float:
        ratios = [r.epoch_ratio for r in self.runs if not math.isnan(r.epoch_ratio)]
        return statistics.median(ratios) if ratios else math.nan

    @property
    def entropy_change(self) -> tuple[float, float]:
        """Mean token entropy at step 1 and over the last tenth of the steps."""
        return (
            statistics.fmean(r.entropy_start for r in self.runs),
            statistics.fmean(r.entropy_end for r in self.runs),
        )

    @property
    def spikes(self) -> int:
        return sum(r.spikes for r in self.runs)

    @property
    def max_spikes(self) -> int:
        return max(r.spikes for r in self.runs)

    @property
    def grad_norm_ratio(self) -> float:
        return statistics.median(r.grad_norm_ratio for r in self.runs)

    @property
    def step_time(self) -> float:
        return statistics.median(r.step_time for r in self.runs)

    @property
    def kl_init_final(self) -> float:
        return statistics.fmean(r.kl_init_final for r in self.runs)


def summarize(runs: Sequence[RunData], rules: Rules) -> dict[tuple[str, str], GroupSummary]:
    """Per (setting, algorithm), in the order the runs came."""
    grouped: dict[tuple[str, str], list[RunSummary]] = {}
    for run in runs:
        grouped.setdefault((run.setting, run.algorithm), []).append(summarize_run(run, rules))
    return {
        key: GroupSummary(algorithm=key[1], setting=key[0], runs=tuple(rs))
        for key, rs in grouped.items()
    }
