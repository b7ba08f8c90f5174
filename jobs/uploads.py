"""Storing an uploaded dataset: written to disk as it arrives, validated as a stream, recorded.

    upload = Upload.begin(storage, settings, team_id)   # a `.part` file under the team's dir
    upload.write(chunk)                                 # per chunk: counted, hashed, written
    row = upload.finish(session, filename=name, purpose="fine-tune")   # commits
    upload.abort()                                      # always, in a `finally`: drops a leftover .part

Memory stays bounded whatever the file's size: no step holds more than one chunk, and
validation reads the stored file back one line at a time (`lco_spec.datasets`, which cuts
an over-long line at `MAX_LINE_BYTES`). The team's storage quota
(`Settings.team_storage_bytes`, the bytes of its stored files) is checked twice: against
the declared size before any of the body is read (`check_quota`), and against the real
size with the team row locked just before the row is added, so two concurrent uploads
cannot both slip under it.
"""

from __future__ import annotations

import hashlib
import os
from typing import BinaryIO

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from jobs.errors import InvalidRequest, QuotaExceeded
from jobs.ids import new_id
from jobs.models import File, Team
from jobs.settings import Settings
from jobs.storage import Storage

PURPOSES = ("fine-tune",)


def stored_bytes(session: Session, team_id: str) -> int:
    """Bytes of the team's stored files."""
    total = session.scalar(
        select(func.coalesce(func.sum(File.bytes), 0)).where(File.team_id == team_id)
    )
    return int(total or 0)


def check_quota(session: Session, settings: Settings, team_id: str, incoming: int) -> None:
    """Raise QuotaExceeded (429) if `incoming` more bytes would take the team's stored files
    over `team_storage_bytes`; the message gives the numbers."""
    used = stored_bytes(session, team_id)
    if used + incoming > settings.team_storage_bytes:
        raise QuotaExceeded(
            f"storage quota exceeded: the team stores {used} bytes of files, this upload "
            f"is {incoming} bytes, and the quota is {settings.team_storage_bytes} bytes; "
            "delete files (DELETE /v1/files/{file_id}) to make room",
            param="file",
            code="storage_quota_exceeded",
            retry_after_s=3600,
        )


def check_purpose(purpose: str | None) -> str:
    if purpose is None:
        raise InvalidRequest(
            "purpose is required", param="purpose", code="missing_required_parameter"
        )
    if purpose not in PURPOSES:
        raise InvalidRequest(
            f"purpose must be one of {list(PURPOSES)}", param="purpose", code="invalid_purpose"
        )
    return purpose


class Upload:
    """One upload in progress: its id, its `.part` file, the running size and sha256."""

    def __init__(self, storage: Storage, settings: Settings, team_id: str):
        self.settings = settings
        self.team_id = team_id
        self.file_id = new_id("file")
        self.path = storage.file_path(team_id, self.file_id)
        self.part = self.path.with_suffix(".part")
        self.size = 0
        self._digest = hashlib.sha256()
        self._out: BinaryIO | None = None

    @classmethod
    def begin(cls, storage: Storage, settings: Settings, team_id: str) -> Upload:
        upload = cls(storage, settings, team_id)
        upload.path.parent.mkdir(parents=True, exist_ok=True)
        upload._out = upload.part.open("wb")
        return upload

    def write(self, chunk: bytes) -> None:
        """Append a chunk; InvalidRequest past `max_upload_bytes` (the API's body limit
        normally answers 413 first; this bounds any other caller)."""
        assert self._out is not None, "write after finish or abort"
        self.size += len(chunk)
        if self.size > self.settings.max_upload_bytes:
            raise InvalidRequest(
                f"file too large: at most {self.settings.max_upload_bytes} bytes",
                param="file",
                code="file_too_large",
            )
        self._digest.update(chunk)
        self._out.write(chunk)

    def _validate(self) -> tuple[str, str | None, str | None, int]:
        """(status, status_details, kind, n_examples), reading the stored file line by line."""
        from lco_spec.datasets import validate_dataset

        with self.part.open("rb") as stored:
            report = validate_dataset(stored, "any", max_errors=self.settings.max_dataset_errors)
        if report.errors:
            details = "; ".join(str(e) for e in report.errors)
            return "error", f"Invalid file format: {details}"[:8000], None, report.n_examples
        return "processed", None, report.kind_detected, report.n_examples

    def finish(self, session: Session, *, filename: str, purpose: str) -> File:
        """Validate, then with the team row locked check the quota, move the file into place,
        add its row and commit (a file that fails validation is kept with status `error`, as
        OpenAI reports it). The file is in place before its row is visible; if the commit
        fails, the file is removed again. The lock is held only for the quota sum and the
        insert, never during validation."""
        assert self._out is not None, "finish after abort"
        self._out.close()
        self._out = None
        status, details, kind, n = self._validate()
        session.get(Team, self.team_id, with_for_update=True)
        check_quota(session, self.settings, self.team_id, self.size)
        row = File(
            id=self.file_id,
            team_id=self.team_id,
            filename=filename,
            purpose=purpose,
            bytes=self.size,
            sha256=self._digest.hexdigest(),
            status=status,
            status_details=details,
            kind=kind,
            n_examples=n,
        )
        session.add(row)
        os.replace(self.part, self.path)
        try:
            session.commit()
        except BaseException:
            self.path.unlink(missing_ok=True)
            raise
        return row

    def abort(self) -> None:
        """Close and remove the `.part` file, if any is left (safe to call after finish)."""
        if self._out is not None:
            self._out.close()
            self._out = None
        self.part.unlink(missing_ok=True)
