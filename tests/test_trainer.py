"""The trainers on lco-tiny: exact resume, the local CLI, and clear errors for bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from safetensors.torch import load_file

from lco_core.callbacks import Callbacks, Level, StopReason
from lco_core.cli_train import main as train_main
from lco_core.runner import run_job
from lco_core.tasks import get_task, write_jsonl
from lco_spec.errors import SpecError
from lco_spec.job import parse_job_spec


def rl_job(training_file: str, **hyperparameters: Any) -> dict[str, Any]:
    hp = {
        "batch_size": 4,
        "n_samples": 4,
        "max_completion_tokens": 8,
        "eval_samples": 8,
        "checkpoint_interval": 2,
        "eval_interval": 100,
    } | hyperparameters
    return {
        "model": "lco-tiny",
        "training_file": training_file,
        "seed": 3,
        "method": {
            "type": "reinforcement",
            "reinforcement": {"grader": get_task("addition").grader(), "hyperparameters": hp},
        },
    }


@pytest.fixture(scope="module")
def addition_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "addition.jsonl"
    write_jsonl(get_task("addition").examples(64, seed=1), path)
    return path


class StopAt(Callbacks):
    def __init__(self, step: int) -> None:
        self.step, self.seen = step, 0

    def on_metrics(self, step: int, metrics: dict[str, float]) -> None:
        self.seen = step

    def should_stop(self) -> StopReason | None:
        return "pause" if self.seen >= self.step else None


def weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    return load_file(str(checkpoint / "model.safetensors"))


@pytest.mark.parametrize(
    "extra",
    [
        {},  # lco_kld, one update per batch
        {"algorithm": "ppo", "ppo_epochs": 2},  # value head, GAE, several updates per batch
    ],
)
def test_rl_resume_matches_uninterrupted_run(
    tiny_model_path: Path, addition_file: Path, tmp_path: Path, extra: dict[str, Any]
) -> None:
    spec = parse_job_spec(rl_job(str(addition_file), max_steps=4, **extra))
    straight = run_job(
        spec, training_file=addition_file, validation_file=None, output_dir=tmp_path / "a"
    )
    first = run_job(
        spec,
        training_file=addition_file,
        validation_file=None,
        output_dir=tmp_path / "b",
        callbacks=StopAt(2),
    )
    assert first.status == "paused" and first.step == 2
    resumed = run_job(
        spec, training_file=addition_file, validation_file=None, output_dir=tmp_path / "b"
    )
    assert straight.status == resumed.status == "succeeded" and resumed.step == 4
    a = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    b = [json.loads(line) for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in b] == [1, 2, 3, 4]
    for ma, mb in zip(a, b, strict=True):
        for key in ("reward_mean", "loss", "grad_norm", "entropy"):
            assert ma[key] == pytest.approx(mb[key], rel=1e-4, abs=1e-6), (ma["step"], key)
    assert straight.final_checkpoint and resumed.final_checkpoint
    wa, wb = weights(straight.final_checkpoint), weights(resumed.final_checkpoint)
    for name in wa:
        assert torch.allclose(wa[name], wb[name], atol=1e-5), name


def test_sft_resume_matches_uninterrupted_run(tiny_model_path: Path, tmp_path: Path) -> None:
    data = tmp_path / "sft.jsonl"
    write_jsonl(get_task("reverse").sft_examples(32, seed=2), data)
    spec = parse_job_spec(
        {
            "model": "lco-tiny",
            "training_file": str(data),
            "seed": 1,
            "method": {
                "type": "supervised",
                "supervised": {
                    "hyperparameters": {"batch_size": 4, "max_steps": 4, "checkpoint_interval": 2}
                },
            },
        }
    )
    straight = run_job(spec, training_file=data, validation_file=None, output_dir=tmp_path / "a")
    run_job(
        spec,
        training_file=data,
        validation_file=None,
        output_dir=tmp_path / "b",
        callbacks=StopAt(2),
    )
    resumed = run_job(spec, training_file=data, validation_file=None, output_dir=tmp_path / "b")
    assert straight.final_checkpoint and resumed.final_checkpoint
    wa, wb = weights(straight.final_checkpoint), weights(resumed.final_checkpoint)
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)


class CancelAt(StopAt):
    """Stops by cancel, which saves no checkpoint; records warnings."""

    def __init__(self, step: int) -> None:
        super().__init__(step)
        self.warnings: list[str] = []

    def on_event(self, level: Level, message: str, data: dict[str, Any] | None = None) -> None:
        if level == "warn":
            self.warnings.append(message)

    def should_stop(self) -> StopReason | None:
        return "cancel" if self.seen >= self.step else None


def test_a_rerun_with_no_checkpoint_starts_over_without_duplicate_steps(
    tiny_model_path: Path, tmp_path: Path
) -> None:
    data = tmp_path / "sft.jsonl"
    write_jsonl(get_task("reverse").sft_examples(32, seed=2), data)
    hp = {"batch_size": 4, "max_steps": 4, "checkpoint_interval": 100}
    spec = parse_job_spec(
        {
            "model": "lco-tiny",
            "training_file": str(data),
            "method": {"type": "supervised", "supervised": {"hyperparameters": hp}},
        }
    )
    out = tmp_path / "run"
    run_job(spec, training_file=data, validation_file=None, output_dir=out, callbacks=CancelAt(2))
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2] and not (out / "checkpoints" / "step-2").exists()
    again = CancelAt(10)
    run_job(spec, training_file=data, validation_file=None, output_dir=out, callbacks=again)
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
    assert any("no checkpoint to resume from" in w and "2 step(s)" in w for w in again.warnings)


def test_cli_writes_metrics_and_checkpoints(
    tiny_model_path: Path, addition_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "job.yaml"
    config.write_text(yaml.safe_dump(rl_job(str(addition_file), max_steps=2, algorithm="grpo")))
    assert train_main(["--config", str(config), "--output", str(tmp_path / "run")]) == 0
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    metrics = [json.loads(line) for line in lines]
    assert [m["step"] for m in metrics] == [1, 2]
    every_step = ("step", "reward_mean", "loss", "grad_norm", "entropy", "sampled_prob")
    every_step += ("clip_frac", "logp_mismatch_max", "time_rollout", "time_update", "peak_mem_mb")
    # The costly diagnostics run at step 1 and every diagnostic_interval (10) steps.
    diagnostics = ("grad_norm_pos", "grad_norm_neg", "kl_old", "kl_init", "time_metrics")
    for key in every_step + diagnostics:
        assert key in metrics[0], key
    for key in every_step:
        assert key in metrics[1], key
    for key in diagnostics:
        assert key not in metrics[1], key

    assert (tmp_path / "run" / "checkpoints" / "step-2" / "manifest.json").is_file()
    assert "succeeded after 2/2 steps" in capsys.readouterr().out


def test_cli_reports_bad_config_with_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "job.yaml"
    job = rl_job("missing.jsonl")
    job["method"]["reinforcement"]["hyperparameters"]["lco_loss"] = "lco_nope"
    config.write_text(yaml.safe_dump(job))
    assert train_main(["--config", str(config), "--output", str(tmp_path / "run")]) == 2
    assert "method.reinforcement.hyperparameters.lco_loss" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"beta": 0}, "beta"),
        ({"algorithm": "dpo-ish"}, "algorithm"),
        ({"n_samples": 1, "advantage": "group"}, "n_samples"),
        ({"advantage": "gae"}, "advantage"),
        ({"unknown_knob": 1}, "unknown_knob"),
    ],
)
def test_invalid_hyperparameters_name_the_field(
    addition_file: Path, tmp_path: Path, change: dict[str, Any], param: str
) -> None:
    with pytest.raises(SpecError) as err:
        spec = parse_job_spec(rl_job(str(addition_file), **change))
        run_job(spec, training_file=addition_file, validation_file=None, output_dir=tmp_path)
    assert err.value.param is not None and param in err.value.param


def test_malformed_jsonl_names_the_line(tmp_path: Path) -> None:
    data = tmp_path / "bad.jsonl"
    data.write_text(
        '{"messages": [{"role": "user", "content": "hi"}], "answer": "1"}\n{"messages": 3}\n'
    )
    with pytest.raises(SpecError) as err:
        run_job(
            parse_job_spec(rl_job(str(data))),
            training_file=data,
            validation_file=None,
            output_dir=tmp_path / "run",
        )
    assert err.value.line == 2 and err.value.param is not None and "messages" in err.value.param


def test_grader_template_with_missing_field_is_refused(addition_file: Path, tmp_path: Path) -> None:
    job = rl_job(str(addition_file))
    job["method"]["reinforcement"]["grader"] = {
        "type": "string_check",
        "name": "x",
        "operation": "eq",
        "input": "{{sample.output_text}}",
        "reference": "{{item.solution}}",
    }
    with pytest.raises(SpecError) as err:
        run_job(
            parse_job_spec(job),
            training_file=addition_file,
            validation_file=None,
            output_dir=tmp_path / "run",
        )
    assert "solution" in str(err.value)


def test_lco_shorthand_refuses_another_algorithm() -> None:
    job = rl_job("x.jsonl")
    job["method"] = {"type": "lco", "lco": job["method"]["reinforcement"]}
    assert parse_job_spec(job).method.rl.hyperparameters.algorithm == "lco"
    job["method"]["lco"]["hyperparameters"]["algorithm"] = "grpo"
    with pytest.raises(SpecError) as err:
        parse_job_spec(job)
    assert err.value.param == "method.lco.hyperparameters.algorithm"


class _EngineThatUnderestimates:
    """HF rollouts whose reported logprobs are 0.5 nats low, standing in for an engine whose
    numerics differ from the trainer's (bf16 vLLM on a GPU)."""

    def __init__(self, engine: Any) -> None:
        self.engine, self.name = engine, "shifted"

    def generate(self, prompts: Any, params: Any) -> Any:
        groups = self.engine.generate(prompts, params)
        for group in groups:
            for c in group:
                c.logprobs = [lp - 0.5 for lp in c.logprobs]
        return groups

    def sync_weights(self, model: Any) -> None:
        self.engine.sync_weights(model)

    def close(self) -> None:
        self.engine.close()


