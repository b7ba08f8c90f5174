"""An admin's view of every team's jobs, and cancel, pause and resume on any of them.

The actions are `jobs.lifecycle`'s own (one place for each state change): an admin acts
through a `TeamScope` of the job's own team, built here after the caller checked that the
key is an admin key (the API's `AdminKey`). Each action that changes the job adds an event
naming the admin key, so the team sees who stopped its job and why it did not stop itself.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.orm import Session

from jobs.auth import AuthenticatedKey, get_team
from jobs.errors import NotFound
from jobs.events import add_event
from jobs.lifecycle import cancel_job, pause_job, resume_job
from jobs.models import ApiKey, Job
from jobs.scope import Page, TeamScope
from jobs.states import Action, JobStatus

_LIFECYCLE: dict[Action, Callable[[Session, TeamScope, str], Job]] = {
    Action.CANCEL: cancel_job,
    Action.PAUSE: pause_job,
    Action.RESUME: resume_job,
}
# What the action did: the job stopped (or runs on) now, or a running job stops between
# steps (`requested_action` set), which the worker then records itself.
_DONE = {Action.CANCEL: "Cancelled", Action.PAUSE: "Paused", Action.RESUME: "Resumed"}
_REQUESTED = {Action.CANCEL: "Cancellation requested", Action.PAUSE: "Pause requested"}


def _no_job(job_id: str) -> NotFound:
    return NotFound(f"No such fine-tuning job: {job_id}", code="job_not_found")


def scope_of_job(session: Session, job_id: str) -> TeamScope:
    """The scope of the team that owns `job_id`, for an admin to act through (NotFound if
    there is no such job). Admins only: the caller has checked the key."""
    team_id = session.scalar(select(Job.team_id).where(Job.id == job_id))
    if team_id is None:
        raise _no_job(job_id)
    return TeamScope(session, team_id)


def list_all_jobs(
    session: Session,
    *,
    team_id: str | None,
    status: JobStatus | None,
    after: str | None,
    limit: int,
) -> Page[Job]:
    """Jobs of every team (or of `team_id`, NotFound if no such team), newest first, in
    cursor pages as the team's own list (`after`: the last job id seen)."""
    stmt = select(Job)
    if team_id is not None:
        stmt = stmt.where(Job.team_id == get_team(session, team_id).id)
    if status is not None:
        stmt = stmt.where(Job.status == status.value)
    if after is not None:
        after_pk = session.scalar(select(Job.pk).where(Job.id == after))
        if after_pk is None:
            raise NotFound(f"No such fine-tuning job: {after}", param="after")
        stmt = stmt.where(Job.pk < after_pk)
    rows = list(session.scalars(stmt.order_by(Job.pk.desc()).limit(limit + 1)))
    return Page(items=rows[:limit], has_more=len(rows) > limit)


def admin_label(session: Session, key: AuthenticatedKey) -> str:
    """How events name an admin key: `name (key-id)`, or its id if it has no name."""
    name = session.scalar(select(ApiKey.name).where(ApiKey.id == key.id))
    return f"{name} ({key.id})" if name else key.id


def act_on_job(session: Session, key: AuthenticatedKey, job_id: str, action: Action) -> Job:
    """`action` on any team's job, by the lifecycle's rules (IllegalTransition as for the
    team itself), with an event naming the admin key. A repeat of a pending request changes
    nothing and adds no event. The caller commits, then runs a scheduler pass."""
    if not key.is_admin:  # the API checks first; this keeps any other caller honest
        raise _no_job(job_id)
    scope = scope_of_job(session, job_id)
    # Locked as the lifecycle locks it (the same row object), so `before` is what it acts on.
    locked = scope.job(job_id, for_update=True)
    before = (locked.status, locked.requested_action)
    job = _LIFECYCLE[action](session, scope, job_id)
    if (job.status, job.requested_action) != before:
        done = _REQUESTED[action] if job.requested_action == action else _DONE[action]
        add_event(
            session,
            job.id,
            f"{done} by admin key {admin_label(session, key)}",
            data={"action": action.value, "admin_key_id": key.id, "admin_team_id": key.team_id},
        )
    return job
