"""Sending "look at job X" to the pool's Celery queue, and the Celery config both sides share.

The scheduler (`jobs.queue`) and the reconciler only send messages by task name (`lco.run_job`), so this module
needs no worker code; `worker.app` builds the consuming app from the same `celery_config`.
A message is a hint, never the truth: the worker claims the job row before doing anything,
so a duplicate or stale message is a no-op, and a lost one is re-sent by the reconciler.
"""

from __future__ import annotations

import logging
import random
from datetime import timedelta
from typing import Any

from celery import Celery
from sqlalchemy import select
from sqlalchemy.orm import Session

from jobs.backoff import backoff_s
from jobs.ids import utcnow
from jobs.models import Job
from jobs.settings import Settings
from jobs.states import JobStatus

log = logging.getLogger(__name__)

RUN_JOB_TASK = "lco.run_job"


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings per docs/reliability.md: JSON only, no results, prefetch 1, late acks."""
    return {
        "broker_url": settings.effective_broker_url,
        "broker_transport_options": settings.broker_transport_options(),
        "broker_connection_retry_on_startup": True,
        "result_backend": None,
        "task_ignore_result": True,
        "task_serializer": "json",
        "accept_content": ["json"],
        "event_serializer": "json",
        "worker_prefetch_multiplier": 1,
        "task_acks_late": True,
        # The DB lease and the reaper recover from a lost worker; redelivering here could
        # loop a poison job forever.
        "task_reject_on_worker_lost": False,
        "task_default_queue": settings.default_pool,
        "task_create_missing_queues": True,
        "worker_hijack_root_logger": False,
    }


def make_producer(settings: Settings) -> Celery:
    """A Celery app that only sends (the API's and the reconciler's side)."""
    settings.ensure_dirs()
    app = Celery("lco-producer", set_as_current=False)
    app.conf.update(celery_config(settings))
    return app


class Dispatcher:
    """Marks a job dispatched (in the caller's transaction) and sends its message after commit."""

    def __init__(self, producer: Celery):
        self.producer = producer

    @staticmethod
    def mark(job: Job, delay_s: float = 0.0) -> None:
        job.dispatched_at = utcnow()
        job.dispatch_count = (job.dispatch_count or 0) + 1
        if delay_s > 0:
            job.not_before = job.dispatched_at + timedelta(seconds=delay_s)

    def send(self, job_id: str, pool: str, delay_s: float = 0.0) -> bool:
        """Send the message; False (logged) if the broker is down: the reconciler retries."""
        try:
            self.producer.send_task(
                RUN_JOB_TASK,
                args=[job_id],
                queue=pool,
                countdown=delay_s if delay_s > 0 else None,
            )
        except Exception:
            log.warning("job.dispatch_failed", extra={"job_id": job_id}, exc_info=True)
            return False
        log.info("job.dispatched", extra={"job_id": job_id, "pool": pool})
        return True


def stale_queued_jobs(session: Session, settings: Settings, limit: int = 100) -> list[Job]:
    """Admitted queued jobs whose last message is old enough to be presumed lost (with
    back-off, `jobs.backoff`); jobs not admitted yet wait for the scheduler, not for a
    message."""
    now = utcnow()
    rows = session.scalars(
        select(Job)
        .where(Job.status == JobStatus.QUEUED, Job.admitted_at.is_not(None))
        .order_by(Job.pk)
        .limit(limit)
    )
    stale = []
    for job in rows:
        if job.not_before is not None and job.not_before > now:
            continue
        # Seeded per message, so every pass compares against the same jittered wait.
        rng = random.Random(f"{job.id}:{job.dispatch_count}")
        wait = backoff_s(settings.redispatch_after_s, job.dispatch_count, rng=rng)
        if job.dispatched_at is None or (now - job.dispatched_at).total_seconds() >= wait:
            stale.append(job)
    return stale