@pytest.mark.parametrize(("cap", "expected"), [(1.2, 1.2), (3.0, 1.6487)])
def test_truncated_importance_weights(
    tiny_model_path: Path, addition_file: Path, tmp_path: Path, cap: float, expected: float
) -> None:
    """pi_trainer / pi_engine = e^0.5 on every token, truncated at the cap."""
    from lco_core.runner import build_trainer

    spec = parse_job_spec(
        rl_job(str(addition_file), algorithm="grpo", importance_cap=cap, max_steps=1)
    )
    trainer = build_trainer(
        spec,
        training_file=addition_file,
        validation_file=None,
        output_dir=tmp_path,
        callbacks=Callbacks(),
    )
    trainer.engine = _EngineThatUnderestimates(trainer.engine)  # type: ignore[attr-defined]
    metrics = trainer.train_step(1)  # type: ignore[attr-defined]
    assert metrics["logp_mismatch_mean"] == pytest.approx(0.5, abs=1e-4)
    assert metrics["importance_weight_mean"] == pytest.approx(expected, abs=1e-3)
    assert metrics["importance_weight_min"] == pytest.approx(expected, abs=1e-3)


def test_importance_weights_in_the_updates_forward_equal_a_separate_pass(
    tiny_model_path: Path, addition_file: Path, tmp_path: Path
) -> None:
    """With one update per batch the fused loss weights the advantages by min(pi_old /
    pi_engine, cap) from the update's own forward: the same step, metrics and weights as
    a separate pi_old pass before the update (which it replaces)."""
    from lco_core.runner import build_trainer

    results, lr = [], 1e-4
    for separate in (True, False):
        spec = parse_job_spec(
            rl_job(
                str(addition_file),
                algorithm="grpo",
                importance_cap=1.2,
                max_steps=1,
                learning_rate=lr,
            )
        )
        trainer: Any = build_trainer(
            spec,
            training_file=addition_file,
            validation_file=None,
            output_dir=tmp_path / str(separate),
            callbacks=Callbacks(),
        )
        assert trainer.separate_old_pass is False  # the default now
        trainer.separate_old_pass = separate
        trainer.engine = _EngineThatUnderestimates(trainer.engine)
        grads: list[torch.Tensor] = []
        step = trainer.optimizer.step

        def capture(
            *args: Any, step: Any = step, model: Any = trainer.model, out: Any = grads, **kw: Any
        ) -> Any:
            params = [p for p in model.parameters() if p.grad is not None]
            out.append(torch.cat([p.grad.detach().flatten() for p in params]))
            return step(*args, **kw)

        trainer.optimizer.step = capture
        torch.manual_seed(0)
        metrics = trainer.train_step(1)
        weights = torch.cat([p.detach().flatten() for p in trainer.model.parameters()])
        results.append((metrics, weights, grads[0]))
    (a, wa, ga), (b, wb, gb) = results
    for key in ("importance_weight_mean", "importance_weight_min", "loss", "grad_norm"):
        assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-7), key
    assert a["importance_weight_mean"] == pytest.approx(1.2, abs=1e-3)  # e^0.5 capped
    # The same gradient, coordinate by coordinate, up to the rounding of two forwards.
    assert torch.allclose(ga, gb, rtol=1e-3, atol=1e-5 * float(ga.abs().max()))
    # The two pi_old forwards differ in their last bits, so a gradient that is ~0 can change
    # sign, and Adam's first step (about lr x sign(g)) moves such a weight by up to lr
    # either way. How many weights have a gradient that small depends on the CPU's
    # rounding, so the weights are only bounded; the gradients above are the step.
    assert float((wa - wb).abs().max()) <= 2 * lr + 1e-6


