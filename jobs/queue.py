"""The scheduler's database side: build `QueueState` from the rows, admit what
`jobs.scheduling.schedule` picks, and show every queued job's place.

    sent = run_scheduler(sessions, dispatcher, settings)   # after submit/finish, and periodically
    view = queue_view(session, settings)                   # plan + state, for the pool view
    places = QueueSlots(settings).places(session, queued, running)
        # queued jobs' places and queued and running jobs' estimated finishes, for the job
        # objects (planned at most once a `queue_cache_s` per process)

Admission sets `admitted_at` and marks the job dispatched in one transaction; the worker
message goes out after the commit. Only an admitted job can be claimed (`jobs.leases`), so
the database, not the message, decides what runs. Passes are serialised: on PostgreSQL by
an advisory lock, on SQLite by the write lock every transaction takes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, text
from sqlalchemy.orm import Session, load_only, sessionmaker

from jobs.changes import track_writes, version
from jobs.db import transaction
from jobs.dispatch import Dispatcher
from jobs.ids import utcnow
from jobs.models import Job, Team
from jobs.scheduling import Plan, Queued, QueueState, Running, Slot, TeamPolicy, schedule
from jobs.settings import Settings
from jobs.states import JobStatus
from jobs.usage import open_records, typical_duration_s, window_usage
from jobs.workers import capacity

log = logging.getLogger(__name__)

_ADVISORY_LOCK = 0x4C434F  # "LCO": one scheduler pass at a time


@dataclass
class QueueView:
    """One consistent look at the queue: what the scheduler saw and what it would do."""

    now: datetime
    state: QueueState
    plan: Plan
    teams: dict[str, Team]
    jobs: dict[str, Job]  # running and queued; only `_SNAPSHOT_COLUMNS` loaded


# The columns a pass reads: planning, admission (`Dispatcher.mark`) and the pool view. The
# spec (with the metadata), the error and the phase message are large JSON and text that
# no pass needs, read for every queued and running job on every pass (and status GET that
# plans); they stay unloaded (a load on access, if ever, rather than a wrong answer).
_SNAPSHOT_COLUMNS = (
    Job.id,
    Job.team_id,
    Job.created_at,
    Job.pool,
    Job.gpus,
    Job.priority,
    Job.status,
    Job.status_since,
    Job.step,
    Job.total_steps,
    Job.not_before,
    Job.admitted_at,
    Job.dispatched_at,
    Job.dispatch_count,
)


def _seconds(dt: datetime) -> float:
    return dt.timestamp()


def _remaining_s(
    job: Job, started: datetime | None, start_step: int, now: datetime, typical: float
) -> float:
    """A running attempt's expected time left: its own pace once it has steps, else the pool's
    typical run length."""
    if started is None:
        return typical
    elapsed = (now - started).total_seconds()
    done = job.step - start_step
    if job.total_steps and done > 0 and elapsed > 0:
        return max(job.total_steps - job.step, 0) * elapsed / done
    return max(typical - elapsed, 0.0)


def snapshot(session: Session, settings: Settings, now: datetime) -> QueueView:
    """Read the queue state (the caller's transaction) and plan on it."""
    pools = capacity(session, settings, now)
    teams = {t.id: t for t in session.scalars(select(Team))}
    rows = list(
        session.scalars(
            select(Job)
            .options(load_only(*_SNAPSHOT_COLUMNS))
            .where(Job.status.in_([JobStatus.QUEUED, JobStatus.RUNNING]))
            .order_by(Job.pk)
        )
    )
    records = open_records(session)
    typical = {
        name: typical_duration_s(session, name, settings.default_job_duration_s) for name in pools
    }
    running: list[Running] = []
    queued: list[Queued] = []
    for job in rows:
        pool_typical = typical.get(job.pool, settings.default_job_duration_s)
        if job.status == JobStatus.RUNNING or job.admitted_at is not None:
            record = records.get(job.id)
            claimed = job.status == JobStatus.RUNNING
            running.append(
                Running(
                    id=job.id,
                    team=job.team_id,
                    pool=job.pool,
                    gpus=job.gpus,
                    remaining_s=_remaining_s(
                        job,
                        record.started_at if record and claimed else None,
                        record.start_step if record else 0,
                        now,
                        pool_typical,
                    ),
                    claimed=claimed,
                    admitted_seq=job.pk,
                )
            )
        else:
            queued.append(
                Queued(
                    id=job.id,
                    team=job.team_id,
                    pool=job.pool,
                    gpus=job.gpus,
                    priority=job.priority,
                    queued_at=_seconds(job.created_at),
                    seq=job.pk,
                    expected_s=pool_typical,
                    not_before=_seconds(job.not_before) if job.not_before else None,
                )
            )
    since = now - timedelta(seconds=settings.fair_share_window_s)
    state = QueueState(
        now=_seconds(now),
        pools=pools,
        teams={
            t.id: TeamPolicy(id=t.id, share=t.share, max_gpus=t.max_gpus) for t in teams.values()
        },
        running=running,
        queued=queued,
        usage=window_usage(session, since, now),
        charge_s=settings.fair_share_charge_s,
        aging_s=settings.priority_aging_s,
    )
    return QueueView(now, state, schedule(state), teams, {j.id: j for j in rows})


def queue_view(session: Session, settings: Settings) -> QueueView:
    return snapshot(session, settings, utcnow())


def estimated_finishes(view: QueueView) -> dict[str, float]:
    """When each running and queued job should finish (epoch seconds), by the plan's own
    expectations: a running (or admitted) job after its remaining time (its own pace, else
    the pool's typical run length), a queued one a typical run length after its estimated
    start. None for a queued job whose start cannot be estimated (no capacity), nor for a
    running one with no time left by either measure (past the typical length without a
    step to pace it, or at its last step): "now" would be a guess that stays "now"."""
    now = view.state.now
    finishes = {r.id: now + r.remaining_s for r in view.state.running if r.remaining_s > 0}
    for job in view.state.queued:
        slot = view.plan.slots.get(job.id)
        if slot is not None and slot.estimated_start is not None:
            finishes[job.id] = slot.estimated_start + job.expected_s
    return finishes


@dataclass(frozen=True)
class Places:
    """What the job objects show of one plan."""

    slots: dict[str, Slot]  # queued jobs' places (`Plan.slots`)
    finishes: dict[str, float]  # running and queued jobs' `estimated_finishes`

    def has(self, queued: Collection[str], running: Collection[str]) -> bool:
        return all(j in self.slots for j in queued) and all(j in self.finishes for j in running)


_NO_PLACES = Places({}, {})


class QueueSlots:
    """Queued jobs' places (`Plan.slots`) and queued and running jobs' estimated finishes
    for the job objects, so a status GET does not read the whole queue and plan it every
    time. A plan is reused while all of these hold:
    - it is younger than `ttl_s` (`Settings.queue_cache_s`; 0 plans every time): other
      processes' changes (a worker claiming or finishing, another API process) and the
      passing of time show within that;
    - no commit in this process has written jobs, teams, workers or usage records since it
      was read (`jobs.changes`): this process's submits, cancels and scheduler passes show at
      once;
    - every queued and running job asked about is in it (one submitted or started
      elsewhere is planned at once).
    One thread plans at a time; the others wait for its plan rather than plan too."""

    _TABLES = ("jobs", "teams", "workers", "usage_records")

    def __init__(
        self,
        settings: Settings,
        ttl_s: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.settings = settings
        self.ttl_s = settings.queue_cache_s if ttl_s is None else ttl_s
        self.clock = clock
        track_writes()
        self._lock = threading.Lock()
        self._plan: tuple[Places, float, int] | None = None  # places, read at, version

    def _fresh(self, queued: Collection[str], running: Collection[str]) -> Places | None:
        if self._plan is None:
            return None
        places, at, seen = self._plan
        if self.clock() - at >= self.ttl_s or seen != version(*self._TABLES):
            return None
        return places if places.has(queued, running) else None

    def places(
        self, session: Session, queued: Collection[str], running: Collection[str] = ()
    ) -> Places:
        """The plan's places, holding those of the queued jobs `queued` and the estimated
        finishes of `running` (read-only: the caller's transaction)."""
        if not queued and not running:
            return _NO_PLACES
        found = self._fresh(queued, running)
        if found is not None:
            return found
        with self._lock:
            found = self._fresh(queued, running)  # another thread may have planned meanwhile
            if found is not None:
                return found
            seen = version(*self._TABLES)  # before reading: a commit meanwhile makes it stale
            at = self.clock()
            view = queue_view(session, self.settings)
            places = Places(view.plan.slots, estimated_finishes(view))
            if self.ttl_s > 0:
                self._plan = (places, at, seen)
            return places

    def slots(self, session: Session, job_ids: Collection[str]) -> dict[str, Slot]:
        """The plan's slots, holding those of the queued jobs `job_ids`."""
        return self.places(session, job_ids).slots


def _lock(session: Session) -> None:
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _ADVISORY_LOCK})


def admit(session: Session, settings: Settings, now: datetime) -> list[Job]:
    """One pass in the caller's transaction: mark the admitted jobs; returns them (to send)."""
    _lock(session)
    view = snapshot(session, settings, now)
    admitted = []
    for job_id in view.plan.admit:
        job = view.jobs[job_id]
        job.admitted_at = now
        job.not_before = None
        Dispatcher.mark(job)
        admitted.append(job)
    return admitted


def run_scheduler(
    sessions: sessionmaker[Session], dispatcher: Dispatcher, settings: Settings
) -> int:
    """Admit what fits now and send those jobs' messages; returns how many were sent."""
    with transaction(sessions) as session:
        sends = [(job.id, job.pool) for job in admit(session, settings, utcnow())]
    for job_id, pool in sends:
        dispatcher.send(job_id, pool)
    if sends:
        log.info("jobs.admitted", extra={"count": len(sends)})
    return len(sends)


def hold_for_retry(job: Job, delay_s: float) -> None:
    """A job put back in the queue waits `delay_s` before the scheduler admits it again."""
    job.admitted_at = None
    job.not_before = utcnow() + timedelta(seconds=delay_s) if delay_s > 0 else None
