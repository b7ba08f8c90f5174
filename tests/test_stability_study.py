"""The stability study: its event rules, the tuning rule and the verdicts on synthetic
series, and the whole pipeline on a CI budget (`lco experiment stability --preset quick`:
tuning, held-out seeds in both settings, a second stage; about two minutes). The pipeline
test checks what is written, never what it concludes.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest

from cli.main import main as lco_main
from lco_core.experiments.analysis import (
    Rules,
    RunData,
    collapse_events,
    entropy_collapsed,
    entropy_exploded,
    epoch_ratio,
    final_eval,
    grad_norm_ratio,
    grad_spikes,
    identical_pairs,
    summarize,
    t_interval,
)
from lco_core.experiments.stability import PRESETS, job_body, run_keys
from lco_core.experiments.tuning import Candidate, Score, choose, tuning_grid
from lco_core.experiments.verdicts import judge, noninferior
from lco_spec.job import ReinforcementHyperparameters

RULES = Rules()


def test_collapse_event_counts_a_peak_then_collapse_once() -> None:
    rise_and_fall = [0.2] * 10 + [0.6] * 20 + [0.05] * 20
    assert collapse_events(rise_and_fall, RULES) == 1
    # Noise hovering around the threshold after the fall still counts once (no re-arm).
    flapping = [0.6] * 20 + [0.2, 0.35] * 20
    assert collapse_events(flapping, RULES) == 1
    # Recovering to the best and falling again is a second event.
    assert collapse_events(rise_and_fall + [0.6] * 20 + [0.05] * 20, RULES) == 2


def test_no_collapse_below_the_floor_or_without_a_fall() -> None:
    assert collapse_events([0.08] * 10 + [0.0] * 20, RULES) == 0  # best never above 0.1
    assert collapse_events([0.2 + 0.005 * i for i in range(60)], RULES) == 0
    assert collapse_events([0.5] * 20 + [0.3] * 20, RULES) == 0  # down 40%, not by half


def test_entropy_collapse_and_grad_spikes() -> None:
    assert entropy_collapsed([1.0] * 5 + [0.05] * 20, RULES)
    assert not entropy_collapsed([1.0 - 0.01 * i for i in range(50)], RULES)
    norms = [1.0, 1.1, 0.9] * 5 + [6.0] + [1.0] * 5
    assert grad_spikes(norms, RULES) == 1
    assert grad_spikes([1.0, 1.2] * 10, RULES) == 0
    assert grad_norm_ratio([2.0] * 4 + [1.0] * 4) == pytest.approx(0.5)


def test_entropy_explosion_final_reward_and_per_pass_ratio() -> None:
    assert entropy_exploded([0.7] * 5 + [1.6] * 20, RULES)  # the demo's rise after SFT
    assert not entropy_exploded([0.7] * 5 + [1.3] * 20, RULES)
    assert not entropy_collapsed([0.7] * 5 + [1.6] * 20, RULES)
    evals = [{"eval_reward": x} for x in (0.1, 0.2, 0.4, 0.5, 0.6)]
    run = RunData("lco_kld", "single", 1, evals, initial_eval=0.0, final_eval=0.6)
    assert final_eval(run, RULES) == pytest.approx(0.5)  # mean of the last 3
    passes = [{"grad_norm_first_epoch": 2.0, "grad_norm_last_epoch": x} for x in (1.0, 0.5, 1.5)]
    assert epoch_ratio(RunData("lco_kld", "reuse", 1, passes, 0.0, 0.0)) == pytest.approx(0.5)


def test_paired_noninferiority_uses_a_t_interval() -> None:
    mean, low, high = t_interval([0.01, -0.01, 0.03])
    assert mean == pytest.approx(0.01)
    assert low == pytest.approx(0.01 - 4.303 * 0.02 / 3**0.5)  # t(0.975, df 2)
    assert noninferior(low, high, 0.02) == "unclear"  # spans -0.02
    assert noninferior(*t_interval([0.0, 0.01, 0.005])[1:], 0.02) == "held"
    assert noninferior(*t_interval([-0.1, -0.12, -0.11])[1:], 0.02) == "not held"
    assert noninferior(*t_interval([0.5])[1:], 0.02) == "unclear"  # one seed


def test_every_algorithm_gets_the_same_tuning_budget() -> None:
    cfg = PRESETS["full"]
    grids = {a: tuning_grid(a, cfg) for a in cfg.algorithms}
    assert {len(g) for g in grids.values()} == {6}
    assert {c.knob for c in grids["lco_kld"]} == {"beta"}
    # The tie-break's "knob value listed first" is the job default.
    assert grids["lco_kld"][0].value == ReinforcementHyperparameters().beta
    # The clip is inert with one update per batch: PPO and GRPO tune 6 learning rates, as
    # REINFORCE does, rather than 3 twice over.
    for algorithm in ("grpo", "ppo_clip", "reinforce"):
        factors = [c.lr_factor for c in grids[algorithm]]
        assert factors[0] == 0.3 and factors[-1] == 3.0 and factors == sorted(set(factors))
        assert {c.knob for c in grids[algorithm]} == {None}


def test_the_tuning_rule() -> None:
    def sc(factor: float, reward: float, unstable: int = 0) -> Score:
        return Score(Candidate(factor), reward, unstable, n=2)

    # The best stable candidate wins even when an unstable one scored higher.
    assert choose([sc(1, 0.5), sc(3, 0.7, unstable=1), sc(0.3, 0.4)], 0.01).candidate.lr_factor == 1
    # Within the tie margin the learning rate nearest the default wins, then the lower one.
    assert choose([sc(0.3, 0.505), sc(1, 0.5), sc(3, 0.6)], 0.01).candidate.lr_factor == 3
    assert choose([sc(0.3, 0.6), sc(1, 0.595), sc(3, 0.4)], 0.01).candidate.lr_factor == 1
    assert choose([sc(0.5, 0.6), sc(2, 0.6)], 0.01).candidate.lr_factor == 0.5
    # All unstable: the best of them.
    assert choose([sc(1, 0.2, 1), sc(3, 0.3, 2)], 0.01).candidate.lr_factor == 3
    # At one learning rate, a tie goes to the knob value the grid lists first (the default).
    default, softer = Candidate(1, "beta", 2.0), Candidate(1, "beta", 10.0)
    assert (
        choose([Score(default, 0.5, 0, 2), Score(softer, 0.505, 0, 2)], 0.01).candidate == default
    )


def _run(algorithm: str, setting: str, seed: int, norms: list[float], final: float) -> RunData:
    metrics = [
        {"reward_mean": 0.3, "grad_norm": g, "entropy": 0.6, "time_step": 0.1, "kl_init": 0.01}
        for g in norms
    ]
    return RunData(algorithm, setting, seed, metrics, initial_eval=0.3, final_eval=final)


def test_verdicts_follow_the_rules() -> None:
    shrinking = [2.0 - 0.01 * i for i in range(40)]
    growing = [1.0 + 0.05 * i for i in range(40)]
    runs = [
        _run("lco_kld", s, seed, shrinking, 0.5 + 0.01 * seed)
        for s in ("single", "reuse")
        for seed in (1, 2, 3)
    ] + [
        _run("ppo_clip", s, seed, growing, 0.3 + 0.01 * seed)
        for s in ("single", "reuse")
        for seed in (1, 2, 3)
    ]
    verdicts = judge(summarize(runs, RULES), RULES, lco=["lco_kld"], baselines=["ppo_clip"])
    assert [v.outcome for v in verdicts] == ["held", "held", "held", "held"]
    # The same data with the roles swapped: LCO's grad norm grows and its reward is lower.
    swapped = [
        RunData(
            "lco_kld" if r.algorithm == "ppo_clip" else "ppo_clip",
            r.setting,
            r.seed,
            r.metrics,
            r.initial_eval,
            r.final_eval,
        )
        for r in runs
    ]
    verdicts = judge(summarize(swapped, RULES), RULES, lco=["lco_kld"], baselines=["ppo_clip"])
    assert verdicts[0].outcome == "not held"
    assert verdicts[3].outcome == "not held"
    # Entropy that doubles makes a run unstable: claim 2 fails with 2+ such runs.
    flat = [
        RunData(r.algorithm, r.setting, r.seed,
                [m | {"entropy": 0.6 if i < 5 else 1.5} for i, m in enumerate(r.metrics)],
                r.initial_eval, r.final_eval)
        for r in runs
    ]  # fmt: skip
    verdicts = judge(summarize(flat, RULES), RULES, lco=["lco_kld"], baselines=["ppo_clip"])
    assert verdicts[1].outcome == "not held" and "entropy explosions" in verdicts[1].cases[0].detail
    # Runs shorter than two detector windows cannot show a collapse: unclear, never held.
    short = [RunData(r.algorithm, r.setting, r.seed, r.metrics[:10], r.initial_eval,
                     r.final_eval) for r in runs]  # fmt: skip
    verdicts = judge(summarize(short, RULES), RULES, lco=["lco_kld"], baselines=["ppo_clip"])
    assert verdicts[1].outcome == "unclear" and "too short" in verdicts[1].cases[0].detail


@pytest.mark.e2e
def test_quick_study_writes_report_and_plots(
    tiny_model_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    work, out = tmp_path / "work", tmp_path / "out"
    argv = ["experiment", "stability", "--preset", "quick", "--work", str(work)]
    assert lco_main([*argv, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    # One line per run: 4 tuning (2 candidates each), 8 held-out, 4 in the second stage.
    assert printed.count("greedy reward") == 16

    report = (out / "stability.md").read_text()
    assert "lco experiment stability --preset quick" in report
    rows = [line for line in report.splitlines() if re.match(r"\| (lco_kld|grpo) \| [0-9]", line)]
    assert len(rows) == 6  # 2 algorithms x 2 settings, then x 1 setting in the second stage
    tuning = [line for line in report.splitlines() if re.match(r"\| (lco_kld|grpo) \| lr ", line)]
    assert len(tuning) == 4 and sum("**yes**" in line for line in tuning) == 2
    assert "Rule (fixed before the runs)" in report
    for claim in ("Gradient norms", "peak-then-collapse", "reused", "Final reward"):
        assert re.search(rf"{claim}.*\*\*(held|not held|unclear)\*\*", report), claim
    assert "`reverse`" in report and "95% CI" in report
    assert "torch" in report and "held-out seeds: [1, 2]" in report
    pngs = sorted((out / "stability").glob("*.png"))
    assert len(pngs) == 6 and len(list((out / "stability" / "real").glob("*.png"))) == 6
    for png in pngs:
        data = png.read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and 5_000 < len(data) < 200_000
        assert f"stability/{png.name}" in report
    # The same seed trained twice gives the same numbers (the report measures it).
    assert "The repeat was bit-identical" in report

    # Finished runs are kept: a second invocation trains nothing and reports the same table.
    assert lco_main([*argv, "--out", str(tmp_path / "again"), "--report-only"]) == 0
    again = (tmp_path / "again" / "stability.md").read_text()
    assert rows == [line for line in again.splitlines() if line in rows]


def test_identical_algorithms_are_detected() -> None:
    same = [
        _run(a, "single", seed, [1.0, 2.0], 0.4) for a in ("grpo", "reinforce") for seed in (1, 2)
    ]
    other = [_run("lco_kld", "single", seed, [1.0, 3.0], 0.4) for seed in (1, 2)]
    assert identical_pairs([*same, *other]) == [("single", "grpo", "reinforce")]


def test_a_stage_with_one_base_learning_rate_gives_it_to_every_algorithm() -> None:
    """The real-model stage: LCO's and GRPO's size-based defaults differ 20x there, so the
    stage sets one base rate and each algorithm's tuned multiplier applies to it."""
    assert PRESETS["full"].real is not None and PRESETS["full"].real.learning_rate == 2e-5
    cfg = replace(PRESETS["quick"], learning_rate=2e-5)
    chosen = {"lco_kld": Candidate(1.0, "beta", 2.0), "grpo": Candidate(3.0)}
    rates = {
        key.algorithm: job_body(cfg, key, "data", {})["method"]["reinforcement"][
            "hyperparameters"]
        for key in run_keys(cfg, chosen)
    }  # fmt: skip
    assert rates["lco_kld"]["learning_rate"] == 2e-5 and rates["grpo"]["learning_rate"] == 6e-5
    assert "learning_rate_multiplier" not in rates["grpo"] and rates["lco_kld"]["beta"] == 2.0
