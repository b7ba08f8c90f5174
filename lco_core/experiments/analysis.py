"""The stability study's numbers: per-run events, per-algorithm summaries and claim verdicts.

Pure Python over the per-step dicts of `metrics.jsonl`, so every rule can be tested on
synthetic series. Each threshold lives in `Rules` and the report prints them, so a verdict
can be re-derived by hand from the data:

    runs = [RunData("lco_kld", "single", 1, metrics, initial_eval=0.3, final_eval=0.5), ...]
    groups = summarize(runs, Rules())
    verdicts = judge(groups, Rules(), lco=("lco_kld",), baselines=("ppo_clip", "grpo"))
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
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
    # Entropy collapse: the smoothed token entropy falls below this fraction of step 1's.
    entropy_collapse_fraction: float = 0.1
    # Grad-norm spike: a step whose grad norm exceeds `spike_factor` x the median of all
    # earlier steps (needs `spike_min_history` earlier steps).
    spike_factor: float = 5.0
    spike_min_history: int = 10
    # Grad-norm trend: mean over the last quarter of steps / mean over the first quarter.
    shrink_ratio: float = 0.9
    grow_ratio: float = 1.1
    # A smooth grad-norm trace has at most this many spikes in any one run.
    max_spikes_smooth: int = 1
    # Reward comparisons (final greedy reward, mean over seeds): a difference counts when
    # it is beyond 2 standard errors and beyond `material_diff`; a noise band (2 SE) wider
    # than `informative_band` cannot confirm "at least as good".
    material_diff: float = 0.02
    informative_band: float = 0.05
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
    spikes: int
    grad_norm_ratio: float
    step_time: float  # median seconds per step
    kl_init_final: float
    wall_s: float
    zero_std_early: float = math.nan  # share of zero-spread groups, first quarter of steps
    zero_std_late: float = math.nan  # and last quarter


def summarize_run(run: RunData, rules: Rules) -> RunSummary:
    rewards = run.series("reward_mean")
    norms = run.series("grad_norm")
    tail = max(1, math.ceil(len(rewards) / 10))
    kl_init = run.series("kl_init")
    zero_early, zero_late = _quarters(run.series("zero_std_group_frac"))
    return RunSummary(
        algorithm=run.algorithm,
        setting=run.setting,
        seed=run.seed,
        initial_eval=run.initial_eval,
        final_eval=run.final_eval,
        final_sampled=statistics.fmean(rewards[-tail:]),
        best_sampled=max(trailing_mean(rewards, rules.smooth_window)),
        collapse_events=collapse_events(rewards, rules),
        entropy_collapse=entropy_collapsed(run.series("entropy"), rules),
        spikes=grad_spikes(norms, rules),
        grad_norm_ratio=grad_norm_ratio(norms),
        step_time=statistics.median(run.series("time_step")),
        kl_init_final=kl_init[-1] if kl_init else math.nan,
        wall_s=run.wall_s,
        zero_std_early=zero_early,
        zero_std_late=zero_late,
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
    def runs_with_collapse(self) -> int:
        return sum(r.collapse_events > 0 or r.entropy_collapse for r in self.runs)

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


@dataclass(frozen=True)
class Case:
    label: str
    outcome: Outcome
    detail: str


@dataclass(frozen=True)
class Verdict:
    claim: str
    rule: str
    cases: tuple[Case, ...]
    context: str = ""
    outcome: Outcome = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "outcome", overall(self.cases))


def overall(cases: Sequence[Case]) -> Outcome:
    """Held if every case held; not held if more than half did not; unclear otherwise."""
    if cases and all(c.outcome == "held" for c in cases):
        return "held"
    if sum(c.outcome == "not held" for c in cases) * 2 > len(cases):
        return "not held"
    return "unclear"


def _diff(a: GroupSummary, b: GroupSummary) -> tuple[float, float]:
    """Difference of mean final greedy reward (a - b) and its 2-standard-error band.

    Runs with the same seed see the same prompts in the same order, so when both groups
    have the same seeds the difference is paired by seed (its SE is that of the per-seed
    differences); otherwise the two means are compared unpaired."""
    by_seed_a = {r.seed: r.final_eval for r in a.runs}
    by_seed_b = {r.seed: r.final_eval for r in b.runs}
    if by_seed_a.keys() == by_seed_b.keys():
        mean, std = mean_std([by_seed_a[k] - by_seed_b[k] for k in by_seed_a])
        return mean, 2 * std / math.sqrt(a.n)
    (ma, sa), (mb, sb) = a.final_eval, b.final_eval
    return ma - mb, 2 * math.sqrt(sa**2 / a.n + sb**2 / b.n)


def _fmt(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{x:+.3f}"


def judge(
    groups: dict[tuple[str, str], GroupSummary],
    rules: Rules,
    *,
    lco: Sequence[str],
    baselines: Sequence[str],
    comparators: Sequence[str] = ("ppo_clip", "grpo"),
    settings: Sequence[str] = ("single", "reuse"),
    reuse_setting: str = "reuse",
    single_setting: str = "single",
) -> list[Verdict]:
    """The four claims, each judged per LCO loss (and setting) by the rules in `Rules`."""
    present = [s for s in settings if any(k[0] == s for k in groups)]
    cases_for = [(loss, s) for loss in lco for s in present if (s, loss) in groups]

    def context(metric: str, fn: Callable[[GroupSummary], str]) -> str:
        parts = []
        for s in present:
            for b in baselines:
                if (s, b) in groups:
                    parts.append(f"{b}/{s} {fn(groups[(s, b)])}")
        return f"Baselines, {metric}: " + ", ".join(parts) + "." if parts else ""

    # 1. Gradient norms shrink smoothly.
    cases = []
    for loss, s in cases_for:
        g = groups[(s, loss)]
        ratio = g.grad_norm_ratio
        smooth = g.max_spikes <= rules.max_spikes_smooth
        outcome: Outcome
        if ratio > rules.grow_ratio or not smooth:
            outcome = "not held"
        elif ratio < rules.shrink_ratio:
            outcome = "held"
        else:
            outcome = "unclear"
        detail = (
            f"late/early grad norm {ratio:.2f}, spikes {g.spikes} (max {g.max_spikes} in a run)"
        )
        cases.append(Case(f"{loss}/{s}", outcome, detail))
    signal = zero_signal_trend([r for g in groups.values() for r in g.runs])
    grad = Verdict(
        claim="Gradient norms shrink smoothly as training proceeds",
        rule=(
            f"per LCO loss and setting: the median over seeds of (mean grad norm, last quarter "
            f"of steps) / (first quarter) below {rules.shrink_ratio} and no run with more than "
            f"{rules.max_spikes_smooth} spike: held; ratio above {rules.grow_ratio} or a run "
            f"with more spikes: not held; otherwise unclear"
        ),
        cases=tuple(cases),
        context=context(
            "late/early ratio and spikes",
            lambda g: f"{g.grad_norm_ratio:.2f}/{g.spikes}",
        )
        + (
            f" Share of groups with zero reward spread (no gradient signal), first -> last "
            f"quarter of steps, all runs: {signal[0]:.2f} -> {signal[1]:.2f}; fewer such groups "
            f"means more tokens with an advantage, which alone raises every algorithm's grad "
            f"norm."
        ),
    )

    # 2. No peak-then-collapse.
    cases = []
    for loss, s in cases_for:
        g = groups[(s, loss)]
        k = g.runs_with_collapse
        outcome = "held" if k == 0 else "not held" if k >= rules.pattern_runs else "unclear"
        detail = (
            f"{k}/{g.n} runs collapsed ({g.collapse_events} reward events, "
            f"{g.entropy_collapses} entropy collapses)"
        )
        cases.append(Case(f"{loss}/{s}", outcome, detail))
    collapse = Verdict(
        claim="No peak-then-collapse of reward or entropy",
        rule=(
            f"per LCO loss and setting: no run with a reward collapse event or an entropy "
            f"collapse: held; {rules.pattern_runs} or more such runs: not held; one: unclear"
        ),
        cases=tuple(cases),
        context=context("runs collapsed", lambda g: f"{g.runs_with_collapse}/{g.n}"),
    )

    # 3. Robust when a batch is reused for several updates.
    cases = []
    if reuse_setting in present and single_setting in present:
        for loss in lco:
            if (reuse_setting, loss) not in groups or (single_setting, loss) not in groups:
                continue
            reuse, single = groups[(reuse_setting, loss)], groups[(single_setting, loss)]
            d, band = _diff(reuse, single)
            threshold = max(band, rules.material_diff)
            if math.isnan(band):
                outcome = "unclear"
            elif d < -threshold or reuse.runs_with_collapse >= rules.pattern_runs:
                outcome = "not held"
            elif reuse.runs_with_collapse == 0:
                outcome = "held"
            else:
                outcome = "unclear"
            detail = (
                f"final reward {reuse_setting} - {single_setting} {_fmt(d)} (2 SE {band:.3f}), "
                f"{reuse.runs_with_collapse}/{reuse.n} {reuse_setting} runs collapsed"
            )
            cases.append(Case(loss, outcome, detail))

    def reuse_drop(b: str) -> str:
        if (reuse_setting, b) in groups and (single_setting, b) in groups:
            return _fmt(_diff(groups[(reuse_setting, b)], groups[(single_setting, b)])[0])
        return "n/a"

    robust = Verdict(
        claim="Robust when a batch is reused for several updates",
        rule=(
            f"per LCO loss: final greedy reward with reuse minus without it not below "
            f"-max(2 SE, {rules.material_diff}) and no collapsed reuse run: held; below it, or "
            f"{rules.pattern_runs}+ collapsed reuse runs: not held; otherwise (or one seed) "
            f"unclear"
        ),
        cases=tuple(cases),
        context=(
            f"Baselines, final reward {reuse_setting} - {single_setting}: "
            + ", ".join(f"{b} {reuse_drop(b)}" for b in baselines)
            + "."
        ),
    )

    # 4. Final reward at least as good as PPO/GRPO.
    cases = []
    for loss, s in cases_for:
        rivals = [groups[(s, c)] for c in comparators if (s, c) in groups]
        if not rivals:
            continue
        best = max(rivals, key=lambda g: g.final_eval[0])
        d, band = _diff(groups[(s, loss)], best)
        if math.isnan(band):
            outcome = "unclear"
        elif d < -max(band, rules.material_diff):
            outcome = "not held"
        elif d >= 0 or band <= rules.informative_band:
            outcome = "held"
        else:
            outcome = "unclear"
        detail = f"final reward - best of {best.algorithm} {_fmt(d)} (2 SE {band:.3f})"
        cases.append(Case(f"{loss}/{s}", outcome, detail))
    final = Verdict(
        claim=f"Final reward at least as good as {'/'.join(comparators)}",
        rule=(
            f"per LCO loss and setting, against the better of {', '.join(comparators)} by mean "
            f"final greedy reward: difference below -max(2 SE, {rules.material_diff}): not held; "
            f"difference >= 0, or within 2 SE with 2 SE <= {rules.informative_band}: held; "
            f"otherwise (too noisy to tell, or one seed) unclear"
        ),
        cases=tuple(cases),
        context=context("final greedy reward", lambda g: f"{g.final_eval[0]:.3f}"),
    )
    return [grad, collapse, robust, final]
