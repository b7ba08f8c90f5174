"""The reliability invariants I1-I7 (docs/reliability.md), checked over a service's database
and storage directory after a test:

    check_invariants(settings)              # AssertionError listing every violation

It only reads (the database through its own engine, the job dirs, /proc), so any test that
runs real jobs can end with it. The history it checks is the job's event log: state changes
carry `data.status`, claims also `data.fencing_token`, refused stale writes
`data.refused_write`, and the metric events keep every step's values as first reported,
so a rollback and the redone steps stay visible after the metric rows were replaced.

- I1 each job is terminal, by exactly one terminal state change, the last one; no lease left.
- I2 claims have strictly increasing fencing tokens and each is released before the next.
- I3 every checkpoint listed (rows) or published (`step-N` dirs), and every checkpoint a run
     resumed from, verifies against its manifest (sizes and sha256).
- I4 metric rows per job are strictly increasing; a step reported again was preceded by a
     recorded rollback to before it.
- I5 a redone step reproduces the first report of that step (loss within tolerance).
- I6 no training process of a finished job is alive; no temp dirs in its checkpoint dir.
- I7 refused writes carry a token older than the job's; metric and checkpoint writes all
     fall inside an ownership window (between a claim and its release).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from itertools import pairwise
from pathlib import Path
from typing import Any

from sqlalchemy import select

from jobs.db import make_engine, make_session_factory
from jobs.leases import REFUSED_WRITE
from jobs.models import Checkpoint, Job, JobEvent, JobMetric
from jobs.settings import Settings
from jobs.states import JobStatus, is_terminal
from jobs.storage import Storage
from lco_core.checkpoint import verify_checkpoint

RESUMED = "resumed from checkpoint at step"
ROLLED_BACK = "Rolled back metrics"
_STATUSES = {s.value for s in JobStatus}


def training_pids(data_dir: Path, job_id: str | None = None) -> list[int]:
    """Live training processes (`worker.child`) whose run config lies under `data_dir` (and
    in `job_id`'s dir, if given), found from /proc: they run in their own sessions."""
    needle = str(data_dir.resolve()) + "/"
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state == "Z":  # exited; its supervisor has not reaped it yet
            continue
        args = [a.decode(errors="replace") for a in argv]
        if "worker.child" not in args or "--config" not in args:
            continue
        config = args[args.index("--config") + 1]
        if config.startswith(needle) and (job_id is None or f"/{job_id}/" in config):
            pids.append(int(entry.name))
    return pids


def _status(event: JobEvent) -> str | None:
    data = event.data if isinstance(event.data, dict) else {}
    status = data.get("status")
    return status if isinstance(status, str) and status in _STATUSES else None


def _metric_step(event: JobEvent) -> int | None:
    data = event.data if isinstance(event.data, dict) else {}
    if event.type == "metrics" and event.message.startswith("Step ") and "step" in data:
        return int(data["step"])
    return None


def _close(a: Any, b: Any, rtol: float) -> bool:
    if not isinstance(a, int | float) or not isinstance(b, int | float):
        return True  # nothing comparable was reported
    return math.isclose(a, b, rel_tol=rtol, abs_tol=rtol)


def check_job(
    job: Job,
    events: list[JobEvent],
    metrics: list[JobMetric],
    checkpoints: list[Checkpoint],
    storage: Storage,
    *,
    loss_rtol: float = 1e-4,
) -> list[str]:
    """Every violation of I1-I7 for one job (its rows in insertion order)."""
    bad: list[str] = []
    job_dir = storage.job_dir(job.team_id, job.id)
    statuses = [(e, s) for e in events if (s := _status(e)) is not None]

    # I1: one terminal state, reached once, last.
    if not is_terminal(job.status):
        bad.append(f"I1 {job.id} is {job.status}, not terminal")
    terminal = [e for e, s in statuses if is_terminal(s)]
    if len(terminal) != 1:
        bad.append(f"I1 {job.id} has {len(terminal)} terminal state changes: {terminal}")
    elif statuses[-1][1] != job.status:
        bad.append(f"I1 {job.id} ends {job.status} but its last change says {statuses[-1][1]}")
    if is_terminal(job.status) and (job.lease_owner or job.lease_expires_at or not job.finished_at):
        bad.append(f"I1 {job.id} is {job.status} with a lease or without finished_at")

    # I2 and I7: ownership windows from the claims and releases.
    owned, last_token = False, 0
    for event in events:
        status = _status(event)
        data = event.data if isinstance(event.data, dict) else {}
        if status == JobStatus.RUNNING:
            token = int(data.get("fencing_token", -1))
            if owned:
                bad.append(f"I2 {job.id} claimed again (token {token}) before a release")
            if token <= last_token:
                bad.append(f"I2 {job.id} claim token {token} not above {last_token}")
            owned, last_token = True, token
        elif status is not None:
            owned = False
        elif (_metric_step(event) is not None or event.message.startswith("Checkpoint saved")) and (
            not owned
        ):
            bad.append(f"I7 {job.id} write outside an ownership window: {event.message!r}")
        refused = data.get(REFUSED_WRITE)
        if isinstance(refused, dict) and not int(refused.get("fencing_token", 0)) < (
            job.fencing_token
        ):
            bad.append(f"I7 {job.id} refused a write with a current token: {refused}")
    if last_token > job.fencing_token:
        bad.append(f"I2 {job.id} claim token {last_token} above the job's {job.fencing_token}")

    # I3: listed, published and resumed-from checkpoints are complete.
    for ckpt in checkpoints:
        path = storage.resolve_in_job(job.team_id, job.id, ckpt.rel_path)
        if path.name != f"step-{ckpt.step_number}" or not verify_checkpoint(path, full=True):
            bad.append(f"I3 {job.id} lists a torn or misnamed checkpoint {ckpt.rel_path}")
    ckpt_dir = job_dir / "checkpoints"
    published = sorted(ckpt_dir.glob("step-*")) if ckpt_dir.is_dir() else []
    for path in published:
        if not verify_checkpoint(path, full=True):
            bad.append(f"I3 {job.id} has a torn published checkpoint {path.name}")
    for event in events:
        if event.message.startswith(RESUMED):
            step = int((event.data or {}).get("step", -1))
            if not verify_checkpoint(ckpt_dir / f"step-{step}", full=True):
                bad.append(f"I3 {job.id} resumed from step {step}, not a complete checkpoint")

    # I4: rows strictly increasing; a step reported again only after a rollback.
    steps = [m.step for m in metrics]
    if any(b <= a for a, b in pairwise(steps)):
        bad.append(f"I4 {job.id} metric steps not strictly increasing: {steps}")
    highest, rolled_back_to = 0, None
    first_report: dict[int, dict[str, Any]] = {}
    for event in events:
        if event.message.startswith(ROLLED_BACK):
            rolled_back_to = int((event.data or {}).get("to_step", -1))
            continue
        step = _metric_step(event)
        if step is None:
            continue
        if step <= highest and (rolled_back_to is None or step != rolled_back_to + 1):
            bad.append(f"I4 {job.id} step {step} reported again without a rollback before it")
        highest, rolled_back_to = step, None
        first_report.setdefault(step, dict(event.data or {}))

    # I5: a redone step reproduces the interrupted run's report of it.
    for row in metrics:
        first = first_report.get(row.step)
        if first is not None and not _close(first.get("loss"), row.metrics.get("loss"), loss_rtol):
            bad.append(
                f"I5 {job.id} step {row.step} loss {row.metrics.get('loss')} after resuming, "
                f"{first.get('loss')} before"
            )

    # I6: nothing left running or half-written once the job is finished.
    if is_terminal(job.status):
        leftovers = [p.name for p in ckpt_dir.glob(".*")] if ckpt_dir.is_dir() else []
        if leftovers:
            bad.append(f"I6 {job.id} left temp dirs {leftovers}")
        pids = training_pids(storage.root.parent, job.id)
        if pids:
            bad.append(f"I6 {job.id} left training processes {pids}")
    return bad


def check_invariants(
    settings: Settings, *, job_ids: Iterable[str] | None = None, loss_rtol: float = 1e-4
) -> None:
    """Check I1-I7 for `job_ids` (default: every job in the database)."""
    engine = make_engine(settings)
    storage = Storage(settings)
    problems: list[str] = []
    try:
        with make_session_factory(engine)() as session:
            query = select(Job).order_by(Job.pk)
            if job_ids is not None:
                query = query.where(Job.id.in_(list(job_ids)))
            for job in session.scalars(query):
                events = list(
                    session.scalars(
                        select(JobEvent).where(JobEvent.job_id == job.id).order_by(JobEvent.pk)
                    )
                )
                metrics = list(
                    session.scalars(
                        select(JobMetric).where(JobMetric.job_id == job.id).order_by(JobMetric.pk)
                    )
                )
                checkpoints = list(
                    session.scalars(select(Checkpoint).where(Checkpoint.job_id == job.id))
                )
                problems += check_job(
                    job, events, metrics, checkpoints, storage, loss_rtol=loss_rtol
                )
    finally:
        engine.dispose()
    assert not problems, "invariants violated:\n" + "\n".join(problems)