def test_importance_cap_only_for_ratio_losses(addition_file: Path) -> None:
    from lco_spec.train_config import resolve_config

    spec = parse_job_spec(rl_job(str(addition_file), importance_cap=2.0))  # lco
    with pytest.raises(SpecError) as err:
        resolve_config(spec, n_train=64)
    assert err.value.param == "method.reinforcement.hyperparameters.importance_cap"


class Recorder(Callbacks):
    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict[str, Any]]] = []
        self.metrics: list[dict[str, float]] = []

    def on_event(self, level: Level, message: str, data: dict[str, Any] | None = None) -> None:
        self.events.append((level, message, data or {}))

    def on_metrics(self, step: int, metrics: dict[str, float]) -> None:
        self.metrics.append(metrics)


def test_steps_without_reward_variance_are_warned_once_and_totalled(
    tiny_model_path: Path, addition_file: Path, tmp_path: Path
) -> None:
    """A grader that gives every sample the same score leaves no learning signal: one warning
    at the first such step and a total at the end, not one per step."""
    job = rl_job(str(addition_file), max_steps=3)
    job["method"]["reinforcement"]["grader"] = {
        "type": "string_check",
        "name": "never",
        "input": "{{sample.output_text}}",
        "reference": "no completion is this",
        "operation": "eq",
    }
    recorder = Recorder()
    result = run_job(
        parse_job_spec(job),
        training_file=addition_file,
        validation_file=None,
        output_dir=tmp_path,
        callbacks=recorder,
    )
    assert result.status == "succeeded"
    warnings = [(message, data) for level, message, data in recorder.events if level == "warn"]
    assert len(warnings) == 2, recorder.events
    assert warnings[0][0].startswith("step 1 had no learning signal")
    assert warnings[1][0] == "3 of 3 steps had no reward variance: no learning signal"
    assert [m["zero_std_group_frac"] for m in recorder.metrics] == [1.0, 1.0, 1.0]
    assert [m["advantage_abs_mean"] for m in recorder.metrics] == [0.0, 0.0, 0.0]
    assert result.summary["no_signal_steps"] == 3


