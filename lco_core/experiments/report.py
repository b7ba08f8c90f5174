"""The stability study's report: `stability.md` with its table and verdicts, and PNG plots.

    paths = write_report(result, out_dir=Path("docs/results"), command="lco experiment ...")

Everything in the report is computed from the runs (`analysis.py` holds the rules); the
only fixed prose is the setup description and the caveats. Plots need matplotlib (the
`experiments` extra); it is imported here only, headless.
"""

from __future__ import annotations

import datetime as dt
import io
import math
import os
import platform
import statistics
import subprocess
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

from lco_core.experiments.analysis import (
    GroupSummary,
    Rules,
    RunData,
    identical_pairs,
    summarize,
    trailing_mean,
)
from lco_core.experiments.stability import BASELINES, LCO_LOSSES, StudyResult
from lco_core.experiments.tuning import RULE
from lco_core.experiments.verdicts import Verdict, judge

# (metric key, title, y label, log scale): one PNG each, one panel per setting.
PLOTS = (
    ("reward_mean", "Sampled reward (trailing mean)", "reward", False),
    ("eval_reward", "Greedy reward on held-out prompts", "reward", False),
    ("grad_norm", "Gradient norm (trailing mean)", "global grad norm", True),
    ("entropy", "Token entropy (trailing mean)", "nats", False),
    ("kl_old", "KL(new || old) after the update (trailing mean)", "KL", True),
    ("kl_init", "KL to the initial policy (trailing mean)", "KL", True),
)
COLORS = {
    "lco_kld": "tab:blue",
    "lco_mse": "tab:green",
    "lco_logcosh": "tab:cyan",
    "reinforce": "tab:purple",
    "ppo_clip": "tab:red",
    "grpo": "tab:orange",
}
# Curves other than reward are smoothed lightly: enough to separate six algorithms,
# little enough that a spike still shows.
CURVE_WINDOW = 5
LOG_FLOOR = 1e-6
VERSIONED = ("torch", "transformers", "numpy", "matplotlib", "lco-finetune")


def _curves(runs: Sequence[RunData], key: str, window: int) -> tuple[list[int], list[list[float]]]:
    """Steps and one smoothed series per seed, cut to the shortest run."""
    if key == "eval_reward":
        per_seed = [
            [(0, r.initial_eval)] + [(int(m["step"]), m[key]) for m in r.metrics if key in m]
            for r in runs
        ]
        n = min(len(s) for s in per_seed)
        return [p[0] for p in per_seed[0][:n]], [[v for _, v in s[:n]] for s in per_seed]
    series = [r.series(key) for r in runs]
    n = min(len(s) for s in series)
    if n == 0:
        return [], []
    w = min(window, n)
    smoothed = [trailing_mean(s[:n], w) for s in series]
    return list(range(w, n + 1)), smoothed


