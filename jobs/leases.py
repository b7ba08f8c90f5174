"""The worker's side of the job row: claim, heartbeat, fenced writes, and the reaper.

    lease = claim(session, job_id, owner="host:pid", ttl_s=60)   # None: someone else has it
    with fenced(sessions, lease) as session:                      # raises LeaseLost if stale
        record_metrics(session, lease, step, {...})

Claim is one conditional UPDATE (queued and admitted by the scheduler -> running, new
fencing token, attempt + 1), so two workers given the same message cannot both win, and a
message for a job the scheduler has not admitted (a stale or duplicate one) does nothing.
A claim that misses is explained by `refuse_claim`, which fails a job that can never be
claimed (no attempts left) rather than leave it queued in silence.

`attempt` counts the attempts that ran and were not given back: an attempt that ends in a
pause or a preemption (not the job's fault) is given back by the final move
(`jobs.transitions`, `attempt_spent=False`), so only crashes and failures count against
`max_attempts`. The fencing token is not given
back: every claim still takes a new, higher one.

Every later write first re-checks
`(id, fencing_token, status = running)` with an UPDATE in the same transaction, so a worker
that lost its lease (paused past its expiry, say) has its writes rejected (invariant I7);
its final move is made on `leased_job(session, lease)` inside the same fence.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from jobs import transitions
from jobs.backoff import backoff_s
from jobs.events import add_event
from jobs.ids import new_id, utcnow
from jobs.models import Checkpoint, Job, JobMetric, UsageRecord
from jobs.states import JobStatus
from jobs.usage import open_usage


class LeaseLost(Exception):
    """This worker no longer owns the job: stop the run and write nothing more."""


@dataclass(frozen=True)
class Lease:
    job_id: str
    owner: str
    token: int
    attempt: int
    ttl_s: float


def claim(session: Session, job_id: str, *, owner: str, ttl_s: float) -> Lease | None:
    """Take the job if it is queued, admitted and has attempts left; None means "not ours, do
    nothing"."""
    now = utcnow()
    row = session.execute(
        update(Job)
        .where(
            Job.id == job_id,
            Job.status == JobStatus.QUEUED,
            Job.admitted_at.is_not(None),
            Job.attempt < Job.max_attempts,
        )
        .values(
            status=JobStatus.RUNNING,
            status_since=now,
            phase="starting",
            phase_message=None,
            lease_owner=owner,
            lease_expires_at=now + timedelta(seconds=ttl_s),
            fencing_token=Job.fencing_token + 1,
            attempt=Job.attempt + 1,
            started_at=func.coalesce(Job.started_at, now),
            updated_at=now,
            not_before=None,
        )
        .returning(Job.fencing_token, Job.attempt, Job.team_id, Job.pool, Job.gpus, Job.step)
    ).first()
    if row is None:
        return None
    token, attempt, team_id, pool, gpus, step = row
    open_usage(session, job_id=job_id, team_id=team_id, pool=pool, gpus=gpus, step=step, now=now)
    add_event(
        session,
        job_id,
        f"Training started (attempt {attempt})",
        data={"status": JobStatus.RUNNING, "owner": owner, "fencing_token": token},
    )
    return Lease(job_id=job_id, owner=owner, token=token, attempt=attempt, ttl_s=ttl_s)


# Why a claim missed (`refuse_claim`). Only ATTEMPTS_EXHAUSTED needs action: the others are
# a duplicate or stale message, and the job's own status (or, queued, its place in the
# scheduler's plan: `status_details.reason`) already says what it waits for.
NOT_FOUND = "not_found"
NOT_QUEUED = "not_queued"  # running under another lease, paused or finished
NOT_ADMITTED = "not_admitted"  # queued but waiting for the scheduler
ATTEMPTS_EXHAUSTED = "attempts_exhausted"  # can never be claimed: failed here
CLAIMABLE = "claimable"  # changed since the claim looked (a concurrent admission)


