"""`/v1/fine_tuning/jobs/{id}/checkpoints` and `.../{ckpt}/download` (a tar of the HF dir).

A LoRA job's checkpoint is an adapter: `?format=adapter` (its default) sends the adapter dir
as stored (`peft.PeftModel.from_pretrained(base, dir)` loads it), `?format=merged` a full
Hugging Face model with the adapter folded into its base (`jobs.adapters`; transformers and
vLLM load it). A full fine-tune's checkpoint is a full model either way; `adapter` is then a
400. Browsers download through signed links instead (`api/routers/downloads.py`)."""

from __future__ import annotations

import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from api.deps import ScopeDep, Services, ServicesDep
from api.schemas.common import After, Limit
from api.schemas.jobs import CheckpointPublic, CheckpointsPublic
from jobs.adapters import MergeError, is_adapter_dir, merge_adapter
from jobs.errors import InvalidRequest, NotFound
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


DownloadFormat = Literal["adapter", "merged"]


def _tar_stream(root: Path, arcname: str, *, cleanup: bool = False) -> Iterator[bytes]:
    """`root`'s files as tar chunks; with `cleanup`, `root` (a temp dir) is deleted after
    the stream ends or is abandoned."""
    try:
        yield from _tar_chunks(root, arcname)
    finally:
        if cleanup:
            shutil.rmtree(root, ignore_errors=True)


def _tar_chunks(root: Path, arcname: str) -> Iterator[bytes]:
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
    scope: ScopeDep,
    services: ServicesDep,
    job_id: str,
    checkpoint_id: str,
    format: Annotated[DownloadFormat | None, Query()] = None,
) -> StreamingResponse:
    job = scope.job(job_id)
    return checkpoint_tar(scope, services, job, scope.checkpoint(job, checkpoint_id), format)


def checkpoint_tar(
    scope: TeamScope,
    services: Services,
    job: Job,
    ckpt: Checkpoint,
    format: DownloadFormat | None = None,
) -> StreamingResponse:
    """The checkpoint's files as a streamed tar (also behind signed links, `downloads.py`);
    `format` as the module docstring says."""
    root = services.storage.resolve_in_job(scope.team_id, job.id, ckpt.rel_path)
    scope.session.rollback()  # end the read transaction before the (long) stream
    if not root.is_dir():
        raise NotFound(f"checkpoint {ckpt.id} has no files on this server")
    name = f"{job.id}-step-{ckpt.step_number}"
    adapter = is_adapter_dir(root)
    if format == "adapter" and not adapter:
        raise InvalidRequest(
            f"checkpoint {ckpt.id} is a full fine-tune, not a LoRA adapter; "
            "download it without format (or format=merged)",
            param="format",
        )
    cleanup = False
    if format == "merged" and adapter:
        root, name, cleanup = _merged_copy(root, ckpt), f"{name}-merged", True
    return StreamingResponse(
        _tar_stream(root, name, cleanup=cleanup),
        media_type="application/x-tar",
        headers={"Content-Disposition": f'attachment; filename="{name}.tar"'},
    )


def _merged_copy(adapter_dir: Path, ckpt: Checkpoint) -> Path:
    """A temp dir in the job's dir (the disk that holds its models; outside `checkpoints/`,
    which a resumed run prunes) with the merged model; the stream deletes it."""
    tmp = Path(tempfile.mkdtemp(prefix=".merged-", dir=adapter_dir.parent.parent))
    try:
        merge_adapter(adapter_dir, tmp)
    except MergeError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise InvalidRequest(
            f"checkpoint {ckpt.id} cannot be merged on this server: {exc}", param="format"
        ) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return tmp
