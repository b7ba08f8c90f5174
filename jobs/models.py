"""SQLAlchemy 2 models: the schema that `migrations/` creates (a test checks they agree).

Every user-visible row carries `team_id`; queries on them go through `jobs.scope.TeamScope`
(base models, `models`, are every team's: `jobs.model_store` reads them).
Listed resources have an integer `pk` (insertion order, the pagination key) beside their
public string `id`. The job row is the source of truth for a job: state, lease, fencing
token and attempt count live here, Celery only carries "look at job X".
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy import event as sa_event
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from jobs.ids import utcnow


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


# Deterministic constraint names, so migrations can address them on every backend.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime(),
        dict[str, Any]: JSON(),
    }


class Team(Base):
    __tablename__ = "teams"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    # Sharing the GPU pools (see jobs.scheduling): a weight for fair share, limits (None is
    # unlimited), the highest priority its jobs may ask for, and what happens to a
    # submission over the GPU quota: `queue` (it waits) or `reject` (429).
    share: Mapped[float] = mapped_column(Float, default=1.0)
    max_gpus: Mapped[int | None] = mapped_column(Integer)
    max_queued_jobs: Mapped[int | None] = mapped_column(Integer)
    max_priority: Mapped[str] = mapped_column(String(8), default="high")
    quota_policy: Mapped[str] = mapped_column(String(8), default="queue")


class ApiKey(Base):
    """A bearer key: only its sha256 is stored; `prefix` finds the row without the secret."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    team_id: Mapped[str] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), index=True)
    prefix: Mapped[str] = mapped_column(String(32), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64))
    name: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None]
    # Admin keys manage teams, keys and quotas (`/v1/admin/...`).
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)


class File(Base):
    __tablename__ = "files"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(40), unique=True)
    team_id: Mapped[str] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), index=True)
    filename: Mapped[str] = mapped_column(String(256))
    purpose: Mapped[str] = mapped_column(String(32))
    bytes: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))  # uploaded | processed | error
    status_details: Mapped[str | None] = mapped_column(Text)
    kind: Mapped[str | None] = mapped_column(String(32))  # detected dataset kind
    n_examples: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_status_pool", "status", "pool"),)

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(40), unique=True)
    team_id: Mapped[str] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]

    # What to run: the normalised spec (seed filled in) and where the weights come from.
    spec: Mapped[dict[str, Any]]
    model: Mapped[str] = mapped_column(String(256))
    base_model: Mapped[str] = mapped_column(String(256))
    source_checkpoint_id: Mapped[str | None] = mapped_column(String(40))
    training_file: Mapped[str] = mapped_column(String(40))
    validation_file: Mapped[str | None] = mapped_column(String(40))
    method_type: Mapped[str] = mapped_column(String(32))
    seed: Mapped[int] = mapped_column(Integer)
    pool: Mapped[str] = mapped_column(String(64))
    gpus: Mapped[int] = mapped_column(Integer, default=1)
    priority: Mapped[str] = mapped_column(String(8), default="normal")

    # Outcome. `status_since` is kept by the listener below (and by `claim`).
    status: Mapped[str] = mapped_column(String(32))
    status_since: Mapped[datetime | None]
    phase: Mapped[str | None] = mapped_column(String(32))
    # What the run says it is doing in `phase` (its slow one-time phases), for people.
    phase_message: Mapped[str | None] = mapped_column(Text)
    fine_tuned_model: Mapped[str | None] = mapped_column(String(512), unique=True)
    # Set when the team deletes its fine-tuned model (`DELETE /v1/models/{model}`): the name
    # stops resolving; the job, its checkpoints and their files stay.
    fine_tuned_model_deleted_at: Mapped[datetime | None]
    final_checkpoint_id: Mapped[str | None] = mapped_column(String(40))
    error: Mapped[dict[str, Any] | None]
    trained_tokens: Mapped[int | None] = mapped_column(Integer)
    step: Mapped[int] = mapped_column(Integer, default=0)
    total_steps: Mapped[int | None] = mapped_column(Integer)

    # Control: what the user asked for while the job runs (cancel | pause).
    requested_action: Mapped[str | None] = mapped_column(String(16))

    # Lease and fencing: the worker that holds the lease writes with its token only.
    lease_owner: Mapped[str | None] = mapped_column(String(256))
    lease_expires_at: Mapped[datetime | None]
    fencing_token: Mapped[int] = mapped_column(Integer, default=0)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    not_before: Mapped[datetime | None]
    # Set when the scheduler admits the queued job into its pool; only then may a worker
    # claim it. Cleared whenever the job leaves `running` or is queued again.
    admitted_at: Mapped[datetime | None]
    dispatched_at: Mapped[datetime | None]
    dispatch_count: Mapped[int] = mapped_column(Integer, default=0)


