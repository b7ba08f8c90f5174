"""The API's short-lived caches, on a fake clock: an authenticated key (`jobs.auth.AuthCache`)
and the queue plan behind queued jobs' places (`jobs.queue.QueueSlots`). A commit in this
process that touches what they were read from drops them at once; a write by another
process (here: plain sqlite3, past SQLAlchemy's session events) shows once the entry is
older than its bound, and not before."""

from __future__ import annotations

import sqlite3

from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from jobs.auth import AuthCache, create_api_key, create_team, revoke_api_key
from jobs.db import make_engine, make_session_factory, transaction
from jobs.ids import new_id
from jobs.models import Job
from jobs.queue import QueueSlots
from jobs.settings import Settings
from jobs.states import JobStatus
from tests.job_rows import job_row
from tests.service_fixtures import register_worker


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _sessions(settings: Settings) -> sessionmaker[Session]:
    return make_session_factory(make_engine(settings))


def _other_process(settings: Settings, sql: str, *params: object) -> None:
    """A write this process's session events never see, as another process's would be."""
    with sqlite3.connect(settings.data_dir / "lco.db") as conn:
        conn.execute(sql, params)


def test_a_cached_key_dies_at_once_when_revoked_here_and_within_the_bound_elsewhere(
    sqlite_settings: Settings,
) -> None:
    sessions = _sessions(sqlite_settings)
    with transaction(sessions) as session:
        team = create_team(session, "a")
        row, key = create_api_key(session, team)
        other_row, other_key = create_api_key(session, team)
    clock = Clock()
    cache = AuthCache(sessions, ttl_s=1.0, clock=clock)
    assert cache.get(key) is None  # nothing cached before a load
    found = cache.load(key)
    assert found is not None and found.id == row.id and found.team_id == team.id
    assert cache.get(key) == found
    assert cache.load("lco-" + "x" * 48) is None and cache.get("lco-" + "x" * 48) is None

    # Revoked in this process: the next request is refused.
    with transaction(sessions) as session:
        revoke_api_key(session, row.id)
    assert cache.get(key) is None and cache.load(key) is None

    # Revoked by another process: served from memory until the entry is ttl_s old.
    assert cache.load(other_key) is not None
    _other_process(
        sqlite_settings,
        "UPDATE api_keys SET revoked_at = '2026-01-01 00:00:00.000000' WHERE id = ?",
        other_row.id,
    )
    clock.now += 0.9
    assert cache.get(other_key) is not None
    clock.now += 0.1
    assert cache.get(other_key) is None and cache.load(other_key) is None


def test_a_disabled_auth_cache_keeps_nothing(sqlite_settings: Settings) -> None:
    sessions = _sessions(sqlite_settings)
    with transaction(sessions) as session:
        _, key = create_api_key(session, create_team(session, "a"))
    cache = AuthCache(sessions, ttl_s=0)
    assert cache.load(key) is not None and cache.get(key) is None


def _queued(sessions: sessionmaker[Session], team_id: str, n: int) -> list[str]:
    # Two GPUs each, more than the worker has: they stay queued.
    jobs = [job_row(team_id, gpus=2) for _ in range(n)]
    with transaction(sessions) as session:
        session.add_all(jobs)
    return [j.id for j in jobs]


def test_queue_places_follow_local_commits_at_once_and_others_within_the_bound(
    sqlite_settings: Settings,
) -> None:
    register_worker(sqlite_settings, gpus=1, hours=24)
    sessions = _sessions(sqlite_settings)
    with transaction(sessions) as session:
        team_id = create_team(session, "a").id
    first, second = _queued(sessions, team_id, 2)
    clock = Clock()
    places = QueueSlots(sqlite_settings, ttl_s=1.0, clock=clock)

    def position(job_id: str) -> int:
        with sessions() as session:
            return places.slots(session, [job_id])[job_id].position

    assert (position(first), position(second)) == (1, 2)
    # A job committed in this process is planned at once (and one from elsewhere, below).
    (third,) = _queued(sessions, team_id, 1)
    assert position(third) == 3
    # Cancelled here: the plan is dropped with the commit.
    with transaction(sessions) as session:
        session.execute(update(Job).where(Job.id == first).values(status=JobStatus.CANCELLED))
    assert position(second) == 1
    # Cancelled by another process: the reused plan shows it once it is ttl_s old.
    _other_process(sqlite_settings, "UPDATE jobs SET status = 'cancelled' WHERE id = ?", second)
    clock.now += 0.5
    assert position(third) == 2
    clock.now += 0.5
    assert position(third) == 1
    # A queued job the reused plan has never seen is planned at once.
    fourth = new_id("ftjob")
    _other_process(
        sqlite_settings,
        "INSERT INTO jobs (id, team_id, created_at, updated_at, spec, model, base_model, "
        "training_file, method_type, seed, pool, gpus, priority, status, max_attempts, "
        "fencing_token, attempt, step, dispatch_count) SELECT ?, team_id, created_at, "
        "updated_at, spec, model, base_model, training_file, method_type, seed, pool, gpus, "
        "priority, 'queued', max_attempts, fencing_token, attempt, step, dispatch_count "
        "FROM jobs WHERE id = ?",
        fourth,
        third,
    )
    assert position(fourth) == 2
