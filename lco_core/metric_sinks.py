"""Training-metric sinks: each step's metrics also go to TensorBoard, and to Weights & Biases
when the job asks for it (OpenAI's `integrations: [{"type": "wandb", ...}]`) and the
deployment can.

    callbacks = with_metric_sinks(spec, output_dir, callbacks)   # lco_core.runner does this
    ...train...
    callbacks.close()

TensorBoard event files go to `<output_dir>/tensorboard/` (the job's dir, so they are
downloaded and deleted with it), written by `torch.utils.tensorboard.SummaryWriter` and
flushed every step, so a TensorBoard pointed at the dir follows a running job. Each attempt
opens its writer at its first step with `purge_step` set to it: after a resume, TensorBoard
drops the points an earlier attempt wrote at or past that step (the job's metrics were
rolled back the same way).

W&B needs the `wandb` package and `WANDB_API_KEY` (or `WANDB_MODE=offline`) in the training
process' environment; without them a job that asks for it trains all the same and gets the
warning event `WANDB_NOT_CONFIGURED`. Every attempt of a job logs into one W&B run (its id
is the job's dir name, `resume="allow"`).

A sink never fails a run: the first error a sink raises becomes a warning event and the sink
is dropped. No sink is required: without `tensorboard` installed the run only warns.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
import re
from pathlib import Path
from typing import Any, Protocol

from lco_core.callbacks import Callbacks, ForwardingCallbacks
from lco_spec.job import JobSpec, WandbIntegration

log = logging.getLogger(__name__)

TENSORBOARD_DIR = "tensorboard"
WANDB_NOT_CONFIGURED = "W&B integration requested but not configured on this deployment"


class MetricSink(Protocol):
    name: str

    def log(self, step: int, metrics: dict[str, float]) -> None: ...

    def close(self) -> None: ...


def _scalars(metrics: dict[str, Any]) -> dict[str, float]:
    """The numeric, finite values (metrics may carry counts as ints, never strings)."""
    return {
        key: float(value)
        for key, value in metrics.items()
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    }


class TensorBoardSink:
    """Scalars under `<output_dir>/tensorboard`, tagged by metric name."""

    name = "TensorBoard"

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self._writer: Any = None

    def log(self, step: int, metrics: dict[str, float]) -> None:
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(self.log_dir), purge_step=step)
        for key, value in metrics.items():
            self._writer.add_scalar(key, value, step)
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def wandb_configured() -> bool:
    """W&B can log from this process: the package is there, and a key (or offline mode)."""
    if importlib.util.find_spec("wandb") is None:
        return False
    return bool(os.environ.get("WANDB_API_KEY")) or os.environ.get("WANDB_MODE") == "offline"


class WandbSink:
    """One W&B run per job, resumed by every attempt."""

    name = "W&B"

    def __init__(self, integration: WandbIntegration, output_dir: Path, config: dict[str, Any]):
        import wandb

        # W&B run ids allow letters, digits, '-' and '_'.
        run_id = re.sub(r"[^A-Za-z0-9_-]", "-", output_dir.resolve().name)[:64] or "run"
        self._run = wandb.init(
            project=integration.project,
            name=integration.name,
            entity=integration.entity,
            tags=list(integration.tags or []),
            id=run_id,
            resume="allow",
            dir=str(output_dir),
            config=config,
        )

    def log(self, step: int, metrics: dict[str, float]) -> None:
        self._run.log(metrics, step=step)

    def close(self) -> None:
        self._run.finish()


class SinkCallbacks(ForwardingCallbacks):
    """`inner` with every step's metrics also written to the sinks."""

    def __init__(self, inner: Callbacks, sinks: list[MetricSink]) -> None:
        super().__init__(inner)
        self.sinks = sinks

    def on_metrics(self, step: int, metrics: dict[str, float]) -> None:
        super().on_metrics(step, metrics)
        scalars = _scalars(metrics)
        for sink in list(self.sinks):
            try:
                sink.log(step, scalars)
            except Exception as exc:  # a sink's failure must never fail training
                self._drop(sink, exc)

    def close(self) -> None:
        for sink in list(self.sinks):
            try:
                sink.close()
            except Exception as exc:
                self._drop(sink, exc)
        self.sinks.clear()

    def _drop(self, sink: MetricSink, exc: Exception) -> None:
        log.warning("metric_sink.failed", extra={"sink": sink.name}, exc_info=True)
        self.sinks.remove(sink)
        self.inner.on_event(
            "warn", f"{sink.name} metrics stopped: {type(exc).__name__}: {exc}"[:500]
        )


def with_metric_sinks(spec: JobSpec, output_dir: Path, callbacks: Callbacks) -> SinkCallbacks:
    """`callbacks` plus the sinks this job and deployment call for; a requested sink that
    cannot run is a warning event, never an error."""
    sinks: list[MetricSink] = []
    if importlib.util.find_spec("tensorboard") is not None:
        sinks.append(TensorBoardSink(output_dir / TENSORBOARD_DIR))
    else:
        log.info("metric_sink.tensorboard_missing")
    for integration in spec.integrations:
        if not wandb_configured():
            callbacks.on_event("warn", WANDB_NOT_CONFIGURED, {"integration": "wandb"})
            continue
        try:
            config = spec.model_dump(mode="json", exclude={"integrations"})
            sinks.append(WandbSink(integration.wandb, output_dir, config))
        except Exception as exc:
            callbacks.on_event(
                "warn", f"W&B run could not start: {type(exc).__name__}: {exc}"[:500]
            )
    return SinkCallbacks(callbacks, sinks)
