"""The pool view (`GET /v1/pools`): per pool, its capacity, the running and queued jobs, and
each team's usage against its quota. Other teams' job ids are hidden from non-admin keys."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel


class UsedOfLimit(BaseModel):
    used: float
    limit: float | None = None  # None: no limit


class PoolTeam(BaseModel):
    team: str  # the team's name
    share: float
    running_jobs: int
    queued_jobs: int
    gpus: UsedOfLimit  # GPUs held in this pool / the team's max_gpus
    queued_quota: UsedOfLimit  # queued jobs (all pools) / the team's max_queued_jobs
    gpu_seconds_window: float  # the fair-share usage (all pools)


class PoolRunningJob(BaseModel):
    id: str | None  # None: another team's job, for a non-admin key
    team: str
    gpus: int
    priority: str
    started_at: int | None = None
    progress_percent: float | None = None
    estimated_finish_at: int | None = None


class PoolQueuedJob(BaseModel):
    id: str | None
    team: str
    gpus: int
    priority: str
    position: int
    ahead: int
    estimated_start_at: int | None = None
    reason: str


class PoolPublic(BaseModel):
    object: Literal["pool"] = "pool"
    name: str
    workers: int
    capacity_gpus: int
    used_gpus: int
    queued_jobs: int
    teams: list[PoolTeam]
    running: list[PoolRunningJob]
    queued: list[PoolQueuedJob]


class PoolsPublic(BaseModel):
    object: Literal["list"] = "list"
    data: list[PoolPublic]
    has_more: bool = False
