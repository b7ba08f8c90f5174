"""`/v1/fine_tuning/jobs/{id}/events` (OpenAI's) and `/metrics` (per-step series, ours)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import ScopeDep
from api.schemas.common import After, Limit
from api.schemas.jobs import JobEventPublic, JobEventsPublic, MetricPointPublic, MetricsPublic

router = APIRouter(prefix="/v1/fine_tuning/jobs", tags=["fine-tuning"])

Step = Annotated[int | None, Query(ge=0, le=10**9)]


@router.get("/{job_id}/events", response_model=JobEventsPublic)
def list_events(
    scope: ScopeDep, job_id: str, after: After = None, limit: Limit = 20
) -> JobEventsPublic:
    job = scope.job(job_id)
    page = scope.events(job, after=after, limit=limit)
    return JobEventsPublic(
        data=[JobEventPublic.from_row(e) for e in page.items], has_more=page.has_more
    )


@router.get("/{job_id}/metrics", response_model=MetricsPublic)
def list_metrics(
    scope: ScopeDep,
    job_id: str,
    from_step: Step = None,
    to_step: Step = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> MetricsPublic:
    job = scope.job(job_id)
    page = scope.metrics(job, from_step=from_step, to_step=to_step, limit=limit)
    return MetricsPublic(
        data=[MetricPointPublic.from_row(m) for m in page.items], has_more=page.has_more
    )
