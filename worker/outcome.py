"""How a run ended, and the one final move of its job that follows (`write_outcome`).

The supervisor gathers what it saw of the run (`RunEnd`: the child's result or error, the
stop it sent, a limit it enforced, the lease going unrenewed, the OOM killer) and writes the
job's final state through `jobs.transitions` inside its fenced transaction:

- succeeded: the final checkpoint is recorded and the fine-tuned model named;
- a cancel, pause or preemption: cancelled, paused or requeued; a pause or preemption
  gives its attempt back, so they never exhaust `max_attempts`;
- a failure that is the job's own fails it at once: a limit the supervisor enforced
  (`step_timeout`, `max_runtime_exceeded`), running out of memory (`out_of_memory`), a
  user error (the child's SpecError, with its code: `invalid_request`, `grader_timeout`);
- any other failure (a crash) is retried with back-off while attempts are left.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from sqlalchemy.orm import Session

from jobs import transitions
from jobs.backoff import backoff_s
from jobs.events import add_event
from jobs.leases import Lease
from jobs.models import Checkpoint, Job
from jobs.settings import Settings
from worker.protocol import OUT_OF_MEMORY

# How a run ended, short of a failure (None): each has its one final move.
Ending = Literal["succeeded", "cancel", "pause", "preempt"]


def exit_reason(returncode: int | None) -> str:
    if returncode is not None and returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"the training process was killed by {name}"
    return f"the training process exited with code {returncode}"


@dataclass(frozen=True)
class RunEnd:
    """What the supervisor saw of a finished run."""

    returncode: int | None
    result: dict[str, Any] | None  # the child's result message, if it sent one
    error: dict[str, Any] | None  # the child's error message, if it sent one
    stop_sent: str | None  # the stop the supervisor asked for: cancel, pause, preempt
    fatal: tuple[str, str] | None  # a limit the supervisor enforced: (code, message)
    lease_unrenewed: bool  # killed because the lease went a whole TTL unrenewed
    oom_killed: bool  # SIGKILL while the cgroup's OOM-kill count went up


def ending(end: RunEnd) -> tuple[Ending | None, dict[str, Any]]:
    """How the run ended: `succeeded`, `cancel`, `pause`, `preempt`, or None for a
    failure; with the values the child's result reported (none if it sent no result)."""
    result = end.result
    if result is None:
        # Stopped by a request (and killed when it outstayed the grace), or a failure.
        stops: dict[str | None, Ending] = {
            "cancel": "cancel",
            "pause": "pause",
            "preempt": "preempt",
        }
        return stops.get(end.stop_sent), {}
    values: dict[str, Any] = {
        "step": int(result.get("step") or 0),
        "total_steps": int(result.get("total_steps") or 0) or None,
        "trained_tokens": int(result.get("trained_tokens") or 0),
    }
    # A run stopped for any other reason was preempted (the worker's shutdown).
    endings: dict[str, Ending] = {
        "succeeded": "succeeded",
        "cancelled": "cancel",
        "paused": "pause",
    }
    return endings.get(str(result.get("status")), "preempt"), values


def write_outcome(
    session: Session,
    job: Job,
    end: RunEnd,
    *,
    lease: Lease,
    settings: Settings,
    model_name: str,
    record_checkpoint: Callable[[Session, Path, int, dict[str, Any]], Checkpoint],
) -> None:
    """The job's one final move (see the module docstring); the caller's transaction is
    fenced by `lease`, and commits."""
    kind, values = ending(end)
    if kind == "succeeded":
        result = end.result or {}
        summary = result.get("summary") or {}
        final = result.get("final_checkpoint")
        if final:
            values["final_checkpoint_id"] = record_checkpoint(
                session, Path(final), values["step"], summary
            ).id
        values["fine_tuned_model"] = model_name
        transitions.succeed(session, job, values=values)
        if summary:
            add_event(session, job.id, "Run summary", type="metrics", data=summary)
    elif kind == "cancel":
        transitions.cancel(session, job, values=values)
    elif kind == "pause":
        transitions.pause(session, job, values=values, attempt_spent=False)
    elif kind == "preempt":
        transitions.requeue(
            session,
            job,
            delay_s=0.0,
            message="Fine-tuning job preempted; requeued",
            level="info",
            values=values,
            attempt_spent=False,
        )
    else:
        _fail(session, job, end, lease=lease, settings=settings)


def _fail(session: Session, job: Job, end: RunEnd, *, lease: Lease, settings: Settings) -> None:
    """A broken limit, running out of memory or a user error fails at once; a crash is
    retried (with back-off) while attempts are left."""
    error = end.error or {}
    message = str(error.get("message") or exit_reason(end.returncode))
    if end.lease_unrenewed:
        message = (
            f"the training process was stopped: the lease went unrenewed for over "
            f"{lease.ttl_s:g}s (database unreachable or worker frozen)"
        )
    attempt = lease.attempt
    if end.fatal is not None:
        code, message = end.fatal
        transitions.fail(session, job, code=code, message=message)
    elif error.get("category") == OUT_OF_MEMORY or end.oom_killed:
        limit = settings.train_memory_limit_mb
        if error.get("category") == OUT_OF_MEMORY:
            message = "the training process ran out of memory" + (
                f" (train_memory_limit_mb {limit}): {message}" if limit else f": {message}"
            )
        else:
            message = f"the training process was killed by the OOM killer ({message})"
        transitions.fail(session, job, code=OUT_OF_MEMORY, message=message)
    elif error.get("category") == "user":
        code = error.get("code") or "invalid_request"
        transitions.fail(session, job, code=code, message=message, param=error.get("param"))
    elif attempt < job.max_attempts:
        delay = backoff_s(settings.retry_backoff_s, attempt)
        transitions.requeue(
            session,
            job,
            delay_s=delay,
            message=f"Attempt {attempt} failed ({message}); retrying in {delay:.0f}s",
        )
    else:
        message = f"{message} (attempt {attempt} of {job.max_attempts})"
        transitions.fail(session, job, code="training_failed", message=message)