def refuse_claim(session: Session, job_id: str) -> str:
    """Why `claim` just returned None for `job_id` (one of the reasons above), in the same
    transaction. A queued job out of attempts would wait for a worker forever (the claim
    refuses it every time), so it is failed here, with the reason in its error and events."""
    job = session.scalar(select(Job).where(Job.id == job_id).with_for_update())
    if job is None:
        return NOT_FOUND
    if job.status != JobStatus.QUEUED:
        return NOT_QUEUED
    if job.attempt >= job.max_attempts:
        _fail_exhausted(session, job)
        return ATTEMPTS_EXHAUSTED
    if job.admitted_at is None:
        return NOT_ADMITTED
    return CLAIMABLE


def _fail_exhausted(session: Session, job: Job) -> None:
    message = (
        f"no attempts left ({job.attempt} of {job.max_attempts} used), so no worker may run "
        "the job again"
    )
    transitions.fail(session, job, code=ATTEMPTS_EXHAUSTED, message=message)


def _guard(session: Session, lease: Lease, *, extend: bool = False) -> None:
    now = utcnow()
    values: dict[str, Any] = {"updated_at": now}
    if extend:
        values["lease_expires_at"] = now + timedelta(seconds=lease.ttl_s)
    result = session.execute(
        update(Job)
        .where(
            Job.id == lease.job_id,
            Job.fencing_token == lease.token,
            Job.status == JobStatus.RUNNING,
        )
        .values(**values)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise LeaseLost(lease.job_id)


@contextmanager
def fenced(sessions: sessionmaker[Session], lease: Lease) -> Iterator[Session]:
    """A transaction that commits only if `lease` is still the job's current lease."""
    with sessions() as session, session.begin():
        _guard(session, lease)
        yield session


def heartbeat(sessions: sessionmaker[Session], lease: Lease) -> str | None:
    """Extend the lease; returns the user's pending request (`cancel`, `pause` or None)."""
    with sessions() as session, session.begin():
        _guard(session, lease, extend=True)
        return session.scalar(select(Job.requested_action).where(Job.id == lease.job_id))


REFUSED_WRITE = "refused_write"


def record_refused_write(sessions: sessionmaker[Session], lease: Lease) -> None:
    """Count a write refused for carrying a stale token (I7): a warn event on the job, whose
    `data.refused_write` names the stale lease. Adding it changes none of the job's state,
    so the stale worker may; it is the job's record that a zombie came back."""
    with sessions() as session, session.begin():
        add_event(
            session,
            lease.job_id,
            f"Refused a write from a stale worker (attempt {lease.attempt}, "
            f"fencing token {lease.token})",
            level="warn",
            data={
                REFUSED_WRITE: {
                    "owner": lease.owner,
                    "fencing_token": lease.token,
                    "attempt": lease.attempt,
                }
            },
        )


def requested_action(sessions: sessionmaker[Session], job_id: str) -> str | None:
    with sessions() as session:
        return session.scalar(select(Job.requested_action).where(Job.id == job_id))


def record_phase(session: Session, lease: Lease, phase: str, message: str) -> None:
    """The run entered `phase` (preparing_model, starting_engine, evaluating, training):
    shown in the job's status_details with `message`, and kept as an event."""
    session.execute(
        update(Job).where(Job.id == lease.job_id).values(phase=phase, phase_message=message)
    )
    add_event(session, lease.job_id, message, data={"phase": phase})


def record_metrics(session: Session, lease: Lease, step: int, metrics: dict[str, Any]) -> None:
    """One metric point per step; a step at or below the last one means the run resumed from
    an earlier checkpoint, so the later points are dropped and the rollback recorded (I4)."""
    last = session.scalar(select(func.max(JobMetric.step)).where(JobMetric.job_id == lease.job_id))
    if last is not None and step <= last:
        session.execute(
            delete(JobMetric).where(JobMetric.job_id == lease.job_id, JobMetric.step >= step)
        )
        add_event(
            session,
            lease.job_id,
            f"Rolled back metrics to step {step - 1} (resumed run)",
            level="warn",
            data={"from_step": last, "to_step": step - 1},
        )
    session.add(JobMetric(job_id=lease.job_id, step=step, metrics=metrics))
    values: dict[str, Any] = {"step": step, "phase": "training", "phase_message": None}
    total = metrics.get("total_steps")
    if isinstance(total, int | float):
        values["total_steps"] = int(total)
    session.execute(update(Job).where(Job.id == lease.job_id).values(**values))
    add_event(
        session,
        lease.job_id,
        f"Step {step}" + (f"/{int(total)}" if total else ""),
        type="metrics",
        data={"step": step, **metrics},
    )


def record_checkpoint(
    session: Session,
    lease: Lease,
    *,
    team_id: str,
    step: int,
    rel_path: str,
    metrics: dict[str, Any],
    model_name: str,
) -> Checkpoint:
    """Register a complete checkpoint (idempotent per step: a resumed run may re-save one)."""
    row = session.scalar(
        select(Checkpoint).where(Checkpoint.job_id == lease.job_id, Checkpoint.step_number == step)
    )
    if row is None:
        row = Checkpoint(
            id=new_id("ftckpt"),
            job_id=lease.job_id,
            team_id=team_id,
            step_number=step,
            rel_path=rel_path,
            metrics={"step": step, **metrics},
            fine_tuned_model_checkpoint=f"{model_name}:ckpt-step-{step}",
        )
        session.add(row)
        add_event(session, lease.job_id, f"Checkpoint saved at step {step}", data={"step": step})
    else:
        row.rel_path = rel_path
        row.metrics = {"step": step, **metrics}
    session.flush()
    return row


def leased_job(session: Session, lease: Lease) -> Job:
    """The job row `lease` holds, for a final move (`jobs.transitions`) inside `fenced`."""
    job = session.scalar(select(Job).where(Job.id == lease.job_id))
    if job is None:
        raise LeaseLost(lease.job_id)
    return job


def finish(
    session: Session,
    lease: Lease,
    status: JobStatus,
    *,
    message: str,
    level: str = "info",
    error: dict[str, Any] | None = None,
    values: dict[str, Any] | None = None,
    attempt_spent: bool = True,
) -> None:
    """Move the leased job out of `running` to any `status` (inside a fenced transaction);
    the worker itself uses the named moves of `jobs.transitions`."""
    transitions.leave(
        session,
        leased_job(session, lease),
        status,
        message=message,
        level=level,
        error=error,
        values=values,
        attempt_spent=attempt_spent,
    )


def earlier_run_s(session: Session, job_id: str) -> float:
    """Seconds the job's earlier attempts ran (its closed usage records): with the current
    attempt's, what `max_job_runtime_s` bounds, so pausing and resuming cannot reset it."""
    rows = session.execute(
        select(UsageRecord.started_at, UsageRecord.ended_at).where(
            UsageRecord.job_id == job_id, UsageRecord.ended_at.is_not(None)
        )
    )
    return sum(
        max((ended - started).total_seconds(), 0.0) for started, ended in rows if ended is not None
    )


def reap_expired(session: Session, *, retry_backoff_s: float) -> list[Job]:
    """Jobs whose worker vanished (lease expired): finish a pending cancel, fail those out of
    attempts, finish a pending pause, requeue the rest with back-off. Returns the requeued
    jobs (to dispatch). A lost worker is a crash, so its attempt stays spent, pause or not:
    a job paused with none left could never be claimed after its resume."""
    now = utcnow()
    rows = list(
        session.scalars(
            select(Job)
            .where(Job.status == JobStatus.RUNNING, Job.lease_expires_at < now)
            .with_for_update(skip_locked=True)
        )
    )
    requeued = []
    for job in rows:
        # Bump the token so the vanished worker, if it comes back, cannot write.
        job.fencing_token = job.fencing_token + 1
        if job.requested_action == "cancel":
            transitions.cancel(session, job, message="Fine-tuning job cancelled (worker lost)")
        elif job.attempt >= job.max_attempts:
            transitions.fail(
                session,
                job,
                code="worker_lost",
                message=f"the worker running this job was lost {job.attempt} times",
                event="Fine-tuning job failed: worker lost",
            )
        elif job.requested_action == "pause":
            transitions.pause(session, job, message="Fine-tuning job paused (worker lost)")
        else:
            transitions.requeue(
                session,
                job,
                delay_s=backoff_s(retry_backoff_s, job.attempt),
                message="Worker lost; job requeued",
            )
            requeued.append(job)
    return requeued
