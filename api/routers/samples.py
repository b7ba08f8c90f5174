"""`/v1/fine_tuning/jobs/{id}/samples`: a few rollouts (prompt, completion, reward) per RL
step, newest first; the live stream sends new ones as they arrive."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import ScopeDep
from api.schemas.common import After, Limit
from api.schemas.live import StepSamplesListPublic, StepSamplesPublic

router = APIRouter(prefix="/v1/fine_tuning/jobs", tags=["fine-tuning"])


@router.get("/{job_id}/samples", response_model=StepSamplesListPublic)
def list_samples(
    scope: ScopeDep, job_id: str, after: After = None, limit: Limit = 20
) -> StepSamplesListPublic:
    job = scope.job(job_id)
    page = scope.samples(job, after=after, limit=limit)
    return StepSamplesListPublic(
        data=[StepSamplesPublic.from_row(e) for e in page.items], has_more=page.has_more
    )
