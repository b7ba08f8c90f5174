"""What users do to jobs: submit, cancel, pause, resume. The caller commits, then dispatches.

Submission validates everything that can be checked without the GPU, so a queued job only
fails for reasons the data could not reveal: the spec (`lco_spec.parse_job_spec`), the
model (a base model or a finished job's `fine_tuned_model` of the same team), the files
(same team, `processed`, of the method's dataset kind), the grader's item fields, and
everything the trainer resolves from the spec and the data (`lco_spec.train_config`).
A running job is stopped by the worker between steps: cancel and pause only record the
request here, and the supervisor moves the job to its final state.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from sqlalchemy.orm import Session

from jobs import transitions
from jobs.errors import InvalidRequest, NotFound
from jobs.events import add_event
from jobs.ids import new_id, utcnow
from jobs.model_store import is_base_model, model_shape
from jobs.models import Job, Team
from jobs.quotas import check_submission
from jobs.scope import TeamScope
from jobs.settings import Settings
from jobs.states import Action, JobStatus, check_action, check_transition
from jobs.storage import Storage
from lco_spec.job import JobSpec, parse_job_spec
from lco_spec.ranks import check_ranks
from lco_spec.step_budget import check_step
from lco_spec.train_config import hyperparameters_path, resolve_config

# How many training items the grader template is checked against at submission.
_GRADER_CHECK_ITEMS = 5


@dataclass(frozen=True)
class ResolvedModel:
    base_model: str
    source_checkpoint_id: str | None


def resolve_model(scope: TeamScope, name: str) -> ResolvedModel:
    """A registered base model (`jobs.model_store`: built-in or imported), the team's own
    fine-tuned model (not deleted), or one of its checkpoints' names. Nothing else: not a
    path, not another team's model (the same error whether or not that exists).

    The row it resolves from stays locked (PostgreSQL: FOR SHARE) until the caller commits,
    so a model removed or deleted meanwhile is either refused here or sees this job."""
    if is_base_model(scope.session, name, lock=True):
        return ResolvedModel(name, None)
    if name.startswith("ft:"):
        job = scope.fine_tuned_model(name, lock="share")
        if job is not None:
            assert job.final_checkpoint_id is not None
            return ResolvedModel(job.base_model, job.final_checkpoint_id)
        ckpt = scope.checkpoint_by_model_name(name)
        if ckpt is not None:
            parent = scope.job(ckpt.job_id)
            return ResolvedModel(parent.base_model, ckpt.id)
    raise InvalidRequest(
        f"The model `{name}` does not exist or is not available for fine-tuning",
        param="model",
        code="model_not_found",
    )


def model_name(base_model: str, team_name: str, suffix: str | None, job_id: str) -> str:
    """OpenAI's shape: `ft:<base>:<org>:<suffix>:<job id>`."""
    org = re.sub(r"[^A-Za-z0-9_-]", "-", team_name)[:40] or "team"
    return f"ft:{base_model}:{org}:{suffix or ''}:{job_id}"


DatasetKind = Literal["supervised", "reinforcement", "dpo"]


def method_kind(spec: JobSpec) -> DatasetKind:
    if spec.method.is_rl:
        return "reinforcement"
    return "dpo" if spec.method.type == "dpo" else "supervised"


def _check_file(
    scope: TeamScope, storage: Storage, file_id: str, param: str, kind: DatasetKind, max_errors: int
) -> tuple[Path, int]:
    """The stored file's path and number of examples, or InvalidRequest naming `param`. A
    file validated at upload as another kind is validated again as this one, read line by
    line (`lco_spec.datasets`), so a 512 MB file is never held in memory here."""
    try:
        row = scope.file(file_id, param=param)
    except NotFound:
        raise InvalidRequest(
            f"invalid {param}: {file_id} does not exist", param=param, code="file_not_found"
        ) from None
    if row.purpose != "fine-tune":
        raise InvalidRequest(f"{file_id} was not uploaded with purpose fine-tune", param=param)
    if row.status != "processed":
        raise InvalidRequest(
            f"invalid {param}: {file_id} failed validation: {row.status_details}",
            param=param,
            code="invalid_file",
        )
    path = storage.file_path(scope.team_id, file_id)
    n_examples = row.n_examples
    if row.kind != kind:
        from lco_spec.datasets import validate_dataset

        with path.open("rb") as stored:
            report = validate_dataset(stored, kind, max_errors=max_errors)
        if report.errors:
            first = report.errors[0]
            raise InvalidRequest(
                f"{file_id} is not a valid {kind} dataset: {first}",
                param=param,
                code="invalid_file",
            )
        n_examples = report.n_examples
    return path, n_examples


def _check_grader(spec: JobSpec, path: Path) -> None:
    from lco_spec.datasets import first_examples
    from lco_spec.graders import check_grader_against_item

    grader = spec.method.rl.grader
    with path.open("rb") as stored:
        items = first_examples(stored, _GRADER_CHECK_ITEMS)
    for item in items:
        check_grader_against_item(grader, item, "method.reinforcement.grader")


