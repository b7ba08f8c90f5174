"""File objects as OpenAI's SDK parses them (`openai.types.FileObject`)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from jobs.ids import epoch
from jobs.models import File


class FilePublic(BaseModel):
    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: Literal["uploaded", "processed", "error"]
    status_details: str | None = None
    expires_at: int | None = None

    @classmethod
    def from_row(cls, row: File) -> FilePublic:
        return cls(
            id=row.id,
            bytes=row.bytes,
            created_at=epoch(row.created_at) or 0,
            filename=row.filename,
            purpose=row.purpose,
            status=row.status,  # type: ignore[arg-type]
            status_details=row.status_details,
        )


class FilesPublic(BaseModel):
    object: Literal["list"] = "list"
    data: list[FilePublic]
    has_more: bool
    first_id: str | None = None
    last_id: str | None = None


class FileDeleted(BaseModel):
    id: str
    object: Literal["file"] = "file"
    deleted: bool = True
