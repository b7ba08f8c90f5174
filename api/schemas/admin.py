"""Admin objects: teams with their policy, and API keys (the secret only once, at creation)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from jobs.ids import epoch
from jobs.models import ApiKey, Team

TeamName = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.-]+$")]
Priority = Literal["low", "normal", "high"]
QuotaPolicy = Literal["queue", "reject"]
Share = Annotated[float, Field(gt=0, le=1e6)]
Limit = Annotated[int, Field(ge=0, le=1_000_000)]


class TeamPolicyFields(BaseModel):
    model_config = ConfigDict(extra="forbid")

    share: Share | None = None
    max_gpus: Limit | None = None
    max_queued_jobs: Limit | None = None
    max_priority: Priority | None = None
    quota_policy: QuotaPolicy | None = None


class TeamCreate(TeamPolicyFields):
    name: TeamName


class TeamUpdate(TeamPolicyFields):
    """Only the fields sent change; `null` for max_gpus / max_queued_jobs removes the limit."""


class TeamPublic(BaseModel):
    id: str
    object: Literal["team"] = "team"
    name: str
    created_at: int
    share: float
    max_gpus: int | None
    max_queued_jobs: int | None
    max_priority: str
    quota_policy: str

    @classmethod
    def from_row(cls, team: Team) -> TeamPublic:
        return cls(
            id=team.id,
            name=team.name,
            created_at=epoch(team.created_at) or 0,
            share=team.share,
            max_gpus=team.max_gpus,
            max_queued_jobs=team.max_queued_jobs,
            max_priority=team.max_priority,
            quota_policy=team.quota_policy,
        )


class TeamsPublic(BaseModel):
    object: Literal["list"] = "list"
    data: list[TeamPublic]
    has_more: bool = False


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(max_length=128)] | None = None
    is_admin: bool = False


class KeyPublic(BaseModel):
    id: str
    object: Literal["api_key"] = "api_key"
    team_id: str
    name: str | None
    prefix: str
    is_admin: bool
    created_at: int
    revoked_at: int | None = None

    @classmethod
    def from_row(cls, row: ApiKey) -> KeyPublic:
        return cls(
            id=row.id,
            team_id=row.team_id,
            name=row.name,
            prefix=row.prefix,
            is_admin=row.is_admin,
            created_at=epoch(row.created_at) or 0,
            revoked_at=epoch(row.revoked_at),
        )


class KeyCreated(KeyPublic):
    key: str  # the secret: shown in this response only


class KeysPublic(BaseModel):
    object: Literal["list"] = "list"
    data: list[KeyPublic]
    has_more: bool = False
