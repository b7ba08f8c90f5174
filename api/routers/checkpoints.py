"""`/v1/fine_tuning/jobs/{id}/checkpoints` and `.../{ckpt}/download` (a tar of the HF dir).

Browsers download through signed links instead (`api/routers/downloads.py`)."""

from __future__ import annotations

import tarfile
from collections.abc import Iterator
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from api.deps import ScopeDep, Services, ServicesDep
from api.schemas.common import After, Limit
from api.schemas.jobs import CheckpointPublic, CheckpointsPublic
from jobs.errors import NotFound
from jobs.models import Checkpoint, Job
from jobs.scope import TeamScope

router = APIRouter(prefix="/v1/fine_tuning/jobs", tags=["fine-tuning"])


@router.get("/{job_id}/checkpoints", response_model=CheckpointsPublic)
def list_checkpoints(
    scope: ScopeDep, job_id: str, after: After = None, limit: Limit = 10
) -> CheckpointsPublic:
    job = scope.job(job_id)
    page = scope.checkpoints(job, after=after, limit=limit)
    data = [CheckpointPublic.from_row(c, job) for c in page.items]
    return CheckpointsPublic(
        data=data,
        has_more=page.has_more,
        first_id=data[0].id if data else None,
        last_id=data[-1].id if data else None,
    )


class _Chunks:
    """A write-only file object that hands tarfile's output to a generator."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def drain(self) -> bytes:
        out, self.parts = b"".join(self.parts), []
        return out


def _tar_stream(root: Path, arcname: str) -> Iterator[bytes]:
    sink = _Chunks()
    with tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
        for path in sorted(root.rglob("*")):
            if path.is_symlink() or not path.is_file():
                continue  # never follow links out of the checkpoint dir
            tar.add(path, arcname=f"{arcname}/{path.relative_to(root)}", recursive=False)
            if chunk := sink.drain():
                yield chunk
    if chunk := sink.drain():
        yield chunk


@router.get("/{job_id}/checkpoints/{checkpoint_id}/download")
def download_checkpoint(
    scope: ScopeDep, services: ServicesDep, job_id: str, checkpoint_id: str
) -> StreamingResponse:
    job = scope.job(job_id)
    return checkpoint_tar(scope, services, job, scope.checkpoint(job, checkpoint_id))


def checkpoint_tar(
    scope: TeamScope, services: Services, job: Job, ckpt: Checkpoint
) -> StreamingResponse:
    """The checkpoint's files as a streamed tar (also behind signed links, `downloads.py`)."""
    root = services.storage.resolve_in_job(scope.team_id, job.id, ckpt.rel_path)
    scope.session.rollback()  # end the read transaction before the (long) stream
    if not root.is_dir():
        raise NotFound(f"checkpoint {ckpt.id} has no files on this server")
    name = f"{job.id}-step-{ckpt.step_number}"
    return StreamingResponse(
        _tar_stream(root, name),
        media_type="application/x-tar",
        headers={"Content-Disposition": f'attachment; filename="{name}.tar"'},
    )
