"""The job store's guarantees: legal transitions only, one winner per claim, fenced writes
(a stale token writes nothing), the reaper, hashed keys, and paths that stay under the root."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from jobs.auth import authenticate_key, create_api_key, create_team, revoke_api_key
from jobs.db import make_engine, make_session_factory, transaction
from jobs.dispatch import stale_queued_jobs
from jobs.errors import IllegalTransition
from jobs.ids import new_id, utcnow
from jobs.leases import (
    ATTEMPTS_EXHAUSTED,
    NOT_ADMITTED,
    NOT_FOUND,
    NOT_QUEUED,
    LeaseLost,
    claim,
    fenced,
    heartbeat,
    reap_expired,
    record_metrics,
    refuse_claim,
)
from jobs.models import ApiKey, Job, JobEvent, JobMetric
from jobs.settings import Settings
from jobs.states import TRANSITIONS, JobStatus, check_transition, is_terminal
from jobs.storage import Storage
from tests.job_rows import job_row


@pytest.fixture
def sessions(sqlite_settings: Settings) -> sessionmaker[Session]:
    return make_session_factory(make_engine(sqlite_settings))


def _job(sessions: sessionmaker[Session], **values: object) -> str:
    with transaction(sessions) as session:
        team = create_team(session, new_id("t"))
        # As the scheduler leaves a job it has admitted.
        job = job_row(team.id, **({"admitted_at": utcnow()} | values))
        session.add(job)
    return job.id


def test_terminal_states_have_no_exits() -> None:
    for status in JobStatus:
        assert is_terminal(status) == (not TRANSITIONS[status])
    with pytest.raises(IllegalTransition):
        check_transition("succeeded", "running")
    with pytest.raises(IllegalTransition):
        check_transition("queued", "succeeded")
    check_transition("running", "queued")  # requeue after a crash


def test_only_one_claim_wins(sessions: sessionmaker[Session]) -> None:
    job_id = _job(sessions)
    with transaction(sessions) as session:
        first = claim(session, job_id, owner="w1", ttl_s=60)
    with transaction(sessions) as session:
        second = claim(session, job_id, owner="w2", ttl_s=60)
    assert first is not None and (first.token, first.attempt) == (1, 1)
    assert second is None


def test_a_job_without_attempts_left_is_failed_with_the_reason_not_left_queued(
    sessions: sessionmaker[Session],
) -> None:
    job_id = _job(sessions, attempt=3)
    with transaction(sessions) as session:
        assert claim(session, job_id, owner="w", ttl_s=60) is None
        assert refuse_claim(session, job_id) == ATTEMPTS_EXHAUSTED
    with sessions() as session:
        job = session.scalar(select(Job).where(Job.id == job_id))
        assert job is not None and job.status == "failed" and job.finished_at is not None
        assert job.admitted_at is None  # its GPUs go back to the pool
        assert job.error == {
            "code": "attempts_exhausted",
            "message": "no attempts left (3 of 3 used), so no worker may run the job again",
            "param": None,
        }
        (event,) = session.scalars(
            select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.level == "error")
        )
        assert event.message == f"Fine-tuning job failed: {job.error['message']}"
        assert event.data == {"status": "failed"}


def test_other_refused_claims_leave_the_job_as_it_is(sessions: sessionmaker[Session]) -> None:
    running = _job(sessions, status="running", attempt=1)
    paused = _job(sessions, status="paused", attempt=3)  # fails only once resumed and sent
    waiting = _job(sessions, admitted_at=None)
    with transaction(sessions) as session:
        reasons = {
            job_id: (claim(session, job_id, owner="w", ttl_s=60), refuse_claim(session, job_id))
            for job_id in (running, paused, waiting, "ftjob-missing")
        }
    assert reasons == {
        running: (None, NOT_QUEUED),
        paused: (None, NOT_QUEUED),
        waiting: (None, NOT_ADMITTED),
        "ftjob-missing": (None, NOT_FOUND),
    }
    with sessions() as session:
        status = dict(session.execute(select(Job.id, Job.status)).all())
        assert session.scalars(select(JobEvent).where(JobEvent.level == "error")).all() == []
    assert (status[running], status[paused], status[waiting]) == ("running", "paused", "queued")


def test_stale_token_writes_are_rejected(sessions: sessionmaker[Session]) -> None:
    job_id = _job(sessions)
    with transaction(sessions) as session:
        old = claim(session, job_id, owner="w1", ttl_s=60)
    assert old is not None
    # The lease expires and the reaper hands the job to another worker.
    with transaction(sessions) as session:
        expired = utcnow() - timedelta(seconds=1)
        session.execute(update(Job).where(Job.id == job_id).values(lease_expires_at=expired))
    with transaction(sessions) as session:
        assert [j.id for j in reap_expired(session, retry_backoff_s=0)] == [job_id]
    with transaction(sessions) as session:
        # Requeued, it must be admitted again before anyone may claim it.
        assert claim(session, job_id, owner="w2", ttl_s=60) is None
        session.execute(update(Job).where(Job.id == job_id).values(admitted_at=utcnow()))
        new = claim(session, job_id, owner="w2", ttl_s=60)
    assert new is not None and new.token > old.token
    with pytest.raises(LeaseLost), fenced(sessions, old) as session:
        record_metrics(session, old, 1, {"loss": 1.0})
    with pytest.raises(LeaseLost):
        heartbeat(sessions, old)
    with sessions() as session:
        assert session.scalars(select(JobMetric).where(JobMetric.job_id == job_id)).all() == []
    with fenced(sessions, new) as session:
        record_metrics(session, new, 1, {"loss": 1.0})


def test_reaper_finishes_cancel_and_fails_exhausted_jobs(sessions: sessionmaker[Session]) -> None:
    past = utcnow() - timedelta(seconds=5)
    cancel = _job(
        sessions, status="running", lease_expires_at=past, requested_action="cancel", attempt=1
    )
    exhausted = _job(sessions, status="running", lease_expires_at=past, attempt=3)
    # A lost worker is a crash even while pausing: the attempt stays spent, and a job with
    # none left fails now rather than pause into a state no claim could take it from.
    pause = _job(
        sessions, status="running", lease_expires_at=past, requested_action="pause", attempt=1
    )
    pause_exhausted = _job(
        sessions, status="running", lease_expires_at=past, requested_action="pause", attempt=3
    )
    live = _job(
        sessions, status="running", lease_expires_at=utcnow() + timedelta(seconds=60), attempt=1
    )
    with transaction(sessions) as session:
        assert reap_expired(session, retry_backoff_s=0) == []
    with sessions() as session:
        rows = {j.id: (j.status, j.attempt) for j in session.scalars(select(Job))}
    assert rows[cancel][0] == "cancelled" and rows[live][0] == "running"
    assert rows[exhausted][0] == "failed" and rows[pause_exhausted][0] == "failed"
    assert rows[pause] == ("paused", 1)


def test_stale_queued_jobs_are_redispatched(
    sessions: sessionmaker[Session], sqlite_settings: Settings
) -> None:
    fresh = _job(sessions, dispatched_at=utcnow(), dispatch_count=1)
    lost = _job(sessions, dispatched_at=utcnow() - timedelta(hours=1), dispatch_count=1)
    never = _job(sessions)
    with sessions() as session:
        ids = {j.id for j in stale_queued_jobs(session, sqlite_settings)}
    assert ids == {lost, never} and fresh not in ids


def test_api_keys_are_hashed_and_revocable(sessions: sessionmaker[Session]) -> None:
    with transaction(sessions) as session:
        team = create_team(session, "keys")
        row, key = create_api_key(session, team)
        team_id = team.id
    with sessions() as session:
        stored = session.get(ApiKey, row.id)
        assert stored is not None and key not in (stored.key_hash, stored.prefix)
        found = authenticate_key(session, key)
        assert found is not None and (found.id, found.team_id) == (row.id, team_id)
        assert not found.is_admin
        assert authenticate_key(session, key[:-1] + ("A" if key[-1] != "A" else "B")) is None
        assert authenticate_key(session, "") is None
    with transaction(sessions) as session:
        revoke_api_key(session, row.id)
    with sessions() as session:
        assert authenticate_key(session, key) is None


def test_storage_paths_stay_under_the_team_root(tmp_path: Path) -> None:
    storage = Storage(Settings(data_dir=tmp_path))
    with pytest.raises(ValueError):
        storage.file_path("team-a", "../../etc")
    with pytest.raises(ValueError):
        storage.resolve_in_job("team-a", "ftjob-x", "../../../etc/passwd")
    with pytest.raises(ValueError):
        storage.relative_to_job("team-a", "ftjob-x", Path("/etc/passwd"))
    path = storage.resolve_in_job("team-a", "ftjob-x", "checkpoints/step-1")
    assert path.is_relative_to(tmp_path.resolve())
