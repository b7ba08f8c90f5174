"""`GET /v1/pools` and `GET /v1/pools/{pool}`: the shared GPU pools as the scheduler sees
them (capacity from live workers, running and queued jobs per team, usage against quota).
Any key may look (the pools are shared); other teams' job ids show only to admin keys."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy.orm import Session

from api.deps import CurrentKey, ServicesDep, SessionDep
from api.schemas.pools import (
    PoolPublic,
    PoolQueuedJob,
    PoolRunningJob,
    PoolsPublic,
    PoolTeam,
    UsedOfLimit,
)
from jobs.auth import AuthenticatedKey
from jobs.errors import NotFound
from jobs.ids import epoch
from jobs.models import Job
from jobs.queue import QueueView, queue_view
from jobs.scheduling import Slot
from jobs.settings import Settings
from jobs.states import JobStatus
from jobs.workers import live_workers

router = APIRouter(prefix="/v1/pools", tags=["pools"])


def _pool(view: QueueView, name: str, workers: int, viewer: AuthenticatedKey) -> PoolPublic:
    def shown(team_id: str, job_id: str) -> str | None:
        return job_id if viewer.is_admin or team_id == viewer.team_id else None

    def team_name(team_id: str) -> str:
        team = view.teams.get(team_id)
        return team.name if team else team_id

    now = view.state.now
    remaining = {r.id: r.remaining_s for r in view.state.running}
    pool = view.state.pools.get(name)
    jobs = [j for j in view.jobs.values() if j.pool == name]
    running = [j for j in jobs if j.status == JobStatus.RUNNING]
    queued = sorted(
        (j for j in jobs if j.status == JobStatus.QUEUED and j.id in view.plan.slots),
        key=lambda j: view.plan.slots[j.id].position,
    )
    all_queued = [j for j in view.jobs.values() if j.status == JobStatus.QUEUED]
    teams = []
    for team in sorted(view.teams.values(), key=lambda t: t.name):
        held = sum(j.gpus for j in jobs if j.team_id == team.id and j.id in remaining)
        teams.append(
            PoolTeam(
                team=team.name,
                share=team.share,
                running_jobs=sum(1 for j in running if j.team_id == team.id),
                queued_jobs=sum(1 for j in queued if j.team_id == team.id),
                gpus=UsedOfLimit(used=held, limit=team.max_gpus),
                queued_quota=UsedOfLimit(
                    used=sum(1 for j in all_queued if j.team_id == team.id),
                    limit=team.max_queued_jobs,
                ),
                gpu_seconds_window=round(view.state.usage.get(team.id, 0.0), 1),
            )
        )
    return PoolPublic(
        name=name,
        workers=workers,
        capacity_gpus=pool.capacity if pool else 0,
        used_gpus=sum(j.gpus for j in jobs if j.id in remaining),
        queued_jobs=len(queued),
        teams=teams,
        running=[
            PoolRunningJob(
                id=shown(j.team_id, j.id),
                team=team_name(j.team_id),
                gpus=j.gpus,
                priority=j.priority,
                started_at=epoch(j.status_since),
                progress_percent=round(100.0 * j.step / j.total_steps, 1)
                if j.total_steps
                else None,
                estimated_finish_at=int(now + remaining[j.id]),
            )
            for j in running
        ],
        queued=[
            _queued(j, view.plan.slots[j.id], shown(j.team_id, j.id), team_name(j.team_id))
            for j in queued
        ],
    )


def _queued(job: Job, slot: Slot, shown_id: str | None, team: str) -> PoolQueuedJob:
    start = slot.estimated_start
    return PoolQueuedJob(
        id=shown_id,
        team=team,
        gpus=job.gpus,
        priority=job.priority,
        position=slot.position,
        ahead=slot.ahead,
        estimated_start_at=None if start is None else int(start),
        reason=slot.reason,
    )


def _workers(session: Session, settings: Settings, view: QueueView) -> dict[str, int]:
    counts: dict[str, int] = {}
    for worker in live_workers(session, settings, view.now):
        counts[worker.pool] = counts.get(worker.pool, 0) + 1
    return counts


@router.get("", response_model=PoolsPublic)
def pools(session: SessionDep, services: ServicesDep, key: CurrentKey) -> PoolsPublic:
    view = queue_view(session, services.settings)
    workers = _workers(session, services.settings, view)
    names = sorted(view.state.pools)
    return PoolsPublic(data=[_pool(view, n, workers.get(n, 0), key) for n in names])


@router.get("/{pool}", response_model=PoolPublic)
def pool(session: SessionDep, services: ServicesDep, key: CurrentKey, pool: str) -> PoolPublic:
    view = queue_view(session, services.settings)
    if pool not in view.state.pools:
        raise NotFound(f"No such pool: {pool}", param="pool", code="pool_not_found")
    return _pool(view, pool, _workers(session, services.settings, view).get(pool, 0), key)
