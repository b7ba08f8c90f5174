"""Graders in OpenAI's grader JSON (placeholder: replaced by the full implementation)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field


class StringCheckGrader(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["string_check"]
    name: str = "string_check"
    input: str
    reference: str
    operation: Literal["eq", "ne", "like", "ilike"] = "eq"


GraderSpec = Annotated[StringCheckGrader, Field(discriminator="type")]
