"""The stability study's claim verdicts, judged from the per-algorithm summaries of
`analysis.py` by the thresholds of its `Rules`:

    verdicts = judge(groups, Rules(), lco=("lco_kld",), baselines=("ppo_clip", "grpo"))

Each verdict lists its cases (one per setting and comparison) with the numbers behind them,
so the report shows how it was reached.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from lco_core.experiments.analysis import (
    GroupSummary,
    Outcome,
    Rules,
    t_interval,
    zero_signal_trend,
)


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


def paired(a: GroupSummary, b: GroupSummary) -> tuple[float, float, float]:
    """Mean of the per-seed differences of final greedy reward (a - b) over the seeds both
    groups ran, with its 95% t-interval (low, high). Runs with the same seed see the same
    prompts in the same order, so the difference is paired by seed."""
    by_seed_b = {r.seed: r.final_eval for r in b.runs}
    diffs = [r.final_eval - by_seed_b[r.seed] for r in a.runs if r.seed in by_seed_b]
    return t_interval(diffs)


def noninferior(low: float, high: float, margin: float) -> Outcome:
    """Held when the interval's low end is above -margin, not held when its high end is
    below it, unclear otherwise (or with fewer than two seeds)."""
    if math.isnan(low):
        return "unclear"
    if low > -margin:
        return "held"
    if high < -margin:
        return "not held"
    return "unclear"


def _interval(d: tuple[float, float, float]) -> str:
    return f"{_fmt(d[0])} (95% CI {_fmt(d[1])}..{_fmt(d[2])})"


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
        # With a reused batch LCO fits one fixed target, so its gradient should shrink
        # from the first pass over the batch to the last; with one pass, across training.
        per_pass = not math.isnan(g.epoch_ratio)
        ratio = g.epoch_ratio if per_pass else g.grad_norm_ratio
        smooth = g.max_spikes <= rules.max_spikes_smooth
        outcome: Outcome
        if ratio > rules.grow_ratio or not smooth:
            outcome = "not held"
        elif ratio < rules.shrink_ratio:
            outcome = "held"
        else:
            outcome = "unclear"
        what = "last/first pass over a batch" if per_pass else "late/early steps"
        detail = f"grad norm {what} {ratio:.2f}, spikes {g.spikes} (max {g.max_spikes} in a run)"
        cases.append(Case(f"{loss}/{s}", outcome, detail))
    signal = zero_signal_trend([r for g in groups.values() for r in g.runs])

    def grad_context(g: GroupSummary) -> str:
        ratio = g.grad_norm_ratio if math.isnan(g.epoch_ratio) else g.epoch_ratio
        return f"{ratio:.2f}/{g.spikes}"

    grad = Verdict(
        claim="Gradient norms shrink smoothly as training proceeds",
        rule=(
            f"per LCO loss and setting, the median over seeds of a grad-norm ratio: with a "
            f"reused batch, (mean grad norm of the last pass over the batch) / (first pass); "
            f"with one pass, (last quarter of steps) / (first quarter). Below "
            f"{rules.shrink_ratio} and no run with more than {rules.max_spikes_smooth} spike: "
            f"held; above {rules.grow_ratio} or a run with more spikes: not held; otherwise "
            f"unclear"
        ),
        cases=tuple(cases),
        context=context("grad-norm ratio and spikes", grad_context)
        + (
            f" Share of groups with zero reward spread (no gradient signal), first -> last "
            f"quarter of steps, all runs: {signal[0]:.2f} -> {signal[1]:.2f}; fewer such groups "
            f"means more tokens with an advantage, which alone raises every algorithm's grad "
            f"norm across steps."
        ),
    )

    # 2. No peak-then-collapse (and no explosion of entropy either).
    cases = []
    # The detectors read trailing means over `smooth_window` steps: a peak and then a fall
    # need two windows, so a shorter run cannot show a collapse and cannot count as "held".
    min_steps = 2 * rules.smooth_window
    for loss, s in cases_for:
        g = groups[(s, loss)]
        k = g.unstable_runs
        outcome = "held" if k == 0 else "not held" if k >= rules.pattern_runs else "unclear"
        detail = (
            f"{k}/{g.n} runs unstable ({g.collapse_events} reward collapse events, "
            f"{g.entropy_collapses} entropy collapses, {g.entropy_explosions} entropy "
            f"explosions)"
        )
        steps = min(r.steps for r in g.runs)
        if outcome == "held" and steps < min_steps:
            outcome = "unclear"
            detail += f"; runs of {steps} steps are too short for the detectors"
        cases.append(Case(f"{loss}/{s}", outcome, detail))
    collapse = Verdict(
        claim="No peak-then-collapse of reward, no collapse or explosion of entropy",
        rule=(
            f"per LCO loss and setting: no run with a reward collapse event, an entropy "
            f"collapse or an entropy explosion: held (unclear if the runs are shorter than "
            f"{min_steps} steps, two of the detectors' windows); {rules.pattern_runs} or more "
            f"such runs: not held; one: unclear"
        ),
        cases=tuple(cases),
        context=context("unstable runs", lambda g: f"{g.unstable_runs}/{g.n}"),
    )

    # 3. Robust when a batch is reused for several updates.
    cases = []
    margin = rules.noninferiority_margin
    if reuse_setting in present and single_setting in present:
        for loss in lco:
            if (reuse_setting, loss) not in groups or (single_setting, loss) not in groups:
                continue
            reuse, single = groups[(reuse_setting, loss)], groups[(single_setting, loss)]
            d = paired(reuse, single)
            outcome = noninferior(d[1], d[2], margin)
            if reuse.unstable_runs >= rules.pattern_runs:
                outcome = "not held"
            elif outcome == "held" and reuse.unstable_runs > 0:
                outcome = "unclear"
            detail = (
                f"final reward {reuse_setting} - {single_setting} {_interval(d)}, "
                f"{reuse.unstable_runs}/{reuse.n} {reuse_setting} runs unstable"
            )
            cases.append(Case(loss, outcome, detail))

    def reuse_drop(b: str) -> str:
        if (reuse_setting, b) in groups and (single_setting, b) in groups:
            return _interval(paired(groups[(reuse_setting, b)], groups[(single_setting, b)]))
        return "n/a"

    robust = Verdict(
        claim="Robust when a batch is reused for several updates",
        rule=(
            f"per LCO loss, paired by seed: final greedy reward with reuse minus without it "
            f"non-inferior (95% t-interval's low end above -{margin}) and no unstable reuse "
            f"run: held; the interval's high end below -{margin}, or {rules.pattern_runs}+ "
            f"unstable reuse runs: not held; otherwise unclear"
        ),
        cases=tuple(cases),
        context=(
            f"Baselines, final reward {reuse_setting} - {single_setting}: "
            + ", ".join(f"{b} {reuse_drop(b)}" for b in baselines)
            + "."
        ),
    )

    # 4. Final reward at least as good as PPO/GRPO: paired non-inferiority.
    cases = []
    for loss, s in cases_for:
        rivals = [groups[(s, c)] for c in comparators if (s, c) in groups]
        if not rivals:
            continue
        best = max(rivals, key=lambda g: g.final_eval[0])
        d = paired(groups[(s, loss)], best)
        outcome = noninferior(d[1], d[2], margin)
        detail = f"final reward - {best.algorithm}'s {_interval(d)}"
        cases.append(Case(f"{loss}/{s}", outcome, detail))
    final = Verdict(
        claim=f"Final reward at least as good as {'/'.join(comparators)}",
        rule=(
            f"per LCO loss and setting, against the better of {', '.join(comparators)} by mean "
            f"final greedy reward, paired by seed: non-inferior (the 95% t-interval of the "
            f"mean difference has its low end above -{margin}): held; its high end below "
            f"-{margin}: not held; otherwise (the interval spans -{margin}) unclear"
        ),
        cases=tuple(cases),
        context=context("final greedy reward", lambda g: f"{g.final_eval[0]:.3f}"),
    )
    return [grad, collapse, robust, final]
