"""The training process: runs `lco_core.runner.run_job` for one attempt of one job.

    python -m worker.child --config run.json --events-fd 5 --control-fd 6

Started by the supervisor (never by users). Metrics, events and checkpoints go out on the
events fd as JSON lines; cancel/pause/preempt requests come in on the control fd and are
answered through `Callbacks.should_stop`, which the trainer polls between steps. If the
supervisor vanishes (control fd closed), the run stops as preempted so nothing is orphaned.
With `ranks` > 1 in the run config this process is only the launcher: it starts that many
ranks with torchrun's own launcher (`elastic_launch`, which ends every rank when one dies)
in this process group, so the supervisor's group kill reaches them all. Rank 0 opens the
two pipes through /proc (the launcher holds them) and reports; the other ranks are silent.
The run config's `memory_limit_mb` caps the process' address space before the trainer
loads (worker.memory); running out is reported as the error category `out_of_memory`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
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


# How long a rank other than 0 waits before exiting on a job error, so that rank 0 (which
# meets the same error on the same data) sends it before the launcher ends the group.
RANK_ERROR_GRACE_S = 5.0


def launch_ranks(ranks: int, argv: list[str]) -> int:
    """Run `main(argv)` as `ranks` ranks on this machine under torchrun's launcher (one
    rendezvous on a free local port, no restarts: the supervisor retries attempts)."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=ranks,
        run_id=f"lco-{os.getpid()}",
        rdzv_backend="c10d",
        rdzv_endpoint="127.0.0.1:0",
        max_restarts=0,
        start_method="spawn",
        monitor_interval=0.5,
    )
    try:
        elastic_launch(config, main)(argv)
    except ChildFailedError as exc:
        print(f"a rank failed: {exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None, run: Callable[..., Any] | None = None) -> int:
    """Run one attempt; `run` defaults to `lco_core.runner.run_job` (tests pass a scripted one)."""
    parser = argparse.ArgumentParser(prog="worker.child")
    parser.add_argument("--config", required=True, type=Path)
    parser.add_argument("--events-fd", required=True, type=int)
    parser.add_argument("--control-fd", required=True, type=int)
    args = parser.parse_args(argv)
    config = json.loads(args.config.read_text())
    configure_logging()
    in_ranks = "LOCAL_RANK" in os.environ
    if int(config.get("ranks") or 1) > 1 and not in_ranks:
        return launch_ranks(int(config["ranks"]), argv if argv is not None else sys.argv[1:])
    main_rank = os.environ.get("RANK", "0") == "0"
    callbacks: Callbacks
    if not main_rank:
        callbacks = Callbacks()  # rank 0 reports, and passes stop requests on
    elif in_ranks:
        # The launcher (our parent) holds the pipes; a rank reopens them through /proc.
        fds = f"/proc/{os.getppid()}/fd"
        callbacks = RelayCallbacks(
            open(f"{fds}/{args.events_fd}", "w", buffering=1),  # noqa: SIM115 (lives as long as the run)
            open(f"{fds}/{args.control_fd}"),  # noqa: SIM115
        )
    else:
        out = os.fdopen(args.events_fd, "w", buffering=1)
        callbacks = RelayCallbacks(out, os.fdopen(args.control_fd, "r"))
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
        if not isinstance(callbacks, RelayCallbacks):
            time.sleep(RANK_ERROR_GRACE_S)  # rank 0 meets the same error and reports it
            return 2
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
        if not isinstance(callbacks, RelayCallbacks):
            return 1
        category = OUT_OF_MEMORY if is_out_of_memory(exc) else "system"
        message = f"{type(exc).__name__}: {exc}".rstrip(": ")
        callbacks.send({"t": "error", "category": category, "message": message[:2000]})
        return 1
    if not isinstance(callbacks, RelayCallbacks):
        return 0
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
