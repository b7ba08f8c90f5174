"""The training process: runs `lco_core.runner.run_job` for one attempt of one job.

    python -m worker.child --config run.json --events-fd 5 --control-fd 6

Started by the supervisor (never by users). Metrics, events and checkpoints go out on the
events fd as JSON lines; cancel/pause/preempt requests come in on the control fd and are
answered through `Callbacks.should_stop`, which the trainer polls between steps. If the
supervisor vanishes (control fd closed), the run stops as preempted so nothing is orphaned.
The run config's `memory_limit_mb` caps the process' address space before the trainer
loads (worker.memory); running out is reported as the error category `out_of_memory`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from jobs.logs import configure_logging, log_context
from lco_core.callbacks import Callbacks, Level, Phase, StopReason
from lco_spec.errors import SpecError
from worker.memory import apply_limit, is_out_of_memory
from worker.protocol import OUT_OF_MEMORY, encode


class RelayCallbacks(Callbacks):
    """Callbacks that write to the events pipe and read stop requests from the control pipe."""

    def __init__(self, out: IO[str], control: IO[str]):
        self._out = out
        self._lock = threading.Lock()
        self._stop: StopReason | None = None
        threading.Thread(target=self._listen, args=(control,), daemon=True).start()

    def _listen(self, control: IO[str]) -> None:
        for line in control:
            word = line.strip()
            if word in ("cancel", "pause", "preempt"):
                self._stop = word  # type: ignore[assignment]
        if self._stop is None:
            self._stop = "preempt"  # supervisor gone: checkpoint and leave

    def send(self, message: dict[str, Any]) -> None:
        with self._lock:
            try:
                self._out.write(encode(message))
                self._out.flush()
            except (BrokenPipeError, ValueError):
                self._stop = self._stop or "preempt"

    def on_metrics(self, step: int, metrics: dict[str, float]) -> None:
        self.send({"t": "metrics", "step": step, "metrics": metrics})

    def on_event(self, level: Level, message: str, data: dict[str, Any] | None = None) -> None:
        self.send({"t": "event", "level": level, "message": message, "data": data})

    def on_phase(self, phase: Phase, message: str) -> None:
        self.send({"t": "phase", "phase": phase, "message": message})

    def on_samples(self, step: int, samples: list[dict[str, Any]]) -> None:
        self.send({"t": "samples", "step": step, "samples": samples})

    def on_checkpoint(self, path: Path, step: int, metrics: dict[str, float]) -> None:
        self.send({"t": "checkpoint", "path": str(path), "step": step, "metrics": metrics})

    def should_stop(self) -> StopReason | None:
        return self._stop


def main(argv: list[str] | None = None, run: Callable[..., Any] | None = None) -> int:
    """Run one attempt; `run` defaults to `lco_core.runner.run_job` (tests pass a scripted one)."""
    parser = argparse.ArgumentParser(prog="worker.child")
    parser.add_argument("--config", required=True, type=Path)
    parser.add_argument("--events-fd", required=True, type=int)
    parser.add_argument("--control-fd", required=True, type=int)
    args = parser.parse_args(argv)

    out = os.fdopen(args.events_fd, "w", buffering=1)
    control = os.fdopen(args.control_fd, "r")
    callbacks = RelayCallbacks(out, control)
    config = json.loads(args.config.read_text())
    configure_logging()
    # Before the trainer loads anything: the limit covers the model and all it allocates.
    apply_limit(int(config.get("memory_limit_mb") or 0))
    try:
        from lco_spec.job import parse_job_spec

        if run is None:
            from lco_core.runner import run_job

            run = run_job
        with log_context(**config.get("log_context", {})):
            result = run(
                parse_job_spec(config["spec"]),
                training_file=Path(config["training_file"]),
                validation_file=Path(config["validation_file"])
                if config.get("validation_file")
                else None,
                output_dir=Path(config["output_dir"]),
                callbacks=callbacks,
                model_path=config.get("model_path"),
                device=config.get("device", "auto"),
            )
    except SpecError as exc:
        callbacks.send(
            {
                "t": "error",
                "category": "user",
                "message": str(exc),
                "param": exc.param,
                "code": exc.code,
            }
        )
        return 2
    except Exception as exc:
        traceback.print_exc(file=sys.stderr)
        category = OUT_OF_MEMORY if is_out_of_memory(exc) else "system"
        message = f"{type(exc).__name__}: {exc}".rstrip(": ")
        callbacks.send({"t": "error", "category": category, "message": message[:2000]})
        return 1
    callbacks.send(
        {
            "t": "result",
            "status": result.status,
            "step": result.step,
            "total_steps": result.total_steps,
            "final_checkpoint": str(result.final_checkpoint) if result.final_checkpoint else None,
            "trained_tokens": result.trained_tokens,
            "summary": result.summary,
        }
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
