"""Fine-tuning job, event, checkpoint and metric objects in OpenAI's shapes (plus extensions).

The request body of `POST /v1/fine_tuning/jobs` is `lco_spec.job.JobSpec` (`JobCreate`):
the route validates it with `parse_job_spec` so the API and `lco train` share one
validator and one set of error names.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import Request
from pydantic import BaseModel
from sqlalchemy import Row

from api.schemas.models import AdapterPublic
from jobs.errors import InvalidRequest
from jobs.ids import epoch
from jobs.model_store import job_lora
from jobs.models import Checkpoint, Job, JobEvent, JobMetric
from jobs.results import results_file_id, with_openai_metrics
from jobs.scheduling import Slot
from jobs.scope import MetadataFilter
from jobs.states import JobStatus, allowed_actions
from lco_spec.job import METADATA_MAX_PAIRS, JobSpec

JobCreate = JobSpec


def metadata_filter(request: Request) -> MetadataFilter | None:
    """`GET /v1/fine_tuning/jobs`' metadata filter, as OpenAI takes it: `metadata[k]=v`
    pairs (the SDK's `jobs.list(metadata={...})`; `metadata[k]=` asks for an empty value)
    or the literal `metadata=null`; neither: no filter. FastAPI has no deep-object query
    parameters, so this reads the raw query."""
    pairs: dict[str, str] = {}
    null = False
    for name, value in request.query_params.multi_items():
        if name == "metadata":
            if value != "null":
                raise InvalidRequest(
                    "metadata filters are metadata[key]=value, or metadata=null",
                    param="metadata",
                )
            null = True
        elif name.startswith("metadata["):
            if not name.endswith("]") or len(name) == len("metadata[]"):
                raise InvalidRequest(f"invalid metadata filter: {name}", param="metadata")
            key = name[len("metadata[") : -1]
            if pairs.get(key, value) != value:
                raise InvalidRequest(f"{name} is given twice", param=name)
            pairs[key] = value
    if null and pairs:
        raise InvalidRequest(
            "metadata=null cannot be combined with metadata[key]", param="metadata"
        )
    if len(pairs) > METADATA_MAX_PAIRS:
        # No job can match more pairs than metadata holds; this also bounds the query.
        raise InvalidRequest(
            f"at most {METADATA_MAX_PAIRS} metadata filters (metadata holds at most that many)",
            param="metadata",
        )
    if null:
        return MetadataFilter({}, null=True)
    return MetadataFilter(pairs) if pairs else None


class JobError(BaseModel):
    code: str
    message: str
    param: str | None = None


class Hyperparameters(BaseModel):
    batch_size: int | Literal["auto"] | None = None
    learning_rate_multiplier: float | Literal["auto"] | None = None
    n_epochs: int | Literal["auto"] | None = None


class StatusDetails(BaseModel):
    phase: str | None = None
    # Queued: waiting_for_capacity | waiting_for_quota | waiting_for_retry |
    # waiting_for_larger_worker (more GPUs than any live worker has) |
    # waiting_for_worker (admitted); running: the pending user request (cancel | pause).
    reason: str | None = None
    since: int | None = None  # when the job entered its current status
    # Running: what the run is doing in its phase ("loading lco-tiny onto cpu"); queued
    # for a larger worker: how many GPUs it asks for and the largest worker has.
    message: str | None = None


class QueuePlace(BaseModel):
    """Where a queued job stands in its pool (see jobs.scheduling)."""

    position: int  # 1-based
    ahead: int  # queued jobs before it in the pool
    estimated_start_at: int | None = None  # None: no capacity to estimate from


class Resources(BaseModel):
    gpus: int


class Progress(BaseModel):
    step: int
    total_steps: int | None = None
    percent: float | None = None


class JobPublic(BaseModel):
    id: str
    object: Literal["fine_tuning.job"] = "fine_tuning.job"
    created_at: int
    finished_at: int | None = None
    model: str
    fine_tuned_model: str | None = None
    organization_id: str
    status: str
    error: JobError | None = None
    training_file: str
    validation_file: str | None = None
    seed: int
    trained_tokens: int | None = None
    result_files: list[str] = []
    # Unix seconds, while queued or running: the scheduler's estimate (`jobs.queue`).
    estimated_finish: int | None = None
    metadata: dict[str, str] | None = None
    method: dict[str, Any]
    hyperparameters: Hyperparameters
    integrations: list[Any] = []
    user_provided_suffix: str | None = None
    # Extensions (additive).
    status_details: StatusDetails
    progress: Progress
    attempts: int
    priority: str = "normal"
    pool: str | None = None
    resources: Resources | None = None
    queue: QueuePlace | None = None  # only while queued, when the caller passes the plan
    # What the caller may POST now: cancel | pause | resume (`jobs.states.allowed_actions`).
    actions: list[str] = []
    # A LoRA job: its fine-tuned model is an adapter on `model` (null: a full fine-tune).
    adapter: AdapterPublic | None = None

    @classmethod
    def from_row(
        cls, job: Job | Row[Any], slot: Slot | None = None, finish: float | None = None
    ) -> JobPublic:
        """The job object, from the ORM object or a row of its columns (`TeamScope.job_row`);
        `slot` and `finish` (from `jobs.queue.QueueSlots`) fill in a queued job's place and
        a queued or running job's estimated finish."""
        spec = job.spec
        method = dict(spec.get("method") or {"type": "supervised"})
        mtype = method.get("type", "supervised")
        block = method.get(mtype) or {}
        # Only the block of the chosen type, as OpenAI returns it.
        method = {"type": mtype, mtype: block or {"hyperparameters": {}}}
        hp = (block or {}).get("hyperparameters") or {}
        total = job.total_steps
        return cls(
            id=job.id,
            created_at=epoch(job.created_at) or 0,
            finished_at=epoch(job.finished_at),
            model=job.model,
            fine_tuned_model=job.fine_tuned_model,
            organization_id=job.team_id,
            status=job.status,
            error=JobError(**job.error) if job.error else None,
            training_file=job.training_file,
            validation_file=job.validation_file,
            seed=job.seed,
            trained_tokens=job.trained_tokens,
            # As OpenAI: the results file once the job succeeded (`api.result_files`).
            result_files=[results_file_id(job.id)] if job.status == JobStatus.SUCCEEDED else [],
            estimated_finish=(
                int(finish)
                if finish is not None and job.status in (JobStatus.QUEUED, JobStatus.RUNNING)
                else None
            ),
            metadata=spec.get("metadata"),
            integrations=list(spec.get("integrations") or []),
            method=method,
            hyperparameters=Hyperparameters(
                batch_size=hp.get("batch_size", "auto"),
                learning_rate_multiplier=hp.get("learning_rate_multiplier", "auto"),
                n_epochs=hp.get("n_epochs", "auto"),
            ),
            user_provided_suffix=spec.get("suffix"),
            status_details=_status_details(job, slot),
            progress=Progress(
                step=job.step,
                total_steps=total,
                percent=round(100.0 * job.step / total, 1) if total else None,
            ),
            attempts=job.attempt,
            priority=job.priority,
            pool=job.pool,
            resources=Resources(gpus=job.gpus),
            adapter=AdapterPublic(base_model=job.model) if job_lora(spec) is not None else None,
            queue=(
                QueuePlace(
                    position=slot.position,
                    ahead=slot.ahead,
                    estimated_start_at=(
                        None if slot.estimated_start is None else int(slot.estimated_start)
                    ),
                )
                if slot is not None and job.status == "queued"
                else None
            ),
            actions=allowed_actions(job.status, job.requested_action),
        )


def _status_details(job: Job | Row[Any], slot: Slot | None) -> StatusDetails:
    since = epoch(job.status_since)
    if job.status == "queued":
        phase = "requeued" if job.phase == "requeued" else "queued"
        return StatusDetails(
            phase=phase,
            reason=slot.reason if slot else None,
            since=since,
            message=slot.message if slot else None,
        )
    if job.status == "running":
        return StatusDetails(
            phase=job.phase, reason=job.requested_action, since=since, message=job.phase_message
        )
    # Out of the queue and not running, the column may still hold the last attempt's phase
    # (a job whose worker was lost keeps it): nothing is in progress, so there is none.
    return StatusDetails(since=since)


class JobsPublic(BaseModel):
    object: Literal["list"] = "list"
    data: list[JobPublic]
    has_more: bool


class JobEventPublic(BaseModel):
    id: str
    object: Literal["fine_tuning.job.event"] = "fine_tuning.job.event"
    created_at: int
    level: str
    message: str
    type: str
    data: dict[str, Any] | None = None

    @classmethod
    def from_row(cls, row: JobEvent) -> JobEventPublic:
        return cls(
            id=row.id,
            created_at=epoch(row.created_at) or 0,
            level=row.level,
            message=row.message,
            type=row.type,
            data=row.data,
        )


class JobEventsPublic(BaseModel):
    object: Literal["list"] = "list"
    data: list[JobEventPublic]
    has_more: bool


class CheckpointPublic(BaseModel):
    id: str
    object: Literal["fine_tuning.job.checkpoint"] = "fine_tuning.job.checkpoint"
    created_at: int
    fine_tuned_model_checkpoint: str
    fine_tuning_job_id: str
    step_number: int
    # OpenAI's names (step, train_loss, valid_loss, ...; null where we have no value of that
    # meaning) beside ours (loss, eval_loss, grad_norm, ...): `jobs.results`.
    metrics: dict[str, Any]

    @classmethod
    def from_row(cls, row: Checkpoint, job: Job | Row[Any]) -> CheckpointPublic:
        """The checkpoint of `job` (whose validation file decides what `valid_*` may show)."""
        return cls(
            id=row.id,
            created_at=epoch(row.created_at) or 0,
            fine_tuned_model_checkpoint=row.fine_tuned_model_checkpoint,
            fine_tuning_job_id=row.job_id,
            step_number=row.step_number,
            metrics=with_openai_metrics(
                row.metrics or {},
                validated=job.validation_file is not None,
                step=row.step_number,
            ),
        )


class CheckpointsPublic(BaseModel):
    object: Literal["list"] = "list"
    data: list[CheckpointPublic]
    has_more: bool
    first_id: str | None = None
    last_id: str | None = None


class MetricPointPublic(BaseModel):
    step: int
    created_at: int
    metrics: dict[str, Any]

    @classmethod
    def from_row(cls, row: JobMetric) -> MetricPointPublic:
        return cls(step=row.step, created_at=epoch(row.created_at) or 0, metrics=row.metrics)


class MetricsPublic(BaseModel):
    object: Literal["list"] = "list"
    data: list[MetricPointPublic]
    has_more: bool
