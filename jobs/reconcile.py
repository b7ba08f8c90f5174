"""The scheduler loop: reap expired leases and re-send lost messages.

    lco scheduler          # production: one per deployment (docker-compose `scheduler`)
    (lco serve runs the same loop in a thread beside the API)

Jobs whose worker vanished (lease expired) finish a pending cancel/pause, fail when out of
attempts, or are requeued with back-off; queued jobs whose message looks lost are sent
again. Both are safe to repeat: a duplicate message is a no-op at claim time.
"""

from __future__ import annotations

import logging
import threading

from sqlalchemy.orm import Session, sessionmaker

from jobs.db import transaction
from jobs.dispatch import Dispatcher, stale_queued_jobs
from jobs.ids import utcnow
from jobs.leases import reap_expired
from jobs.settings import Settings

log = logging.getLogger(__name__)


def reconcile(sessions: sessionmaker[Session], dispatcher: Dispatcher, settings: Settings) -> int:
    """One pass; returns how many messages were (re)sent."""
    with transaction(sessions) as session:
        now = utcnow()
        sends: dict[str, tuple[str, float]] = {}
        for job in reap_expired(session, retry_backoff_s=settings.retry_backoff_s):
            delay = max((job.not_before - now).total_seconds(), 0.0) if job.not_before else 0.0
            Dispatcher.mark(job)
            sends[job.id] = (job.pool, delay)
        for job in stale_queued_jobs(session, settings):
            if job.id not in sends:
                Dispatcher.mark(job)
                sends[job.id] = (job.pool, 0.0)
    for job_id, (pool, delay) in sends.items():
        dispatcher.send(job_id, pool, delay)
    if sends:
        log.info("jobs.reconciled", extra={"sent": len(sends)})
    return len(sends)


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
