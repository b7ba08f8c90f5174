"""GPU usage accounting: one record per attempt, open while it runs.

    open_usage(session, job_id, team_id, pool, gpus, step, now)   # at claim
    close_usage(session, job_id, now)                              # when it leaves `running`
    window_usage(session, since, now)   -> {team_id: GPU-seconds inside [since, now]}
    typical_duration_s(session, pool, default) -> seconds a run in the pool usually takes

The fair-share scheduler weighs teams by `window_usage`; queue ETAs use the open records
(when each running attempt started, and at which step) and `typical_duration_s`.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from jobs.models import Job, UsageRecord


def open_usage(
    session: Session,
    *,
    job_id: str,
    team_id: str,
    pool: str,
    gpus: int,
    step: int,
    now: datetime,
) -> None:
    session.add(
        UsageRecord(
            job_id=job_id, team_id=team_id, pool=pool, gpus=gpus, start_step=step, started_at=now
        )
    )


def close_usage(session: Session, job_id: str, now: datetime) -> None:
    session.execute(
        update(UsageRecord)
        .where(UsageRecord.job_id == job_id, UsageRecord.ended_at.is_(None))
        .values(ended_at=now)
    )


def window_usage(session: Session, since: datetime, now: datetime) -> dict[str, float]:
    """GPU-seconds per team that fall inside [since, now] (running attempts up to now)."""
    rows = session.execute(
        select(
            UsageRecord.team_id, UsageRecord.gpus, UsageRecord.started_at, UsageRecord.ended_at
        ).where(or_(UsageRecord.ended_at.is_(None), UsageRecord.ended_at > since))
    )
    usage: dict[str, float] = {}
    for team_id, gpus, started, ended in rows:
        seconds = ((ended or now) - max(started, since)).total_seconds()
        if seconds > 0:
            usage[team_id] = usage.get(team_id, 0.0) + gpus * seconds
    return usage


def job_gpu_seconds(session: Session, job_id: str, now: datetime) -> float:
    """Every attempt of one job (the job object's `usage.gpu_seconds`)."""
    rows = session.execute(
        select(UsageRecord.gpus, UsageRecord.started_at, UsageRecord.ended_at).where(
            UsageRecord.job_id == job_id
        )
    )
    return sum(g * ((e or now) - s).total_seconds() for g, s, e in rows)


def open_records(session: Session) -> dict[str, UsageRecord]:
    """The open record of every running attempt, by job id."""
    rows = session.scalars(select(UsageRecord).where(UsageRecord.ended_at.is_(None)))
    return {r.job_id: r for r in rows}


def typical_duration_s(session: Session, pool: str, default: float, n: int = 50) -> float:
    """The mean length of the pool's last `n` finished jobs' attempts (or `default`)."""
    rows = session.execute(
        select(UsageRecord.started_at, UsageRecord.ended_at)
        .join(Job, Job.id == UsageRecord.job_id)
        .where(
            UsageRecord.pool == pool,
            UsageRecord.ended_at.is_not(None),
            Job.status == "succeeded",
        )
        .order_by(UsageRecord.pk.desc())
        .limit(n)
    ).all()
    if not rows:
        return default
    total = 0.0
    for started, ended in rows:
        total += ((ended or started) - started).total_seconds()
    return total / len(rows)
