"""The scheduler loop: reap expired leases, re-send lost messages, admit queued jobs.

    lco scheduler          # production: one per deployment (docker-compose `scheduler`)
    (lco serve runs the same loop in a thread beside the API)

Jobs whose worker vanished (lease expired) finish a pending cancel/pause, fail when out of
attempts, or go back to the queue (with back-off) for the scheduler to admit again;
admitted jobs whose message looks lost are sent again; then a scheduler pass admits what
fits (`jobs.queue`). All are safe to repeat: a duplicate message is a no-op at claim time.
The same pass also runs right after each submit and each finish; this loop is the safety
net (and what notices workers coming and going).
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta

from sqlalchemy import delete
from sqlalchemy.orm import Session, sessionmaker

from jobs.db import transaction
from jobs.dispatch import Dispatcher, stale_queued_jobs
from jobs.ids import utcnow
from jobs.leases import reap_expired
from jobs.models import IdempotencyRecord
from jobs.queue import run_scheduler
from jobs.settings import Settings
from jobs.workers import prune_dead

log = logging.getLogger(__name__)


def reconcile(sessions: sessionmaker[Session], dispatcher: Dispatcher, settings: Settings) -> int:
    """One pass; returns how many messages were (re)sent."""
    with transaction(sessions) as session:
        now = utcnow()
        reap_expired(session, retry_backoff_s=settings.retry_backoff_s)
        sends = {}
        for job in stale_queued_jobs(session, settings):
            Dispatcher.mark(job)
            sends[job.id] = job.pool
        prune_dead(session, settings, now)
        session.execute(
            delete(IdempotencyRecord).where(
                IdempotencyRecord.created_at < now - timedelta(seconds=settings.idempotency_ttl_s)
            )
        )
    for job_id, pool in sends.items():
        dispatcher.send(job_id, pool)
    sent = len(sends) + run_scheduler(sessions, dispatcher, settings)
    if sent:
        log.info("jobs.reconciled", extra={"sent": sent})
    return sent


def run_forever(
    sessions: sessionmaker[Session],
    dispatcher: Dispatcher,
    settings: Settings,
    stop: threading.Event,
) -> None:
    """Reconcile every `reconcile_every_s` until `stop` is set; errors are logged, not fatal."""
    while not stop.is_set():
        try:
            reconcile(sessions, dispatcher, settings)
        except Exception:
            log.exception("jobs.reconcile_failed")
        stop.wait(settings.reconcile_every_s)
