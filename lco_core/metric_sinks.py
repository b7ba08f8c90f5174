"""Training-metric sinks: each step's metrics also go to TensorBoard, and to Weights & Biases
when the job asks for it (OpenAI's `integrations: [{"type": "wandb", ...}]`) and the
deployment can.

    callbacks = with_metric_sinks(spec, output_dir, callbacks)   # lco_core.runner does this
    ...train...
    callbacks.close()

TensorBoard event files go to `<output_dir>/tensorboard/` (the job's dir, so they are
downloaded and deleted with it), in TensorBoard's own record format and flushed every step,
so a TensorBoard pointed at the dir follows a running job. Each attempt starts its file at
its first step with a purge marker (SummaryWriter's `purge_step`): after a resume,
TensorBoard drops the points an earlier attempt wrote at or past that step (the job's
metrics were rolled back the same way).

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
import socket
import time
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
    """Scalars under `<output_dir>/tensorboard`, tagged by metric name: one event file per
    attempt, in TensorBoard's record format (its own `RecordWriter` and protos).

    Written synchronously rather than through `torch.utils.tensorboard.SummaryWriter`: its
    writer thread costs about 70 MiB of address space (a malloc arena), enough to push a
    small run over `train_memory_limit_mb` 1024 (measured); a step's few scalars take
    microseconds to write."""

    name = "TensorBoard"

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self._records: Any = None

    def _open(self, first_step: int) -> None:
        from tensorboard.compat.proto import event_pb2
        from tensorboard.summary.writer.record_writer import RecordWriter

        self.log_dir.mkdir(parents=True, exist_ok=True)
        # TensorBoard reads a dir's files in name order: seconds first, then (for two files of
        # one process in one second) nanoseconds.
        now = time.time_ns()
        host = socket.gethostname()
        name = f"events.out.tfevents.{now // 10**9:010d}.{host}.{os.getpid()}.{now}"
        self._records = RecordWriter(open(self.log_dir / name, "wb"))  # noqa: SIM115
        self._write(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))
        # SummaryWriter's purge_step: TensorBoard drops points at or past this step that
        # earlier files hold (an earlier attempt's steps after the checkpoint we resumed).
        start = event_pb2.SessionLog(status=event_pb2.SessionLog.START)
        self._write(event_pb2.Event(wall_time=time.time(), step=first_step, session_log=start))

    def _write(self, event: Any) -> None:
        self._records.write(event.SerializeToString())

    def log(self, step: int, metrics: dict[str, float]) -> None:
        from tensorboard.compat.proto import event_pb2, summary_pb2

        if self._records is None:
            self._open(step)
        values = [summary_pb2.Summary.Value(tag=k, simple_value=v) for k, v in metrics.items()]
        summary = summary_pb2.Summary(value=values)
        self._write(event_pb2.Event(wall_time=time.time(), step=step, summary=summary))
        self._records.flush()

    def close(self) -> None:
        if self._records is not None:
            self._records.close()
            self._records = None


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
