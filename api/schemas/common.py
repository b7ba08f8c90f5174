"""Shapes shared by every resource: OpenAI's error envelope and cursor-page parameters."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query
from pydantic import BaseModel


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorEnvelope(BaseModel):
    error: ErrorBody


After = Annotated[str | None, Query(max_length=64, description="cursor: the last id seen")]
Limit = Annotated[int, Query(ge=1, le=100)]
