"""Team policy at submission: the pool exists, the job can ever fit the team's GPU quota, the
team is under its queued-jobs quota, the GPU quota per the team's policy, and the priority
clamped to the team's ceiling.

    priority = check_submission(session, team, settings, pool="default", gpus=1, priority="high")
    set_policy(team, share=2.0, max_gpus=8)          # admin: the caller commits

Over a quota answers 429 (`QuotaExceeded`) with a message naming the limit. With
`quota_policy = "queue"` (the default) a job over the GPU quota is accepted and waits
(`status_details.reason = waiting_for_quota`); with `"reject"` it is refused.
"""

from __future__ import annotations

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from jobs.errors import InvalidRequest, QuotaExceeded
from jobs.models import Job, Team
from jobs.scheduling import PRIORITIES, clamp_priority
from jobs.settings import Settings
from jobs.states import JobStatus

QUOTA_POLICIES = ("queue", "reject")


def held_gpus(session: Session, team_id: str) -> int:
    """GPUs the team's running and admitted jobs hold now."""
    total = session.scalar(
        select(func.coalesce(func.sum(Job.gpus), 0)).where(
            Job.team_id == team_id,
            or_(
                Job.status == JobStatus.RUNNING,
                (Job.status == JobStatus.QUEUED) & Job.admitted_at.is_not(None),
            ),
        )
    )
    return int(total or 0)


def queued_jobs(session: Session, team_id: str) -> int:
    total = session.scalar(
        select(func.count()).where(Job.team_id == team_id, Job.status == JobStatus.QUEUED)
    )
    return int(total or 0)


def check_submission(
    session: Session, team: Team, settings: Settings, *, pool: str, gpus: int, priority: str
) -> str:
    """Raise InvalidRequest (400) or QuotaExceeded (429), else return the clamped priority."""
    if pool not in settings.pools:
        raise InvalidRequest(
            f"unknown pool {pool!r}; pools: {', '.join(settings.pools)}",
            param="pool",
            code="pool_not_found",
        )
    if team.max_gpus is not None and gpus > team.max_gpus:
        raise InvalidRequest(
            f"the job asks for {gpus} GPUs; team {team.name!r} may use at most {team.max_gpus}",
            param="resources.gpus",
            code="exceeds_quota",
        )
    if team.max_queued_jobs is not None:
        waiting = queued_jobs(session, team.id)
        if waiting >= team.max_queued_jobs:
            raise QuotaExceeded(
                f"team {team.name!r} has {waiting} queued jobs, its quota is "
                f"{team.max_queued_jobs}; retry when some have started",
                code="queued_jobs_quota_exceeded",
            )
    if team.quota_policy == "reject" and team.max_gpus is not None:
        held = held_gpus(session, team.id)
        if held + gpus > team.max_gpus:
            raise QuotaExceeded(
                f"team {team.name!r} holds {held} of its {team.max_gpus} GPUs and this job "
                f"asks for {gpus}; retry when its jobs finish",
                param="resources.gpus",
                code="gpu_quota_exceeded",
            )
    return clamp_priority(priority, team.max_priority)


_UNSET = object()


def set_policy(
    team: Team,
    *,
    share: float | None = None,
    max_gpus: int | object | None = _UNSET,
    max_queued_jobs: int | object | None = _UNSET,
    max_priority: str | None = None,
    quota_policy: str | None = None,
) -> Team:
    """Change a team's policy; a limit given as None removes it. Raises InvalidRequest."""
    if share is not None:
        if not 0 < share <= 1e6:
            raise InvalidRequest("share must be > 0", param="share")
        team.share = share
    for name, value in (("max_gpus", max_gpus), ("max_queued_jobs", max_queued_jobs)):
        if value is _UNSET:
            continue
        if value is not None and (not isinstance(value, int) or value < 0):
            raise InvalidRequest(f"{name} must be a whole number >= 0 or null", param=name)
        setattr(team, name, value)
    if max_priority is not None:
        if max_priority not in PRIORITIES:
            raise InvalidRequest(f"max_priority must be one of {PRIORITIES}", param="max_priority")
        team.max_priority = max_priority
    if quota_policy is not None:
        if quota_policy not in QUOTA_POLICIES:
            raise InvalidRequest(
                f"quota_policy must be one of {QUOTA_POLICIES}", param="quota_policy"
            )
        team.quota_policy = quota_policy
    return team
