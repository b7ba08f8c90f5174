"""What the supervisor needs from a claimed job's row, read once after the claim: its files,
output dir, where its weights come from and the name its fine-tuned model will have."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select

from jobs.leases import earlier_run_s
from jobs.lifecycle import model_name, team_name
from jobs.model_store import base_model_path
from jobs.models import Checkpoint, Job
from worker.context import WorkerContext


@dataclass(frozen=True)
class JobInfo:
    """What the supervisor needs from the job row, read once after the claim."""

    job_id: str
    team_id: str
    pool: str
    spec: dict[str, Any]
    training_file: Path
    validation_file: Path | None
    output_dir: Path
    model_path: str | None
    model_name: str
    earlier_run_s: float = 0.0  # what the job's earlier attempts ran (max_job_runtime_s)
    gpus: int = 1  # what the job asked for (`resources.gpus`): its ranks on a GPU worker


def load_job_info(ctx: WorkerContext, job_id: str) -> JobInfo:
    storage = ctx.storage
    with ctx.sessions() as session:
        job = session.scalar(select(Job).where(Job.id == job_id))
        assert job is not None
        # Where the weights come from: a fine-tuned model's checkpoint, or an imported base
        # model's store entry; None only for a built-in, which the child resolves by name.
        model_path = None
        if job.source_checkpoint_id:
            ckpt = session.scalar(
                select(Checkpoint).where(Checkpoint.id == job.source_checkpoint_id)
            )
            if ckpt is not None:
                model_path = str(storage.resolve_in_job(job.team_id, ckpt.job_id, ckpt.rel_path))
        else:
            entry = base_model_path(session, ctx.settings, job.base_model)
            model_path = None if entry is None else str(entry)
        return JobInfo(
            job_id=job.id,
            team_id=job.team_id,
            pool=job.pool,
            spec=job.spec,
            training_file=storage.file_path(job.team_id, job.training_file),
            validation_file=(
                storage.file_path(job.team_id, job.validation_file) if job.validation_file else None
            ),
            output_dir=storage.job_dir(job.team_id, job.id),
            model_path=model_path,
            gpus=job.gpus,
            model_name=model_name(
                job.base_model, team_name(session, job.team_id), job.spec.get("suffix"), job.id
            ),
            earlier_run_s=earlier_run_s(session, job.id),
        )
