"""`/v1/fine_tuning/jobs`: create, list, retrieve, cancel, pause, resume.

Creation validates the whole request (see `jobs.lifecycle.submit_job`), writes the job row
(`queued`), commits, and only then sends the worker message: nothing slow in the request.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body

from api.deps import ScopeDep, ServicesDep, SessionDep
from api.schemas.common import After, Limit
from api.schemas.jobs import JobCreate, JobPublic, JobsPublic
from jobs.lifecycle import cancel_job, pause_job, resume_job, submit_job
from jobs.models import Job

router = APIRouter(prefix="/v1/fine_tuning/jobs", tags=["fine-tuning"])


def _dispatch(services: ServicesDep, job: Job) -> None:
    services.dispatcher.send(job.id, job.pool)


@router.post(
    "",
    response_model=JobPublic,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": JobCreate.model_json_schema()}},
        }
    },
)
def create_job(
    session: SessionDep,
    scope: ScopeDep,
    services: ServicesDep,
    body: Annotated[dict[str, Any], Body()],
) -> JobPublic:
    # Validated by lco_spec (not FastAPI) so the API and `lco train` give the same errors.
    job = submit_job(session, scope, services.settings, body)
    services.dispatcher.mark(job)
    session.commit()
    _dispatch(services, job)
    return JobPublic.from_row(job)


@router.get("", response_model=JobsPublic)
def list_jobs(
    scope: ScopeDep,
    after: After = None,
    limit: Limit = 20,
) -> JobsPublic:
    page = scope.jobs(after=after, limit=limit)
    return JobsPublic(data=[JobPublic.from_row(j) for j in page.items], has_more=page.has_more)


@router.get("/{job_id}", response_model=JobPublic)
def retrieve_job(scope: ScopeDep, job_id: str) -> JobPublic:
    return JobPublic.from_row(scope.job(job_id))


@router.post("/{job_id}/cancel", response_model=JobPublic)
def cancel(session: SessionDep, scope: ScopeDep, job_id: str) -> JobPublic:
    job = cancel_job(session, scope, job_id)
    session.commit()
    return JobPublic.from_row(job)


@router.post("/{job_id}/pause", response_model=JobPublic)
def pause(session: SessionDep, scope: ScopeDep, job_id: str) -> JobPublic:
    job = pause_job(session, scope, job_id)
    session.commit()
    return JobPublic.from_row(job)


@router.post("/{job_id}/resume", response_model=JobPublic)
def resume(session: SessionDep, scope: ScopeDep, services: ServicesDep, job_id: str) -> JobPublic:
    job = resume_job(session, scope, job_id)
    queued = job.status == "queued"
    if queued:
        services.dispatcher.mark(job)
    session.commit()
    if queued:
        _dispatch(services, job)
    return JobPublic.from_row(job)