@pytest.mark.parametrize(
    ("hyperparameters", "separate_old_pass"),
    [
        ({"algorithm": "lco"}, False),
        ({"algorithm": "grpo"}, False),
        ({"algorithm": "grpo", "importance_cap": 2.0}, False),
        ({"ppo_epochs": 2}, True),
    ],
)
def test_a_step_runs_only_the_forwards_it_needs(
    addition_file: Path, tmp_path: Path, hyperparameters: dict[str, Any], separate_old_pass: bool
) -> None:
    """With one update per batch pi_old is the update's own forward: no separate old-logprob
    pass, no metrics pass and no reference pass outside the diagnostic steps; the update
    runs one forward per micro-batch."""
    from lco_core.runner import build_trainer

    hp = {"batch_size": 2, "n_samples": 4, "micro_batch_size": 3, "max_steps": 3, **hyperparameters}
    spec = parse_job_spec(rl_job(str(addition_file), **hp))
    trainer: Any = build_trainer(
        spec,
        training_file=addition_file,
        validation_file=None,
        output_dir=tmp_path,
        callbacks=Callbacks(),
    )
    passes: list[str] = []
    real = trainer.token_logprobs
    trainer.token_logprobs = lambda model, ro, *, full: (
        passes.append("ref" if model is trainer.ref_model else ("old" if full else "metrics"))
        or real(model, ro, full=full)
    )
    grad_forwards = []
    trainer.base.register_forward_hook(
        lambda *_: grad_forwards.append(1) if torch.is_grad_enabled() else None
    )
    trainer.step = 1
    trainer.train_step(2)  # not a diagnostic step
    assert passes == (["old"] if separate_old_pass else [])
    # 8 sequences in micro-batches of 3: ceil(8 / 3) = 3 forwards per epoch.
    assert len(grad_forwards) == 3 * hyperparameters.get("ppo_epochs", 1)
    passes.clear()
    trainer.step = 9
    trainer.train_step(10)  # a diagnostic step: KL(old||new) after the update, and kl_init
    assert passes == (["old"] if separate_old_pass else []) + ["ref", "metrics"]


