"""`/v1/files`: upload (streamed to storage, validated line by line), list, retrieve,
content, delete. A succeeded job's results file (`file-results-...`, purpose
`fine-tune-results`) is retrieved and read here too, made from the job's metrics
(`api.result_files`); it is not listed, and goes only with its job.

The bytes are stored under the file's id (`jobs.storage`); the client's filename is only a
label, kept as a cleaned display name (`display_name`) and never part of any path.
"""

from __future__ import annotations

import unicodedata
from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, Response
from starlette.concurrency import run_in_threadpool

from api.deps import ScopeDep, ServicesDep, SessionDep
from api.limits import MULTIPART_SLACK
from api.multipart import UPLOAD_BODY, read_upload
from api.result_files import result_file, result_file_content
from api.schemas.common import After, Limit
from api.schemas.files import FileDeleted, FilePublic, FilesPublic
from jobs.errors import Conflict, InvalidRequest
from jobs.results import results_job_id
from jobs.uploads import Upload, check_purpose, check_quota

router = APIRouter(prefix="/v1/files", tags=["files"])

_DEFAULT_NAME = "upload.jsonl"
# Fits File.filename (String(256)); the longest name common filesystems allow.
_MAX_NAME = 255
# Unicode categories never kept in a name: controls (NUL, newlines, escapes), format
# characters (bidi overrides and marks, zero-width), surrogates, line/paragraph separators.
_UNSHOWN = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def display_name(raw: str | None) -> str:
    """The client's filename as a safe label: the last path component (either separator,
    as a Windows client may send `..\\x`), without the _UNSHOWN characters (NUL included:
    PostgreSQL text refuses it; bidi overrides make a name read as another), at most _MAX_NAME
    characters with the extension kept. Stripped rather than refused: the name is cosmetic
    and the upload otherwise valid. Nothing left, or only dots, is `upload.jsonl`."""
    name = (raw or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if unicodedata.category(c) not in _UNSHOWN)
    name = unicodedata.normalize("NFC", name).strip()
    if not name.strip("."):
        return _DEFAULT_NAME
    if len(name) > _MAX_NAME:
        stem, dot, ext = name.rpartition(".")
        if dot and stem and len(ext) <= 16:
            name = stem[: _MAX_NAME - len(ext) - 1].rstrip() + "." + ext
        else:
            name = name[:_MAX_NAME]
    return name


@router.post("", response_model=FilePublic, openapi_extra=UPLOAD_BODY)
async def upload_file(request: Request, scope: ScopeDep, services: ServicesDep) -> FilePublic:
    """Authenticated (the dependencies) before a byte of the body is read; the file is written
    to storage as it arrives, then validated line by line (`jobs.uploads`)."""
    settings = services.settings
    declared = request.headers.get("content-length", "")
    if declared.isdigit():  # refuse what cannot fit before receiving it
        # The body is the file plus at most MULTIPART_SLACK of form framing.
        least = max(0, int(declared) - MULTIPART_SLACK)
        await run_in_threadpool(check_quota, scope.session, settings, scope.team_id, least)
        await run_in_threadpool(scope.session.rollback)
    upload = await run_in_threadpool(Upload.begin, services.storage, settings, scope.team_id)
    try:
        form = await read_upload(request, "file", upload.write)
        purpose = check_purpose(form.fields.get("purpose"))
        if not form.has_file:
            raise InvalidRequest(
                "file is required", param="file", code="missing_required_parameter"
            )
        row = await run_in_threadpool(
            upload.finish, scope.session, filename=display_name(form.filename), purpose=purpose
        )
        return FilePublic.from_row(row)
    finally:
        await run_in_threadpool(upload.abort)


@router.get("", response_model=FilesPublic)
def list_files(
    scope: ScopeDep,
    after: After = None,
    limit: Limit = 100,
    purpose: str | None = None,
    order: Literal["asc", "desc"] = "desc",
) -> FilesPublic:
    page = scope.files(after=after, limit=limit, purpose=purpose, ascending=order == "asc")
    data = [FilePublic.from_row(f) for f in page.items]
    return FilesPublic(
        data=data,
        has_more=page.has_more,
        first_id=data[0].id if data else None,
        last_id=data[-1].id if data else None,
    )


@router.get("/{file_id}", response_model=FilePublic)
def retrieve_file(scope: ScopeDep, services: ServicesDep, file_id: str) -> FilePublic:
    if results_job_id(file_id) is not None:  # a job's results file (`api.result_files`)
        return result_file(services, scope, scope.results_job(file_id))
    return FilePublic.from_row(scope.file(file_id))


@router.get("/{file_id}/content", response_class=FileResponse)
def file_content(scope: ScopeDep, services: ServicesDep, file_id: str) -> Response:
    if results_job_id(file_id) is not None:
        return result_file_content(services, scope, scope.results_job(file_id))
    row = scope.file(file_id)
    path = services.storage.file_path(scope.team_id, row.id)
    scope.session.rollback()  # end the read transaction before streaming
    return FileResponse(path, media_type="application/jsonl", filename=row.filename)


@router.delete("/{file_id}", response_model=FileDeleted)
def delete_file(
    session: SessionDep, scope: ScopeDep, services: ServicesDep, file_id: str
) -> FileDeleted:
    if results_job_id(file_id) is not None:
        scope.results_job(file_id)  # 404 unless the team has it
        raise InvalidRequest(
            f"{file_id} is made from its job's step metrics and cannot be deleted on its own",
            param="file_id",
            code="file_not_deletable",
        )
    row = scope.file(file_id)
    if scope.active_jobs_using(row.id):
        raise Conflict(
            f"{file_id} is used by an active fine-tuning job",
            param="file_id",
            code="file_in_use",
        )
    session.delete(row)
    session.commit()
    services.storage.file_path(scope.team_id, file_id).unlink(missing_ok=True)
    return FileDeleted(id=file_id)
