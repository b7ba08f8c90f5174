"""`GET /v1/fine_tuning/jobs/{id}/tensorboard`: the job's TensorBoard event files as a tar.

    curl -H "Authorization: Bearer $KEY" -o tb.tar .../v1/fine_tuning/jobs/$ID/tensorboard
    tar xf tb.tar && tensorboard --logdir $ID-tensorboard

The training process writes them into the job's dir as it trains (lco_core.metric_sinks),
so this works while the job runs too: each download holds every step written so far, and
before the first step it is an empty tar (a job is never a 404 here for having no steps;
404 means no such job, or another team's).
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from api.deps import ScopeDep, ServicesDep
from api.routers.checkpoints import _tar_stream as tar_stream  # one tar writer for both

router = APIRouter(prefix="/v1/fine_tuning/jobs", tags=["fine-tuning"])

# lco_core.metric_sinks.TENSORBOARD_DIR; not imported: the API process never loads lco_core.
TENSORBOARD_DIR = "tensorboard"


@router.get("/{job_id}/tensorboard")
def download_tensorboard(scope: ScopeDep, services: ServicesDep, job_id: str) -> StreamingResponse:
    job = scope.job(job_id)
    root = services.storage.resolve_in_job(scope.team_id, job.id, TENSORBOARD_DIR)
    scope.session.rollback()  # end the read transaction before the stream
    name = f"{job.id}-tensorboard"
    return StreamingResponse(
        tar_stream(root, name),
        media_type="application/x-tar",
        headers={"Content-Disposition": f'attachment; filename="{name}.tar"'},
    )
