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

from lco_core.experiments.analysis import GroupSummary, Outcome, Rules, mean_std, zero_signal_trend


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