def plot_metric(
    runs: Sequence[RunData],
    key: str,
    title: str,
    ylabel: str,
    log: bool,
    settings: Sequence[str],
    algorithms: Sequence[str],
    path: Path,
    rules: Rules,
) -> Path:
    """Mean over seeds (line) and min-max across seeds (band), one panel per setting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    window = rules.smooth_window if key == "reward_mean" else CURVE_WINDOW
    fig, axes = plt.subplots(1, len(settings), figsize=(5.2 * len(settings), 3.6), squeeze=False)
    for ax, setting in zip(axes[0], settings, strict=True):
        for algorithm in algorithms:
            group = [r for r in runs if r.setting == setting and r.algorithm == algorithm]
            if not group:
                continue
            steps, series = _curves(group, key, window)
            if not steps:
                continue
            floor = LOG_FLOOR if log else -math.inf
            cols = [[max(s[i], floor) for s in series] for i in range(len(steps))]
            color = COLORS.get(algorithm)
            style = "-" if algorithm in LCO_LOSSES else "--"
            ax.plot(steps, [statistics.fmean(c) for c in cols], style, color=color, lw=1.3)
            ax.fill_between(
                steps, [min(c) for c in cols], [max(c) for c in cols], color=color, alpha=0.15
            )
            ax.plot([], [], style, color=color, label=algorithm)
        ax.set_title(f"{setting}", fontsize=10)
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        if log:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="best")
    fig.suptitle(f"{title}: mean over seeds, band = min-max", fontsize=10)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    plt.close(fig)
    # A 256-colour palette keeps each plot near 50 KB (committed to the repo) and looks the
    # same: the figure has a dozen colours plus their translucent bands.
    from PIL import Image

    buffer.seek(0)
    with Image.open(buffer) as image:
        image.convert("RGB").quantize(colors=256).save(path, optimize=True)
    return path


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def _git_commit(repo: Path) -> str:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=repo,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit


def _pm(ms: tuple[float, float]) -> str:
    mean, std = ms
    return f"{mean:.3f}" if math.isnan(std) else f"{mean:.3f} ± {std:.3f}"


def results_table(groups: dict[tuple[str, str], GroupSummary], setting: str) -> list[str]:
    rows = [
        "| algorithm | final greedy reward | initial | final sampled reward | best sampled "
        "| entropy start -> end | unstable runs (collapse events / entropy collapses / "
        "explosions) | grad-norm spikes | grad norm late/early | per pass last/first "
        "| KL to init (end) | step s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (s, algorithm), g in groups.items():
        if s != setting:
            continue
        e0, e1 = g.entropy_change
        per_pass = "-" if math.isnan(g.epoch_ratio) else f"{g.epoch_ratio:.2f}"
        rows.append(
            f"| {algorithm} | {_pm(g.final_eval)} | {g.initial_eval:.3f} "
            f"| {_pm(g.final_sampled)} | {g.best_sampled:.3f} | {e0:.2f} -> {e1:.2f} "
            f"| {g.unstable_runs}/{g.n} ({g.collapse_events} / {g.entropy_collapses} / "
            f"{g.entropy_explosions}) | {g.spikes} | {g.grad_norm_ratio:.2f} | {per_pass} "
            f"| {'-' if math.isnan(g.kl_init_final) else f'{g.kl_init_final:.4f}'} "
            f"| {g.step_time:.2f} |"
        )
    return rows


def tuning_lines(result: StudyResult) -> list[str]:
    """The tuning phase: the rule, the budget and every candidate's score."""
    cfg = result.config
    n = max((len(v) for v in result.tuning.values()), default=0)
    lines = [
        f"Budget: {n} candidates per algorithm x {len(cfg.tune_seeds)} tuning seeds "
        f"({', '.join(map(str, cfg.tune_seeds))}) = {n * len(cfg.tune_seeds)} runs each, "
        f"`single` setting, the same steps and evaluation as the held-out runs. Learning "
        f"rate: {', '.join(f'{f:g}' for f in cfg.lr_factors)} x the model's default for the "
        f"algorithm (`learning_rate_multiplier`); LCO's `beta` "
        f"{', '.join(f'{v:g}' for v in cfg.knob_values['beta'])}. REINFORCE, PPO and GRPO: "
        "the same number of learning rates, log-spaced over the same range (PPO's and "
        "GRPO's clip `epsilon` cannot act with one update per batch, where the ratio to "
        "pi_old is exactly 1; it stays at 0.2 in every run).",
        "",
        f"Rule (fixed before the runs): {RULE}.",
        "",
        "| algorithm | candidate | final greedy reward (mean over tuning seeds) | unstable "
        "runs | chosen |",
        "|---|---|---|---|---|",
    ]
    for algorithm, scores in result.tuning.items():
        for sc in scores:
            mark = "**yes**" if result.chosen.get(algorithm) == sc.candidate else ""
            reward = "not run" if sc.n == 0 else f"{sc.final_eval:.3f}"
            lines.append(
                f"| {algorithm} | {sc.candidate.describe()} | {reward} | "
                f"{sc.unstable}/{sc.n} | {mark} |"
            )
    return lines


