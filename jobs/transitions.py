"""How a job row leaves a state: one function per move, shared by every caller.

    job = leased_job(session, lease)                 # the worker's side (jobs.leases)
    succeed(session, job, values={...})
    fail(session, job, code="training_failed", message="...")
    requeue(session, job, delay_s=10.0, message="...", attempt_spent=True)
    pause(session, job, attempt_spent=False)
    cancel(session, job)

The supervisor's final write, the reaper, a claim refused for want of attempts and the
user's cancel/pause of a job that is not running all go through `leave`, so "the job
leaves where it was" (lease released, usage closed, GPUs given back, request and phase
cleared, finished_at on a terminal state, one event carrying `data.status`) is written
once. The caller owns the transaction (and, for a leased job, the fence: `jobs.leases`).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from jobs.events import add_event
from jobs.ids import utcnow
from jobs.models import Job
from jobs.states import JobStatus, check_transition, is_terminal
from jobs.usage import close_usage


def leave(
    session: Session,
    job: Job,
    status: JobStatus,
    *,
    message: str,
    level: str = "info",
    error: dict[str, Any] | None = None,
    values: dict[str, Any] | None = None,
    attempt_spent: bool = True,
) -> None:
    """Move `job` to `status` with the bookkeeping every move shares.

    `attempt_spent=False` gives a running job's attempt back: the run was stopped (paused,
    preempted) through no fault of the job's, so it must not bring the job closer to
    `max_attempts`."""
    check_transition(job.status, status)
    now = utcnow()
    if job.status == JobStatus.RUNNING:
        close_usage(session, job.id, now)
        if not attempt_spent:
            job.attempt = max(job.attempt - 1, 0)
    job.status = status
    job.updated_at = now
    job.lease_owner = None
    job.lease_expires_at = None
    job.requested_action = None
    job.phase = None
    # It frees its GPUs; queued again, it waits for the scheduler like any queued job.
    job.admitted_at = None
    job.not_before = None
    if is_terminal(status):
        job.finished_at = now
    if error is not None:
        job.error = error
    for key, value in (values or {}).items():
        setattr(job, key, value)
    add_event(session, job.id, message, level=level, data={"status": status})


def succeed(session: Session, job: Job, *, values: dict[str, Any]) -> None:
    """The run completed; `values` carries its step, tokens, final checkpoint and model."""
    leave(
        session,
        job,
        JobStatus.SUCCEEDED,
        message="The job has successfully completed",
        values=values,
    )


def fail(
    session: Session,
    job: Job,
    *,
    code: str,
    message: str,
    param: str | None = None,
    event: str | None = None,
) -> None:
    """Fail for good: `error = {code, message, param}`; the event defaults to
    "Fine-tuning job failed: <message>"."""
    leave(
        session,
        job,
        JobStatus.FAILED,
        message=event or f"Fine-tuning job failed: {message}",
        level="error",
        error={"code": code, "message": message, "param": param},
    )


def cancel(
    session: Session,
    job: Job,
    *,
    message: str = "Fine-tuning job cancelled",
    values: dict[str, Any] | None = None,
) -> None:
    leave(session, job, JobStatus.CANCELLED, message=message, values=values)


def pause(
    session: Session,
    job: Job,
    *,
    message: str = "Fine-tuning job paused",
    values: dict[str, Any] | None = None,
    attempt_spent: bool = True,
) -> None:
    leave(
        session, job, JobStatus.PAUSED, message=message, values=values, attempt_spent=attempt_spent
    )


def requeue(
    session: Session,
    job: Job,
    *,
    delay_s: float,
    message: str,
    level: str = "warn",
    values: dict[str, Any] | None = None,
    attempt_spent: bool = True,
) -> None:
    """Back to the queue (phase `requeued`); the scheduler admits it again after `delay_s`."""
    from jobs.queue import hold_for_retry

    leave(
        session,
        job,
        JobStatus.QUEUED,
        message=message,
        level=level,
        values=values,
        attempt_spent=attempt_spent,
    )
    job.phase = "requeued"
    hold_for_retry(job, delay_s)
