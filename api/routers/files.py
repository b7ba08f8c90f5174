"""`/v1/files`: upload (validated line by line), list, retrieve, content, delete.

The bytes are stored under the file's id (`jobs.storage`); the client's filename is only a
label, kept as a cleaned display name (`display_name`) and never part of any path.
"""

from __future__ import annotations

import hashlib
import os
import unicodedata
from typing import Annotated, Literal

from fastapi import APIRouter, Form, UploadFile
from fastapi.responses import FileResponse

from api.deps import ScopeDep, ServicesDep, SessionDep
from api.schemas.common import After, Limit
from api.schemas.files import FileDeleted, FilePublic, FilesPublic
from jobs.errors import Conflict, InvalidRequest
from jobs.ids import new_id
from jobs.models import File

router = APIRouter(prefix="/v1/files", tags=["files"])

_CHUNK = 1024 * 1024
_PURPOSES = ("fine-tune",)
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


def _dataset_report(data: bytes, max_errors: int) -> tuple[str, str | None, str | None, int]:
    """(status, status_details, kind, n_examples) for an uploaded JSONL dataset."""
    from lco_spec.datasets import validate_dataset

    report = validate_dataset(data, "any", max_errors=max_errors)
    if report.errors:
        details = "; ".join(str(e) for e in report.errors)
        return "error", f"Invalid file format: {details}"[:8000], None, report.n_examples
    return "processed", None, report.kind_detected, report.n_examples


@router.post("", response_model=FilePublic)
def upload_file(
    session: SessionDep,
    scope: ScopeDep,
    services: ServicesDep,
    file: UploadFile,
    purpose: Annotated[str, Form(max_length=64)],
) -> FilePublic:
    if purpose not in _PURPOSES:
        raise InvalidRequest(
            f"purpose must be one of {list(_PURPOSES)}", param="purpose", code="invalid_purpose"
        )
    file_id = new_id("file")
    path = services.storage.file_path(scope.team_id, file_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".part")
    digest, size = hashlib.sha256(), 0
    try:
        with tmp.open("wb") as out:
            while chunk := file.file.read(_CHUNK):
                digest.update(chunk)
                size += len(chunk)
                if size > services.settings.max_upload_bytes:
                    raise InvalidRequest("file too large")  # the body limit normally fires first
                out.write(chunk)
        data = tmp.read_bytes()
        status, details, kind, n = _dataset_report(data, services.settings.max_dataset_errors)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    row = File(
        id=file_id,
        team_id=scope.team_id,
        filename=display_name(file.filename),
        purpose=purpose,
        bytes=size,
        sha256=digest.hexdigest(),
        status=status,
        status_details=details,
        kind=kind,
        n_examples=n,
    )
    session.add(row)
    session.commit()
    return FilePublic.from_row(row)


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
def retrieve_file(scope: ScopeDep, file_id: str) -> FilePublic:
    return FilePublic.from_row(scope.file(file_id))


@router.get("/{file_id}/content", response_class=FileResponse)
def file_content(scope: ScopeDep, services: ServicesDep, file_id: str) -> FileResponse:
    row = scope.file(file_id)
    path = services.storage.file_path(scope.team_id, row.id)
    scope.session.rollback()  # end the read transaction before streaming
    return FileResponse(path, media_type="application/jsonl", filename=row.filename)


@router.delete("/{file_id}", response_model=FileDeleted)
def delete_file(
    session: SessionDep, scope: ScopeDep, services: ServicesDep, file_id: str
) -> FileDeleted:
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