def verdict_lines(verdicts: Sequence[Verdict]) -> list[str]:
    lines = []
    for i, v in enumerate(verdicts, 1):
        lines += [f"##### {i}. {v.claim}: **{v.outcome}**", "", f"Rule: {v.rule}.", ""]
        lines += [f"- {c.label}: {c.outcome} ({c.detail})" for c in v.cases]
        if v.context:
            lines += ["", v.context]
        lines.append("")
    return lines


def _rules_lines(rules: Rules) -> list[str]:
    return [
        f"- **Collapse event**: the sampled reward, as a trailing mean over "
        f"{rules.smooth_window} steps, falls below {rules.collapse_fraction:g} x its running best "
        f"after that best exceeded {rules.collapse_floor:g}; the detector re-arms once the "
        f"reward is back above {rules.rearm_fraction:g} x the best.",
        f"- **Entropy collapse / explosion**: the token entropy ({rules.smooth_window}-step "
        f"trailing mean) falls below {rules.entropy_collapse_fraction:g} x its value at step "
        f"1 / rises above {rules.entropy_explosion_factor:g} x it (the policy flattening). A "
        "run with a reward collapse, an entropy collapse or an explosion is **unstable**.",
        f"- **Grad-norm spike**: a step whose global grad norm exceeds "
        f"{rules.spike_factor:g} x the median of all earlier steps (from step "
        f"{rules.spike_min_history + 1} on).",
        "- **Grad norm late/early**: mean grad norm over the last quarter of steps divided by "
        "the mean over the first quarter (median over seeds). **Per pass last/first**: with a "
        "reused batch, the mean grad norm of the last pass over a batch divided by the "
        "first's, median over steps and then over seeds.",
        f"- **Final greedy reward**: greedy decoding on the held-out prompts, the mean of a "
        f"run's last {rules.final_evals} evaluations (mean ± sample std over seeds). **Final "
        "sampled reward**: mean training-batch reward (temperature 1) over the last tenth of "
        f"the steps. **Best sampled**: the highest {rules.smooth_window}-step trailing mean "
        "(mean over seeds).",
        "- **Paired comparison**: runs with the same seed see the same prompts in the same "
        "order, so a difference of final rewards is taken per seed; the report gives the mean "
        "difference and its 95% Student-t interval over seeds. **Non-inferior** means the "
        f"interval's low end is above -{rules.noninferiority_margin:g} (the margin, fixed "
        "before the runs).",
        "- **Step s**: median wall seconds per training step (rollout, update, metrics; "
        "median, so evaluation steps do not count).",
    ]


