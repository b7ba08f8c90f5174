"""The scheduler's database side on SQLite and PostgreSQL: capacity from live worker
heartbeats only, concurrent passes never admit past capacity, only admitted jobs are
claimed, usage records feed the fair-share window, a requeued job waits for its back-off."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from jobs.auth import create_team
from jobs.db import make_engine, make_session_factory, transaction
from jobs.dispatch import Dispatcher, make_producer
from jobs.ids import new_id, utcnow
from jobs.leases import claim, fenced, finish
from jobs.migrate import upgrade
from jobs.models import Job, UsageRecord
from jobs.queue import admit, hold_for_retry, run_scheduler, snapshot
from jobs.settings import Settings
from jobs.states import JobStatus
from jobs.usage import window_usage
from jobs.workers import beat, capacity
from tests.job_rows import job_row
from tests.service_fixtures import fast_settings


@pytest.fixture(params=["sqlite", "postgresql"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    if request.param == "postgresql":
        url = request.getfixturevalue("pg_url")
        built = fast_settings(tmp_path / "data", database_url=url)
    else:
        built = fast_settings(tmp_path / "data")
    upgrade(built)
    return built


@pytest.fixture
def sessions(settings: Settings) -> sessionmaker[Session]:
    return make_session_factory(make_engine(settings))


def _jobs(sessions: sessionmaker[Session], n: int, team: str = "t") -> list[str]:
    with transaction(sessions) as session:
        row = create_team(session, f"{team}-{new_id('x', 6)}")
        jobs = [job_row(row.id) for _ in range(n)]
        session.add_all(jobs)
    return [j.id for j in jobs]


def _admitted(sessions: sessionmaker[Session]) -> set[str]:
    with sessions() as session:
        return set(session.scalars(select(Job.id).where(Job.admitted_at.is_not(None))))


def test_capacity_counts_live_workers_only(
    settings: Settings, sessions: sessionmaker[Session]
) -> None:
    now = utcnow()
    with transaction(sessions) as session:
        assert beat(session, worker_id="w1", pool="default", gpus=4, now=now) is True
        assert beat(session, worker_id="w1", pool="default", gpus=4, now=now) is False
        stale = now - timedelta(seconds=settings.worker_ttl_s + 1)
        beat(session, worker_id="w2", pool="default", gpus=8, now=stale)
    with sessions() as session:
        pool = capacity(session, settings, now)["default"]
    assert (pool.capacity, pool.largest_worker) == (4, 4)


def test_concurrent_passes_never_admit_past_capacity(
    settings: Settings, sessions: sessionmaker[Session]
) -> None:
    ids = _jobs(sessions, 6)
    with transaction(sessions) as session:
        beat(session, worker_id="w", pool="default", gpus=1, now=utcnow())
        beat(session, worker_id="v", pool="default", gpus=1, now=utcnow())
    dispatcher = Dispatcher(make_producer(settings))
    sent: list[int] = []
    threads = [
        threading.Thread(target=lambda: sent.append(run_scheduler(sessions, dispatcher, settings)))
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(sent) == 2 and len(_admitted(sessions)) == 2
    # Only the admitted jobs can be claimed; the others' messages would do nothing.
    with transaction(sessions) as session:
        claimed = [claim(session, job_id, owner="w", ttl_s=60) for job_id in ids]
    assert {c.job_id for c in claimed if c is not None} == _admitted(sessions)


def test_usage_records_feed_the_window_and_a_requeued_job_waits_its_back_off(
    settings: Settings, sessions: sessionmaker[Session]
) -> None:
    (job_id,) = _jobs(sessions, 1)
    with transaction(sessions) as session:
        beat(session, worker_id="w", pool="default", gpus=1, now=utcnow())
        assert [j.id for j in admit(session, settings, utcnow())] == [job_id]
    with transaction(sessions) as session:
        lease = claim(session, job_id, owner="w", ttl_s=60)
    assert lease is not None
    with fenced(sessions, lease) as session:
        finish(session, lease, JobStatus.QUEUED, message="requeued")
        job = session.scalars(select(Job).where(Job.id == job_id)).one()
        hold_for_retry(job, 3600.0)
    with sessions() as session:
        record = session.scalars(select(UsageRecord).where(UsageRecord.job_id == job_id)).one()
        assert record.ended_at is not None and record.gpus == 1
        later = record.ended_at + timedelta(hours=1)
        used = window_usage(session, record.started_at - timedelta(hours=1), later)
        team_id = session.scalar(select(Job.team_id).where(Job.id == job_id))
    assert team_id is not None
    assert used[team_id] == pytest.approx((record.ended_at - record.started_at).total_seconds())
    # Back in the queue with a back-off: not admitted again until it has passed.
    with transaction(sessions) as session:
        assert admit(session, settings, utcnow()) == []
        beat(session, worker_id="w", pool="default", gpus=1, now=utcnow() + timedelta(hours=2))
    with transaction(sessions) as session:
        assert [j.id for j in admit(session, settings, utcnow() + timedelta(hours=2))] == [job_id]


def test_eta_of_the_next_job_follows_the_running_jobs_pace(
    settings: Settings, sessions: sessionmaker[Session]
) -> None:
    running, waiting = _jobs(sessions, 2)
    now = utcnow()
    with transaction(sessions) as session:
        beat(session, worker_id="w", pool="default", gpus=1, now=now)
        assert [j.id for j in admit(session, settings, now)] == [running]
    with transaction(sessions) as session:
        assert claim(session, running, owner="w", ttl_s=60) is not None
        # Half done (5 of 10 steps) in 100 s: 100 s to go.
        session.execute(update(Job).where(Job.id == running).values(step=5, total_steps=10))
        session.execute(
            update(UsageRecord)
            .where(UsageRecord.job_id == running)
            .values(started_at=now - timedelta(seconds=100))
        )
    with sessions() as session:
        view = snapshot(session, settings, now)
    slot = view.plan.slots[waiting]
    assert (slot.position, slot.reason) == (1, "waiting_for_capacity")
    assert slot.estimated_start == pytest.approx(now.timestamp() + 100, abs=1)