def test_micro_batches_give_the_same_update_as_one_pass(
    addition_file: Path, tmp_path: Path
) -> None:
    """Gradient accumulation over micro-batches is the same step as the whole batch at once:
    the same weights after a step, and the same total and split grad norms."""
    from lco_core.runner import build_trainer

    results = []
    for micro in (1, 8):
        hp = {"batch_size": 2, "n_samples": 4, "micro_batch_size": micro, "max_steps": 2}
        spec = parse_job_spec(rl_job(str(addition_file), rollout_engine="hf", **hp))
        trainer: Any = build_trainer(
            spec,
            training_file=addition_file,
            validation_file=None,
            output_dir=tmp_path / str(micro),
            callbacks=Callbacks(),
        )
        torch.manual_seed(0)
        metrics = trainer.train_step(1)  # a diagnostic step: the split norms too
        weights = torch.cat([p.detach().flatten() for p in trainer.model.parameters()])
        results.append((metrics, weights))
    (a, wa), (b, wb) = results
    assert a["micro_batch_size"] == 1 and b["micro_batch_size"] == 8
    for key in ("loss", "grad_norm", "grad_norm_pos", "grad_norm_neg", "entropy", "kl_old"):
        assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-7), key
    # Adam's first step moves every weight by about lr * sign(g) (lr 1e-4): where g is ~0,
    # summation order can flip a near-zero gradient, so allow a fraction of one step there.
    torch.testing.assert_close(wa, wb, rtol=1e-5, atol=3e-5)
