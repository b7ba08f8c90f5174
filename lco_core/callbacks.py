"""How a caller observes and steers a training run: the only channel out of the trainer.

The worker implements these to relay metrics/events/checkpoints to the job store and to
ask the run to stop between steps; `lco train` implements them for a progress bar.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

StopReason = Literal["cancel", "pause", "preempt"]
Level = Literal["info", "warn", "error"]
# What a run is doing, in order; the slow one-time phases come before the first step.
Phase = Literal["preparing_model", "starting_engine", "evaluating", "training"]


class Callbacks:
    """Base class: every hook is a no-op, so callers override only what they need."""

    def on_metrics(self, step: int, metrics: dict[str, float]) -> None:
        """Called once per completed optimiser step with that step's metrics."""

    def on_event(self, level: Level, message: str, data: dict[str, Any] | None = None) -> None:
        """A human-readable event (warnings, evaluation results, the run's config)."""

    def on_phase(self, phase: Phase, message: str) -> None:
        """The run entered `phase`; `message` says what it is doing, for people
        (`"loading lco-tiny from /path"`, `"starting the vLLM engine"`)."""

    def on_samples(self, step: int, samples: list[dict[str, Any]]) -> None:
        """A few of the step's rollouts, each `{"prompt", "completion", "reward"}`, so people
        can read what the policy generates (the dashboard shows them per step)."""

    def on_checkpoint(self, path: Path, step: int, metrics: dict[str, float]) -> None:
        """A complete checkpoint (manifest written, atomically renamed) now exists at `path`."""

    def should_stop(self) -> StopReason | None:
        """Polled between steps; a non-None answer makes the trainer checkpoint and return."""
        return None


class ForwardingCallbacks(Callbacks):
    """Passes every hook to `inner`: the base of a wrapper that adds to one hook (the
    metric sinks add to `on_metrics`) and keeps the rest, `should_stop` included."""

    def __init__(self, inner: Callbacks) -> None:
        self.inner = inner

    def on_metrics(self, step: int, metrics: dict[str, float]) -> None:
        self.inner.on_metrics(step, metrics)

    def on_event(self, level: Level, message: str, data: dict[str, Any] | None = None) -> None:
        self.inner.on_event(level, message, data)

    def on_phase(self, phase: Phase, message: str) -> None:
        self.inner.on_phase(phase, message)

    def on_samples(self, step: int, samples: list[dict[str, Any]]) -> None:
        self.inner.on_samples(step, samples)

    def on_checkpoint(self, path: Path, step: int, metrics: dict[str, float]) -> None:
        self.inner.on_checkpoint(path, step, metrics)

    def should_stop(self) -> StopReason | None:
        return self.inner.should_stop()
