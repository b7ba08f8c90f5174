"""The worker registry: each worker process heartbeats a row per pool it serves; the live
rows are the pools' capacity.

    first = beat(session, worker_id="host:pid", pool="a100", gpus=8, now=now)
    pools = capacity(session, settings, now)      # {pool: Pool(capacity, largest_worker)}
    leave(session, worker_id)                     # at a clean shutdown

A worker runs one job at a time (see worker.app), and `gpus` is what that job may use. A
worker whose last heartbeat is older than `worker_ttl_s` no longer counts.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from jobs.models import Worker
from jobs.scheduling import Pool
from jobs.settings import Settings


def beat(session: Session, *, worker_id: str, pool: str, gpus: int, now: datetime) -> bool:
    """Record a heartbeat; True when this registers the worker (its first beat)."""
    row_id = f"{worker_id}/{pool}"
    row = session.get(Worker, row_id)
    if row is None:
        session.add(Worker(id=row_id, pool=pool, gpus=gpus, started_at=now, heartbeat_at=now))
        return True
    row.gpus = gpus
    row.heartbeat_at = now
    return False


def leave(session: Session, worker_id: str) -> None:
    session.execute(delete(Worker).where(Worker.id.startswith(f"{worker_id}/", autoescape=True)))


def live_workers(session: Session, settings: Settings, now: datetime) -> list[Worker]:
    since = now - timedelta(seconds=settings.worker_ttl_s)
    return list(session.scalars(select(Worker).where(Worker.heartbeat_at >= since)))


def capacity(session: Session, settings: Settings, now: datetime) -> dict[str, Pool]:
    """Every configured pool with the GPUs of its live workers (zero when none)."""
    gpus: dict[str, list[int]] = {name: [] for name in settings.pools}
    for worker in live_workers(session, settings, now):
        gpus.setdefault(worker.pool, []).append(worker.gpus)
    return {name: Pool(name, sum(g), max(g, default=0)) for name, g in gpus.items()}


def prune_dead(session: Session, settings: Settings, now: datetime) -> None:
    """Forget workers silent for ten TTLs (they would count as zero anyway)."""
    since = now - timedelta(seconds=10 * settings.worker_ttl_s)
    session.execute(delete(Worker).where(Worker.heartbeat_at < since))
