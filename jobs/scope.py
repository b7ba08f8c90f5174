"""Every team-scoped read in one place: the API builds a TeamScope per request and asks it.

An object of another team is indistinguishable from a missing one (NotFound -> 404).
Lists are cursor pages, newest first, keyed by the insertion-ordered `pk`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

from sqlalchemy import ColumnElement, Row, Select, bindparam, exists, func, select
from sqlalchemy.orm import Session

from jobs.errors import NotFound
from jobs.events import SAMPLES_EVENT
from jobs.models import Checkpoint, File, Job, JobEvent, JobMetric
from jobs.results import results_job_id
from jobs.states import TERMINAL, JobStatus

R = TypeVar("R")


@dataclass
class Page(Generic[R]):
    items: Sequence[R]
    has_more: bool


def _page(
    session: Session,
    stmt: Select[Any],
    model: Any,
    after_pk: int | None,
    limit: int,
    ascending: bool = False,
) -> Page[Any]:
    if after_pk is not None:
        stmt = stmt.where(model.pk > after_pk if ascending else model.pk < after_pk)
    order = model.pk.asc() if ascending else model.pk.desc()
    rows = list(session.scalars(stmt.order_by(order).limit(limit + 1)))
    return Page(items=rows[:limit], has_more=len(rows) > limit)


# Job lookups serve every status GET (clients poll it), so their statements are built once:
# SQLAlchemy then also reuses the cache key instead of computing it per query. A status read
# takes the row's values (`job_row`): no ORM object to load and track, ~30% less work.
_JOB = select(Job).where(Job.id == bindparam("job_id"), Job.team_id == bindparam("team_id"))
_JOB_FOR_UPDATE = _JOB.with_for_update()
_JOB_ROW = select(Job.__table__).where(
    Job.__table__.c.id == bindparam("job_id"), Job.__table__.c.team_id == bindparam("team_id")
)


@dataclass(frozen=True)
class MetadataFilter:
    """OpenAI's list filter: `metadata[k]=v` pairs, all of which a job's metadata must hold
    (`pairs`), or `metadata=null`: only jobs created without metadata (`null`)."""

    pairs: dict[str, str]
    null: bool = False

    def conditions(self, dialect: str) -> list[ColumnElement[bool]]:
        """WHERE clauses on `Job.spec["metadata"]` for `dialect` (sqlite or postgresql)."""
        if self.null:
            # A JSON null and a missing key both read as SQL NULL on either database.
            return [Job.spec["metadata"].as_string().is_(None)]
        return [self._has(dialect, key, value) for key, value in self.pairs.items()]

    @staticmethod
    def _has(dialect: str, key: str, value: str) -> ColumnElement[bool]:
        if dialect == "postgresql":
            # `spec -> 'metadata' ->> :key`: the key is a bound parameter, so any key works.
            return Job.spec["metadata"][key].as_string() == value
        # SQLite's JSON paths cannot spell a key holding '"'; json_each compares keys as values.
        entries = func.json_each(Job.spec, "$.metadata").table_valued("key", "value")
        return exists().select_from(entries).where(entries.c.key == key, entries.c.value == value)


def _no_job(job_id: str) -> NotFound:
    return NotFound(f"No such fine-tuning job: {job_id}", code="job_not_found")


class TeamScope:
    """Reads (and lookups before writes) for one team; the caller owns the transaction."""

    def __init__(self, session: Session, team_id: str):
        self.session = session
        self.team_id = team_id

    # Files
    def file(self, file_id: str, *, param: str | None = None) -> File:
        row = self.session.scalar(
            select(File).where(File.id == file_id, File.team_id == self.team_id)
        )
        if row is None:
            raise NotFound(f"No such File object: {file_id}", param=param, code="file_not_found")
        return row

    def files(
        self,
        *,
        after: str | None,
        limit: int,
        purpose: str | None = None,
        ascending: bool = False,
    ) -> Page[File]:
        stmt = select(File).where(File.team_id == self.team_id)
        if purpose:
            stmt = stmt.where(File.purpose == purpose)
        after_pk = self.file(after, param="after").pk if after else None
        return _page(self.session, stmt, File, after_pk, limit, ascending)

    def results_job(self, file_id: str) -> Job:
        """The succeeded job whose results file `file_id` is (`jobs.results`): a job's results
        file exists once it succeeded, as OpenAI lists it in `result_files`; any other id,
        and another team's job, is a missing file."""
        job_id = results_job_id(file_id)
        job = None
        if job_id is not None:
            job = self.session.scalar(_JOB, {"job_id": job_id, "team_id": self.team_id})
        if job is None or job.status != JobStatus.SUCCEEDED:
            raise NotFound(f"No such File object: {file_id}", code="file_not_found")
        return job

    def active_jobs_using(self, file_id: str) -> int:
        active = (JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.PAUSED)
        stmt = select(Job.id).where(
            Job.team_id == self.team_id,
            Job.status.in_([s.value for s in active]),
            (Job.training_file == file_id) | (Job.validation_file == file_id),
        )
        return len(list(self.session.scalars(stmt)))

    # Jobs
    def job(self, job_id: str, *, for_update: bool = False) -> Job:
        stmt = _JOB_FOR_UPDATE if for_update else _JOB
        row = self.session.scalar(stmt, {"job_id": job_id, "team_id": self.team_id})
        if row is None:
            raise _no_job(job_id)
        return row

    def job_row(self, job_id: str) -> Row[Any]:
        """The job's columns as a read-only row (the same names as `Job`'s attributes)."""
        row = self.session.execute(_JOB_ROW, {"job_id": job_id, "team_id": self.team_id}).first()
        if row is None:
            raise _no_job(job_id)
        return row

    def jobs(
        self, *, after: str | None, limit: int, metadata: MetadataFilter | None = None
    ) -> Page[Job]:
        """A page of the team's jobs; `metadata` keeps only those it matches."""
        stmt = select(Job).where(Job.team_id == self.team_id)
        if metadata is not None:
            dialect = self.session.get_bind().dialect.name
            stmt = stmt.where(*metadata.conditions(dialect))
        after_pk = self.job(after).pk if after else None
        return _page(self.session, stmt, Job, after_pk, limit)

    # Fine-tuned models: a succeeded job's `fine_tuned_model`, until the team deletes it.
    def _fine_tuned(self) -> Select[Job]:
        return select(Job).where(
            Job.team_id == self.team_id,
            Job.status == JobStatus.SUCCEEDED,
            Job.fine_tuned_model.is_not(None),
            Job.final_checkpoint_id.is_not(None),
            Job.fine_tuned_model_deleted_at.is_(None),
        )

    def fine_tuned_models(self) -> Sequence[Job]:
        return self.session.scalars(self._fine_tuned().order_by(Job.pk)).all()

    def fine_tuned_model(
        self, name: str, *, lock: Literal["share", "update"] | None = None
    ) -> Job | None:
        """The job whose model `name` is, if it is this team's and not deleted. `lock`
        (PostgreSQL): "share" while a job is submitted from it, "update" to delete it, so
        neither misses the other."""
        stmt = self._fine_tuned().where(Job.fine_tuned_model == name)
        if lock is not None:
            stmt = stmt.with_for_update(read=lock == "share")
        return self.session.scalar(stmt)

    def unfinished_jobs_on_model(self, name: str) -> list[str]:
        """Ids of this team's unfinished jobs that train from model `name`."""
        stmt = select(Job.id).where(
            Job.team_id == self.team_id,
            Job.model == name,
            Job.status.not_in([s.value for s in TERMINAL]),
        )
        return list(self.session.scalars(stmt.order_by(Job.pk)))

    # Events, checkpoints, metrics (of a job already looked up through this scope)
    def events(self, job: Job, *, after: str | None, limit: int) -> Page[JobEvent]:
        stmt = select(JobEvent).where(JobEvent.job_id == job.id, JobEvent.type != SAMPLES_EVENT)
        after_pk = None
        if after:
            row = self.session.scalar(stmt.where(JobEvent.id == after))
            if row is None:
                raise NotFound(f"No such event: {after}", param="after")
            after_pk = row.pk
        return _page(self.session, stmt, JobEvent, after_pk, limit)

    def samples(self, job: Job, *, after: str | None, limit: int) -> Page[JobEvent]:
        stmt = select(JobEvent).where(JobEvent.job_id == job.id, JobEvent.type == SAMPLES_EVENT)
        after_pk = None
        if after:
            row = self.session.scalar(stmt.where(JobEvent.id == after))
            if row is None:
                raise NotFound(f"No such samples: {after}", param="after")
            after_pk = row.pk
        return _page(self.session, stmt, JobEvent, after_pk, limit)

    # The live stream: rows of `job` written after the last ones it sent, oldest first.
    def events_since(self, job: Job, after_pk: int | None, limit: int) -> Page[JobEvent]:
        stmt = select(JobEvent).where(JobEvent.job_id == job.id)
        return _page(self.session, stmt, JobEvent, after_pk, limit, ascending=True)

    def metrics_since(self, job: Job, after_pk: int | None, limit: int) -> Page[JobMetric]:
        stmt = select(JobMetric).where(JobMetric.job_id == job.id)
        return _page(self.session, stmt, JobMetric, after_pk, limit, ascending=True)

    def checkpoints_since(self, job: Job, after_pk: int | None, limit: int) -> Page[Checkpoint]:
        stmt = select(Checkpoint).where(Checkpoint.job_id == job.id)
        return _page(self.session, stmt, Checkpoint, after_pk, limit, ascending=True)

    def checkpoints(self, job: Job, *, after: str | None, limit: int) -> Page[Checkpoint]:
        stmt = select(Checkpoint).where(Checkpoint.job_id == job.id)
        after_pk = self.checkpoint(job, after, param="after").pk if after else None
        return _page(self.session, stmt, Checkpoint, after_pk, limit)

    def checkpoint(self, job: Job, checkpoint_id: str, *, param: str | None = None) -> Checkpoint:
        row = self.session.scalar(
            select(Checkpoint).where(
                Checkpoint.id == checkpoint_id,
                Checkpoint.job_id == job.id,
                Checkpoint.team_id == self.team_id,
            )
        )
        if row is None:
            raise NotFound(f"No such checkpoint: {checkpoint_id}", param=param)
        return row

    def checkpoint_by_model_name(self, name: str) -> Checkpoint | None:
        return self.session.scalar(
            select(Checkpoint).where(
                Checkpoint.team_id == self.team_id, Checkpoint.fine_tuned_model_checkpoint == name
            )
        )

    def checkpoint_by_id(self, checkpoint_id: str) -> Checkpoint | None:
        return self.session.scalar(
            select(Checkpoint).where(
                Checkpoint.team_id == self.team_id, Checkpoint.id == checkpoint_id
            )
        )

    def metrics(
        self, job: Job, *, from_step: int | None, to_step: int | None, limit: int
    ) -> Page[JobMetric]:
        stmt = select(JobMetric).where(JobMetric.job_id == job.id)
        if from_step is not None:
            stmt = stmt.where(JobMetric.step >= from_step)
        if to_step is not None:
            stmt = stmt.where(JobMetric.step <= to_step)
        rows = list(self.session.scalars(stmt.order_by(JobMetric.step).limit(limit + 1)))
        return Page(items=rows[:limit], has_more=len(rows) > limit)
