"""`/v1/fine_tuning/jobs`: create, list, retrieve, cancel, pause, resume.

Creation validates the whole request (see `jobs.lifecycle.submit_job`) and team policy
(`jobs.quotas`), writes the job row (`queued`), commits, and then runs a scheduler pass
(`jobs.queue.run_scheduler`), which admits the job and sends the worker message if its pool
has room: nothing slow in the request. Cancel, pause and resume run a pass too (they free
or take a place). Queued jobs show their place in the queue (`queue`, `status_details`).
The list takes OpenAI's metadata filter (`metadata[k]=v`, `metadata=null`).
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.deps import ScopeDep, ServicesDep, SessionDep, run_reads
from api.openapi import json_body
from api.public_jobs import public_jobs
from api.schemas.common import After, Limit
from api.schemas.jobs import JobCreate, JobPublic, JobsPublic, metadata_filter
from jobs.lifecycle import cancel_job, pause_job, resume_job, submit_job
from jobs.models import Job
from jobs.queue import run_scheduler
from jobs.scope import MetadataFilter

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/fine_tuning/jobs", tags=["fine-tuning"])


def _schedule(services: ServicesDep) -> None:
    # After the commit; if it fails the scheduler loop admits the job on its next turn.
    try:
        run_scheduler(services.sessions, services.dispatcher, services.settings)
    except Exception:
        log.warning("jobs.schedule_failed", exc_info=True)


def _changed(session: Session, services: ServicesDep, job: Job) -> JobPublic:
    session.commit()
    _schedule(services)
    with services.read_sessions() as read:
        fresh = read.scalars(select(Job).where(Job.id == job.id)).one()
        return public_jobs(read, services.queue_slots, [fresh])[0]


@router.post(
    "", response_model=JobPublic, openapi_extra=json_body(JobCreate, "CreateFineTuningJobRequest")
)
def create_job(
    session: SessionDep,
    scope: ScopeDep,
    services: ServicesDep,
    body: Annotated[dict[str, Any], Body()],
) -> JobPublic:
    # Validated by lco_spec (not FastAPI) so the API and `lco train` give the same errors.
    job = submit_job(session, scope, services.settings, body)
    return _changed(session, services, job)


@router.get("", response_model=JobsPublic)
def list_jobs(
    session: SessionDep,
    scope: ScopeDep,
    services: ServicesDep,
    metadata: Annotated[MetadataFilter | None, Depends(metadata_filter)],
    after: After = None,
    limit: Limit = 20,
) -> JobsPublic:
    page = scope.jobs(after=after, limit=limit, metadata=metadata)
    return JobsPublic(
        data=public_jobs(session, services.queue_slots, page.items), has_more=page.has_more
    )


@router.get("/{job_id}", response_model=JobPublic)
async def retrieve_job(scope: ScopeDep, services: ServicesDep, job_id: str) -> JobPublic:
    # Clients poll this one: see run_reads.
    return await run_reads(
        scope.session,
        lambda: public_jobs(scope.session, services.queue_slots, [scope.job_row(job_id)])[0],
    )


@router.post("/{job_id}/cancel", response_model=JobPublic)
def cancel(session: SessionDep, scope: ScopeDep, services: ServicesDep, job_id: str) -> JobPublic:
    return _changed(session, services, cancel_job(session, scope, job_id))


@router.post("/{job_id}/pause", response_model=JobPublic)
def pause(session: SessionDep, scope: ScopeDep, services: ServicesDep, job_id: str) -> JobPublic:
    return _changed(session, services, pause_job(session, scope, job_id))


@router.post("/{job_id}/resume", response_model=JobPublic)
def resume(session: SessionDep, scope: ScopeDep, services: ServicesDep, job_id: str) -> JobPublic:
    return _changed(session, services, resume_job(session, scope, job_id))
