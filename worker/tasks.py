"""The task body, kept free of Celery so tests can call it directly.

`run_job(ctx, job_id)`: claim the job (a no-op if it is not queued: a duplicate or stale
message) and supervise one attempt. A refused claim is logged with its reason
(`jobs.leases.refuse_claim`); a job that can never be claimed is failed there. A worker
that is shutting down claims nothing (the job stays queued and admitted for another).
"""

from __future__ import annotations

import logging

from jobs.db import transaction
from jobs.leases import ATTEMPTS_EXHAUSTED, claim, refuse_claim
from jobs.logs import log_context
from worker.context import WorkerContext
from worker.job_info import load_job_info
from worker.supervisor import Supervisor

log = logging.getLogger(__name__)


def run_job(ctx: WorkerContext, job_id: str) -> bool:
    """Returns True if this call ran (an attempt of) the job, False for a no-op message."""
    if ctx.shutting_down.is_set():
        log.info("job.claim_skipped", extra={"job_id": job_id, "reason": "shutting_down"})
        return False
    with transaction(ctx.sessions) as session:
        lease = claim(session, job_id, owner=ctx.owner, ttl_s=ctx.settings.lease_ttl_s)
        refused = refuse_claim(session, job_id) if lease is None else None
    if lease is None:
        log.info("job.claim_skipped", extra={"job_id": job_id, "reason": refused})
        if refused == ATTEMPTS_EXHAUSTED:
            ctx.schedule_now()  # it gave back the GPUs it was admitted with
        return False
    log.info(
        "job.claimed", extra={"job_id": job_id, "attempt": lease.attempt, "token": lease.token}
    )
    with log_context(job_id=job_id, attempt=lease.attempt, fencing_token=lease.token):
        Supervisor(ctx, lease, load_job_info(ctx, job_id)).run()
    return True
