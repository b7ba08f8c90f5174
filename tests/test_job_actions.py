"""The user's actions on a job (cancel, pause, resume): the lifecycle accepts exactly those
`jobs.states.allowed_actions` lists, which the job object carries (`actions`) for clients
such as the dashboard, and a repeat of a pending request changes nothing."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from api.schemas.jobs import JobPublic
from jobs.auth import create_team
from jobs.db import make_engine, make_session_factory, transaction
from jobs.errors import IllegalTransition
from jobs.ids import new_id
from jobs.lifecycle import cancel_job, pause_job, resume_job
from jobs.models import Job, JobEvent
from jobs.scope import TeamScope
from jobs.settings import Settings
from jobs.states import Action, JobStatus, allowed_actions
from tests.job_rows import job_row

LIFECYCLE: dict[Action, Callable[[Session, TeamScope, str], Job]] = {
    Action.CANCEL: cancel_job,
    Action.PAUSE: pause_job,
    Action.RESUME: resume_job,
}
# Every state a job can be in: each status, and running with each pending request.
STATES = [(status, None) for status in JobStatus] + [
    (JobStatus.RUNNING, Action.CANCEL),
    (JobStatus.RUNNING, Action.PAUSE),
]


@pytest.fixture
def sessions(sqlite_settings: Settings) -> sessionmaker[Session]:
    return make_session_factory(make_engine(sqlite_settings))


@pytest.mark.parametrize(("status", "requested"), STATES)
@pytest.mark.parametrize("action", list(Action))
def test_lifecycle_accepts_exactly_the_allowed_actions(
    sessions: sessionmaker[Session], status: JobStatus, requested: Action | None, action: Action
) -> None:
    with transaction(sessions) as session:
        team = create_team(session, new_id("t"))
        job = job_row(team.id, status=status, requested_action=requested)
        session.add(job)
    allowed = action in allowed_actions(status, requested)
    repeat = action == requested
    with transaction(sessions) as session:
        scope = TeamScope(session, team.id)
        count = select(func.count()).select_from(JobEvent).where(JobEvent.job_id == job.id)
        events = session.scalar(count)
        if not allowed and not repeat:
            with pytest.raises(IllegalTransition):
                LIFECYCLE[action](session, scope, job.id)
            return
        after = LIFECYCLE[action](session, scope, job.id)
        session.flush()
        # A repeat of the pending request is accepted and changes nothing.
        assert ((after.status, after.requested_action) == (status, requested)) == repeat
        assert (session.scalar(count) == events) == repeat


def test_job_object_lists_the_allowed_actions(sessions: sessionmaker[Session]) -> None:
    with transaction(sessions) as session:
        team = create_team(session, new_id("t"))
        job = job_row(team.id, status=JobStatus.RUNNING, requested_action="pause")
        session.add(job)
        session.flush()
        assert JobPublic.from_row(job).actions == ["cancel", "resume"]
        job.status, job.requested_action = JobStatus.SUCCEEDED, None
        assert JobPublic.from_row(job).actions == []


def test_a_finished_job_has_no_phase(sessions: sessionmaker[Session]) -> None:
    """The phase column can outlive the attempt that set it (a lost worker's job keeps
    "training"); the job object shows a phase only while queued or running."""
    with transaction(sessions) as session:
        team = create_team(session, new_id("t"))
        job = job_row(team.id, status=JobStatus.SUCCEEDED, phase="training")
        session.add(job)
        session.flush()
        assert JobPublic.from_row(job).status_details.phase is None
        job.status = JobStatus.RUNNING
        assert JobPublic.from_row(job).status_details.phase == "training"
