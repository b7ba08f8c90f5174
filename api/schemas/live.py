"""Shapes of the dashboard's extensions: rollout samples per step (`.../samples`) and
signed checkpoint download links (`.../download_link`)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel

from jobs.ids import epoch
from jobs.models import JobEvent


class RolloutSample(BaseModel):
    prompt: str
    completion: str
    reward: float | None = None


class StepSamplesPublic(BaseModel):
    """A few rollouts of one RL step, as the trainer reported them."""

    id: str
    object: Literal["fine_tuning.job.samples"] = "fine_tuning.job.samples"
    created_at: int
    step: int
    samples: list[RolloutSample]

    @classmethod
    def from_row(cls, row: JobEvent) -> StepSamplesPublic:
        data: dict[str, Any] = row.data or {}
        return cls(
            id=row.id,
            created_at=epoch(row.created_at) or 0,
            step=int(data.get("step") or 0),
            samples=[RolloutSample.model_validate(s) for s in data.get("samples") or []],
        )


class StepSamplesListPublic(BaseModel):
    object: Literal["list"] = "list"
    data: list[StepSamplesPublic]
    has_more: bool


class DownloadLinkPublic(BaseModel):
    """A URL that downloads one checkpoint without the API key, until `expires_at`."""

    object: Literal["fine_tuning.job.checkpoint.download_link"] = (
        "fine_tuning.job.checkpoint.download_link"
    )
    url: str
    expires_at: int