def submit_job(session: Session, scope: TeamScope, settings: Settings, body: Any) -> Job:
    """Validate a create request and add the job row (`queued`) with its first events.

    Raises SpecError or InvalidRequest (both 400 with `param`), or QuotaExceeded (429). The
    caller commits and then runs a scheduler pass (`jobs.queue.run_scheduler`).
    """
    spec = parse_job_spec(body)
    resolved = resolve_model(scope, spec.model)
    storage = Storage(settings)
    kind = method_kind(spec)
    train, n_train = _check_file(
        scope, storage, spec.training_file, "training_file", kind, settings.max_dataset_errors
    )
    if spec.validation_file:
        _check_file(
            scope,
            storage,
            spec.validation_file,
            "validation_file",
            kind,
            settings.max_dataset_errors,
        )
    if spec.method.is_rl:
        _check_grader(spec, train)
    # What the trainer resolves from the spec and the data (steps, defaults, combinations
    # of options) is checked now, so such a job never queues only to fail on a worker.
    shape = model_shape(session, settings, resolved.base_model)
    cfg = resolve_config(spec, n_train=n_train, n_params=shape.parameters if shape else None)
    # And what one step asks for: a job that no worker could run is refused now, naming the
    # field, instead of holding a worker at step 0.
    check_step(
        cfg,
        shape,
        max_step_tokens=settings.max_step_tokens,
        max_memory_bytes=settings.max_train_memory_bytes,
        prefix=hyperparameters_path(spec),
    )
    # What several ranks cannot run yet, before it waits for N GPUs only to fail there.
    check_ranks(cfg, spec.resources.gpus)
    # Only now, with the files read and checked (up to hundreds of MB), lock the team row:
    # it serialises one team's submissions so that its quotas hold, and is held only for
    # the quota check and the insert.
    team = session.get(Team, scope.team_id, with_for_update=True)
    assert team is not None
    pool = spec.pool or settings.default_pool
    priority = check_submission(
        session, team, settings, pool=pool, gpus=spec.resources.gpus, priority=spec.priority
    )
    if spec.seed is None:
        # A fixed seed makes a resumed attempt reproduce the interrupted one.
        spec = spec.model_copy(update={"seed": secrets.randbelow(2**31 - 1)})
    assert spec.seed is not None
    now = utcnow()
    job = Job(
        id=new_id("ftjob"),
        team_id=scope.team_id,
        created_at=now,
        updated_at=now,
        spec=spec.model_dump(mode="json"),
        model=spec.model,
        base_model=resolved.base_model,
        source_checkpoint_id=resolved.source_checkpoint_id,
        training_file=spec.training_file,
        validation_file=spec.validation_file,
        method_type=spec.method.type,
        seed=spec.seed,
        pool=pool,
        gpus=spec.resources.gpus,
        priority=priority,
        status=JobStatus.QUEUED,
        phase="waiting_for_capacity",
        max_attempts=settings.max_attempts,
        fencing_token=0,
        attempt=0,
        step=0,
        dispatch_count=0,
    )
    session.add(job)
    session.flush()
    add_event(session, job.id, f"Created fine-tuning job: {job.id}")
    add_event(session, job.id, "Validated training file: " + spec.training_file)
    add_event(session, job.id, "Fine-tuning job queued")
    if priority != spec.priority:
        add_event(session, job.id, f"Priority {spec.priority} lowered to {priority} by team policy")
    return job


def cancel_job(session: Session, scope: TeamScope, job_id: str) -> Job:
    """Cancel now if nothing runs it; if running, ask the worker to stop it between steps."""
    job = scope.job(job_id, for_update=True)
    if job.requested_action == Action.CANCEL:
        return job  # asked already
    check_action(job.status, job.requested_action, Action.CANCEL)
    if job.status == JobStatus.RUNNING:
        job.requested_action = "cancel"
        job.phase = "cancelling"
        add_event(session, job.id, "Cancellation requested")
    else:
        transitions.cancel(session, job)
    return job


def pause_job(session: Session, scope: TeamScope, job_id: str) -> Job:
    job = scope.job(job_id, for_update=True)
    if job.requested_action == Action.PAUSE:
        return job  # asked already
    check_action(job.status, job.requested_action, Action.PAUSE)
    if job.status == JobStatus.RUNNING:
        job.requested_action = "pause"
        job.phase = "pausing"
        add_event(session, job.id, "Pause requested")
    else:
        transitions.pause(session, job)
    return job


def resume_job(session: Session, scope: TeamScope, job_id: str) -> Job:
    """A paused job is queued again (and resumes from its newest checkpoint)."""
    job = scope.job(job_id, for_update=True)
    check_action(job.status, job.requested_action, Action.RESUME)
    if job.status == JobStatus.RUNNING:  # with a pause pending
        job.requested_action = None
        job.phase = "training"
        add_event(session, job.id, "Pause withdrawn")
        return job
    check_transition(job.status, JobStatus.QUEUED)
    job.status = JobStatus.QUEUED
    job.phase = "waiting_for_capacity"
    job.requested_action = None
    job.not_before = None
    job.updated_at = utcnow()
    add_event(session, job.id, "Fine-tuning job resumed")
    return job


def team_name(session: Session, team_id: str) -> str:
    team = session.get(Team, team_id)
    return team.name if team else "team"
