"""Training-metric sinks (lco_core.metric_sinks): a tiny lco-tiny run leaves TensorBoard event
files in its dir that TensorBoard's own reader reads back step for step; OpenAI's W&B
integration logs to W&B when the deployment has it (a stand-in `wandb` module here) and is a
warning event, never an error, when it does not; a sink that fails is dropped with a
warning while the run goes on."""

from __future__ import annotations

import importlib.machinery
import sys
import types
from pathlib import Path
from typing import Any

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lco_core.callbacks import Callbacks, Level
from lco_core.metric_sinks import (
    TENSORBOARD_DIR,
    WANDB_NOT_CONFIGURED,
    SinkCallbacks,
    with_metric_sinks,
)
from lco_core.runner import run_job
from lco_spec.job import parse_job_spec


class Recorder(Callbacks):
    def __init__(self) -> None:
        self.metrics: list[tuple[int, dict[str, float]]] = []
        self.events: list[tuple[Level, str, dict[str, Any] | None]] = []

    def on_metrics(self, step: int, metrics: dict[str, float]) -> None:
        self.metrics.append((step, metrics))

    def on_event(self, level: Level, message: str, data: dict[str, Any] | None = None) -> None:
        self.events.append((level, message, data))


WANDB = {"type": "wandb", "wandb": {"project": "lco", "name": "tiny", "tags": ["ci"]}}


def _spec(data: Path, *, steps: int = 3, integrations: list[Any] | None = None) -> Any:
    hp = {"batch_size": 2, "micro_batch_size": 2, "max_steps": steps, "eval_samples": 1}
    return parse_job_spec(
        {
            "model": "lco-tiny",
            "training_file": str(data),
            "seed": 1,
            "method": {"type": "supervised", "supervised": {"hyperparameters": hp}},
            **({"integrations": integrations} if integrations else {}),
        }
    )


def _data(tmp_path: Path) -> Path:
    row = (
        '{"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]}'
    )
    path = tmp_path / "train.jsonl"
    path.write_text((row + "\n") * 4)
    return path


@pytest.mark.e2e
def test_tensorboard_reads_a_runs_scalars(tiny_model_path: Path, tmp_path: Path) -> None:
    data, out, recorder = _data(tmp_path), tmp_path / "job", Recorder()
    result = run_job(
        _spec(data), training_file=data, validation_file=None, output_dir=out, callbacks=recorder
    )
    assert result.status == "succeeded"
    events = EventAccumulator(str(out / TENSORBOARD_DIR))
    events.Reload()
    assert "loss" in events.Tags()["scalars"]
    read = [(e.step, e.value) for e in events.Scalars("loss")]
    sent = [(step, m["loss"]) for step, m in recorder.metrics]
    assert [s for s, _ in read] == [1, 2, 3] == [s for s, _ in sent]
    assert [v for _, v in read] == pytest.approx([v for _, v in sent], rel=1e-6)
    assert not [e for e in recorder.events if e[0] == "warn"]


def test_wandb_requested_but_not_configured_is_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    recorder = Recorder()
    sinks = with_metric_sinks(_spec(_data(tmp_path), integrations=[WANDB]), tmp_path, recorder)
    assert [s.name for s in sinks.sinks] == ["TensorBoard"]
    assert [(level, message) for level, message, _ in recorder.events] == [
        ("warn", WANDB_NOT_CONFIGURED)
    ]
    sinks.on_metrics(1, {"loss": 1.0})
    sinks.close()
    assert recorder.metrics == [(1, {"loss": 1.0})]


def test_wandb_configured_logs_every_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: dict[str, Any] = {"log": [], "finished": False}

    class Run:
        def log(self, metrics: dict[str, float], step: int) -> None:
            calls["log"].append((step, metrics))

        def finish(self) -> None:
            calls["finished"] = True

    def init(**kwargs: Any) -> Run:
        calls["init"] = kwargs
        return Run()

    fake = types.ModuleType("wandb")
    fake.__spec__ = importlib.machinery.ModuleSpec("wandb", None)
    fake.init = init  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.setenv("WANDB_API_KEY", "test-key")
    recorder = Recorder()
    job_dir = tmp_path / "ftjob-abc"
    sinks = with_metric_sinks(_spec(_data(tmp_path), integrations=[WANDB]), job_dir, recorder)
    assert [s.name for s in sinks.sinks] == ["TensorBoard", "W&B"]
    sinks.on_metrics(1, {"loss": 0.5, "tokens": 12, "note": "x", "bad": float("nan")})  # type: ignore[dict-item]
    sinks.close()
    init_kw = calls["init"]
    assert (init_kw["project"], init_kw["name"], init_kw["tags"]) == ("lco", "tiny", ["ci"])
    assert init_kw["id"] == "ftjob-abc" and init_kw["resume"] == "allow"
    assert calls["log"] == [(1, {"loss": 0.5, "tokens": 12.0})]  # numbers only, finite only
    assert calls["finished"] and not recorder.events


def test_a_failing_sink_is_dropped_with_a_warning() -> None:
    class Broken:
        name = "Broken"

        def log(self, step: int, metrics: dict[str, float]) -> None:
            raise OSError("disk full")

        def close(self) -> None:
            raise AssertionError("a dropped sink is not closed")

    recorder = Recorder()
    sinks = SinkCallbacks(recorder, [Broken()])
    sinks.on_metrics(1, {"loss": 1.0})
    sinks.on_metrics(2, {"loss": 0.9})
    sinks.close()
    assert [m for _, m in recorder.metrics] == [{"loss": 1.0}, {"loss": 0.9}]
    assert [(lvl, msg) for lvl, msg, _ in recorder.events] == [
        ("warn", "Broken metrics stopped: OSError: disk full")
    ]


def test_a_resumed_attempt_replaces_the_steps_it_redoes(tmp_path: Path) -> None:
    """Attempt 1 logs steps 1-4 and dies after the step-2 checkpoint; attempt 2 resumes at 3:
    TensorBoard shows its values for 3 and 4, not both attempts' (SummaryWriter's
    purge_step)."""
    from lco_core.metric_sinks import TensorBoardSink

    first = TensorBoardSink(tmp_path)
    for step in (1, 2, 3, 4):
        first.log(step, {"loss": 1.0})
    first.close()
    second = TensorBoardSink(tmp_path)
    for step in (3, 4, 5):
        second.log(step, {"loss": 0.5})
    second.close()
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("loss")] == [
        (1, 1.0),
        (2, 1.0),
        (3, 0.5),
        (4, 0.5),
        (5, 0.5),
    ]