def stage_lines(
    result: StudyResult, rules: Rules, plot_dir: Path, prefix: str
) -> tuple[list[str], list[Verdict], list[Path]]:
    """One stage's results tables, claims and plots (PNGs under `plot_dir`, linked as
    `prefix/<file>`); headings start at level 3."""
    cfg = result.config
    runs = result.runs
    groups = summarize(runs, rules)
    settings = [s.name for s in cfg.settings if any(r.setting == s.name for r in runs)]
    algorithms = [a for a in cfg.algorithms if any(r.algorithm == a for r in runs)]
    lco = [a for a in algorithms if a in LCO_LOSSES]
    baselines = [a for a in algorithms if a in BASELINES]
    verdicts = judge(groups, rules, lco=lco, baselines=baselines, settings=settings)
    plot_dir.mkdir(parents=True, exist_ok=True)
    # A metric no run logged gets no empty plot: KL to the initial policy needs a second
    # copy of the model, which the trainer loads only for small ones (KL_INIT_MAX_PARAMS).
    plots = [p for p in PLOTS if p[0] == "eval_reward" or any(r.series(p[0]) for r in runs)]
    unmeasured = [p[0] for p in PLOTS if p not in plots]
    pngs = (
        [
            plot_metric(
                runs, key, title, ylabel, log, settings, algorithms, plot_dir / f"{key}.png", rules
            )
            for key, title, ylabel, log in plots
        ]
        if runs
        else []
    )
    expected = len(cfg.algorithms) * len(cfg.seeds) * len(cfg.settings)
    missing = [
        f"{s.name}/{a}/seed-{seed}"
        for seed in cfg.seeds
        for s in cfg.settings
        for a in cfg.algorithms
        if not any(r.setting == s.name and r.algorithm == a and r.seed == seed for r in runs)
    ]
    chosen = ", ".join(
        f"{a} {c.describe()}" for a, c in result.chosen.items() if a in cfg.algorithms
    )
    lines = [
        f"{len(runs)} of {expected} held-out runs; settings: {chosen or 'the job defaults'}.",
        "",
        "| claim | verdict |",
        "|---|---|",
        *[f"| {v.claim} | **{v.outcome}** |" for v in verdicts],
        "",
    ]
    if missing:
        lines += [f"**Incomplete**: {len(missing)} run(s) missing: {', '.join(missing)}.", ""]
    same = identical_pairs(runs)
    for s in cfg.settings:
        if s.name not in settings:
            continue
        lines += [f"#### `{s.name}`: {s.description}", "", *results_table(groups, s.name), ""]
        for _, a, b in (p for p in same if p[0] == s.name):
            lines += [f"`{a}` and `{b}` gave identical per-step metrics for every seed.", ""]
    lines += ["#### Claims", "", *verdict_lines(verdicts)]
    if pngs:
        lines += ["#### Plots", ""]
        for (key, title, *_), png in zip(plots, pngs, strict=True):
            lines += [f"**{title}** (`{key}`)", "", f"![{key}]({prefix}/{png.name})", ""]
        if unmeasured:
            lines += [
                f"Not measured for this model, so not plotted: {', '.join(unmeasured)} "
                "(the trainer keeps a second copy of the model for it only up to "
                "`KL_INIT_MAX_PARAMS`).",
                "",
            ]
    lines += ["#### Setup", "", *[f"- {k}: {v}" for k, v in cfg.describe().items()]]
    lines += [
        "- learning rates of the held-out runs: "
        + ", ".join(f"{a} {lr:g}" for a, lr in result.learning_rates.items()),
        "",
    ]
    return lines, verdicts, pngs