@sa_event.listens_for(Job.phase, "set")
def _phase_changed(target: Job, value: str | None, oldvalue: object, _initiator: object) -> None:
    # A message belongs to the phase the run reported it with (`leases.record_phase` writes
    # both); any other phase change (pausing, requeued, finished) drops it.
    if value != oldvalue:
        target.phase_message = None


@sa_event.listens_for(Job.status, "set")
def _status_changed(target: Job, value: str, oldvalue: object, _initiator: object) -> None:
    # One place keeps `status_since` (status_details.since) for every ORM status write.
    if value != oldvalue:
        target.status_since = utcnow()


class RegisteredModel(Base):
    """A base model an operator imported (`lco models import`): its entry in the model store
    (`jobs.model_store`). The built-in lco-tiny has no row; fine-tuned models are jobs'."""

    __tablename__ = "models"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # the name jobs give
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    owned_by: Mapped[str] = mapped_column(String(64), default="system")
    # Relative to the data dir ("models/<id>"), so the data dir can move.
    path: Mapped[str] = mapped_column(String(512))
    # What lco_import.json says (lco_core.model_import.ImportedModel).
    source: Mapped[str] = mapped_column(Text)
    source_format: Mapped[str] = mapped_column(String(16))  # hf_dir | gguf
    source_sha256: Mapped[str] = mapped_column(String(64))
    architecture: Mapped[str] = mapped_column(String(128))
    model_type: Mapped[str] = mapped_column(String(64))
    parameters: Mapped[int] = mapped_column(BigInteger)  # 7B does not fit a 32-bit INTEGER
    dtype: Mapped[str] = mapped_column(String(16))


class JobEvent(Base):
    __tablename__ = "job_events"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(40), unique=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    level: Mapped[str] = mapped_column(String(8))
    type: Mapped[str] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any] | None]


class JobMetric(Base):
    __tablename__ = "job_metrics"
    __table_args__ = (UniqueConstraint("job_id", "step"),)

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    step: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    metrics: Mapped[dict[str, Any]]


class Checkpoint(Base):
    __tablename__ = "checkpoints"
    __table_args__ = (UniqueConstraint("job_id", "step_number"),)

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(40), unique=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    team_id: Mapped[str] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), index=True)
    step_number: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    metrics: Mapped[dict[str, Any]]
    # Relative to the job's output dir; resolved server-side (never user text).
    rel_path: Mapped[str] = mapped_column(String(512))
    fine_tuned_model_checkpoint: Mapped[str] = mapped_column(String(512), unique=True)


class Worker(Base):
    """A registered worker process: its heartbeats are the pools' capacity."""

    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(256), primary_key=True)  # the lease-owner name
    pool: Mapped[str] = mapped_column(String(64), index=True)
    gpus: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(default=utcnow)


class UsageRecord(Base):
    """One attempt's hold on GPUs (open while it runs): the fair-share usage and ETAs."""

    __tablename__ = "usage_records"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    team_id: Mapped[str] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), index=True)
    pool: Mapped[str] = mapped_column(String(64))
    gpus: Mapped[int] = mapped_column(Integer)
    start_step: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[datetime] = mapped_column(index=True)
    ended_at: Mapped[datetime | None]


class IdempotencyRecord(Base):
    """The first response to a POST carrying `Idempotency-Key`, replayed to its retries."""

    __tablename__ = "idempotency_records"
    __table_args__ = (UniqueConstraint("principal", "key"),)

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    # sha256 of the bearer key: each key has its own namespace of idempotency keys.
    principal: Mapped[str] = mapped_column(String(64))
    key: Mapped[str] = mapped_column(String(255))
    request_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    # None while the first request is still being handled.
    status_code: Mapped[int | None] = mapped_column(Integer)
    content_type: Mapped[str | None] = mapped_column(String(128))
    body: Mapped[str | None] = mapped_column(Text)