def write_report(
    result: StudyResult,
    *,
    out_dir: Path,
    command: str,
    rules: Rules | None = None,
    name: str = "stability",
) -> list[Path]:
    """Write `out_dir/<name>.md` and `out_dir/<name>/*.png`; returns their paths."""
    rules = rules or Rules()
    cfg = result.config
    stages = [(result, out_dir / name, name)]
    if result.real is not None:
        stages.append((result.real, out_dir / name / "real", f"{name}/real"))
    bodies = [stage_lines(r, rules, d, prefix) for r, d, prefix in stages]
    every_run = [run for r, _, _ in stages for run in (*r.tuning_runs, *r.runs)]
    versions = _versions()
    # Wall clock of the whole study, across invocations: first run's start to last run's
    # end, tuning included (an interrupted and resumed study counts its pause too).
    span = (
        max(r.finished_at for r in every_run) - min(r.finished_at - r.wall_s for r in every_run)
        if every_run
        else 0.0
    )
    title = " and ".join(dict.fromkeys(r.config.model for r, _, _ in stages))
    lines = [
        f"# Stability of LCO against PPO, GRPO and REINFORCE on {title}",
        "",
        "A small-scale test of the stability claims of *Stabilizing Policy Optimization via "
        "Logits Convexity* (see `docs/method.md`): every algorithm tuned with the same budget "
        "by a rule fixed before the runs, then compared on held-out seeds. Generated by the "
        "command below; do not edit by hand, re-run it.",
        "",
        "```bash",
        command,
        "```",
        "",
        f"Generated {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')} at commit "
        f"`{_git_commit(Path(__file__).resolve().parent)}`.",
        "",
        "## Verdicts",
        "",
        "| claim | "
        + " | ".join(f"{r.config.model}, {r.config.task}" for r, _, _ in stages)
        + " |",
        "|---|" + "---|" * len(stages),
    ]
    for i, v in enumerate(bodies[0][1]):
        cells = [body[1][i].outcome if i < len(body[1]) else "n/a" for body in bodies]
        lines.append(f"| {v.claim} | " + " | ".join(f"**{c}**" for c in cells) + " |")
    lines += [
        "",
        "Each verdict is computed from the held-out runs by the rule stated with it below "
        "(per LCO loss and setting; overall: held if every case held, not held if more than "
        "half did not, unclear otherwise).",
        "",
        "## Tuning",
        "",
        *(tuning_lines(result) if result.tuning else ["No tuning stage in this preset."]),
        "",
    ]
    for (r, _, _), (body, _, _) in zip(stages, bodies, strict=True):
        lines += [f"## Held-out seeds: {r.config.model}, `{r.config.task}`", "", *body]
    lines += ["## Definitions", "", *_rules_lines(rules), ""]
    lines += [
        "## Setup",
        "",
        "- everything not named in a stage's setup: the job spec's defaults (AdamW, no grad "
        "clipping, temperature 1, token-mean aggregation; group advantages for "
        "LCO/GRPO/REINFORCE, GAE with a value head for PPO; pi_old kept as top-20 logprobs "
        "plus tail mass when a batch is reused).",
        "- each run is a job (`job.yaml` under the work dir) trained by `lco_core.runner."
        "run_job` on CPU with one torch thread; the HF rollout engine.",
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()) + ".",
        "",
        f"Machine: {platform.platform()}, {os.cpu_count()} CPUs.",
        "",
        "## Reproducibility and runtime",
        "",
    ]
    if result.repeat:
        for rep in result.repeat:
            diffs = ", ".join(f"{k} {v:.2g}" for k, v in rep.items() if k != "run")
            lines.append(
                f"- `{rep['run']}` trained a second time from its job file: largest absolute "
                f"difference per metric over all steps: {diffs}."
            )
        identical = all(v == 0 for rep in result.repeat for k, v in rep.items() if k != "run")
        lines.append(
            "- The repeat was bit-identical: the same seeds give the same numbers on this "
            "machine with one torch thread (other CPUs, thread counts or library versions "
            "may round differently and drift within seed noise)."
            if identical
            else "- The repeat differed only by CPU floating-point nondeterminism (sizes "
            "above); compare them with the seed spread in the table before reading a "
            "difference."
        )
    per_stage = "; ".join(
        f"{r.config.model}: {len(r.tuning_runs)} tuning runs "
        f"{sum(x.wall_s for x in r.tuning_runs) / 60:.1f} min, {len(r.runs)} held-out runs "
        f"{sum(x.wall_s for x in r.runs) / 60:.1f} min"
        for r, _, _ in stages
    )
    lines += [
        f"- **Wall time of the whole study**: {span / 60:.0f} min from the first run's start "
        f"to the last run's end, on {os.cpu_count()} CPUs (`--workers` runs at once, as in the "
        f"command above; one torch thread each). Training time summed per stage ({per_stage}). This invocation "
        f"trained {sum(r.trained for r, _, _ in stages)} run(s) in {result.wall_s / 60:.1f} min (the study "
        "resumes: finished runs are kept under the work dir and reused).",
        "",
        "## Caveats",
        "",
        "- Small models, synthetic tasks, short runs and "
        f"{len(cfg.seeds)} held-out seeds: evidence about this implementation at this scale, "
        "not about the paper's settings.",
        "- The tuning grid is small (the same for every algorithm): a setting outside it could "
        "change a verdict. The second stage reuses the first stage's choices without tuning "
        "of its own.",
        "- Greedy rewards move in steps of 1/(held-out prompts); a t-interval from few seeds "
        "is wide, so a real difference smaller than it reads as unclear, not as a win.",
        "",
    ]
    report = out_dir / f"{name}.md"
    report.write_text("\n".join(lines))
    return [report, *(p for _, _, pngs in bodies for p in pngs)]
