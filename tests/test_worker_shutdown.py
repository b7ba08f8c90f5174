"""A worker told to stop (SIGTERM, twice) claims nothing more and offers no GPUs: real API,
scheduler and worker processes on the fault suite's private PostgreSQL and Redis
(tests/fault_fixtures.py) training lco-tiny for real, and the claim guard on its own.

    pytest tests/test_worker_shutdown.py       # about a minute
"""

from __future__ import annotations

import os
import signal
import time

import pytest
from sqlalchemy import select

from jobs.models import Job, Worker
from tests.fault_fixtures import FaultService
from tests.invariants import check_invariants, training_pids
from tests.service_fixtures import ApiClient, sft_body, sft_lines
from tests.worker_fakes import FAKE_CHILD
from worker.context import WorkerContext
from worker.tasks import run_job

CLAIMED = "Training started"


def test_a_worker_that_is_shutting_down_claims_no_job(api: ApiClient) -> None:
    file_id = api.upload(sft_lines()).json()["id"]
    job_id = api.post("/v1/fine_tuning/jobs", json=sft_body(file_id)).json()["id"]
    ctx = WorkerContext(api.settings, child_command=FAKE_CHILD)
    ctx.shutting_down.set()
    assert run_job(ctx, job_id) is False
    job = api.get(f"/v1/fine_tuning/jobs/{job_id}").json()
    # Untouched: still queued and admitted, its attempt unspent, for another worker.
    assert job["status"] == "queued" and job["attempts"] == 0, job
    assert job["status_details"]["reason"] == "waiting_for_worker", job


def test_the_celery_task_puts_a_message_back_once_the_worker_is_shutting_down(
    api: ApiClient,
) -> None:
    """What the SIGTERM handler sends (worker_shutting_down) makes the task reject its
    message for requeueing, so another worker gets the job without the reconciler."""
    from celery.exceptions import Reject
    from celery.signals import worker_shutting_down

    from jobs.dispatch import RUN_JOB_TASK
    from worker.app import create_worker_app

    file_id = api.upload(sft_lines()).json()["id"]
    job_id = api.post("/v1/fine_tuning/jobs", json=sft_body(file_id)).json()["id"]
    app = create_worker_app(api.settings)
    worker_shutting_down.send(sender="test", sig="SIGTERM", how="Warm", exitcode=0)
    with pytest.raises(Reject) as rejected:
        app.tasks[RUN_JOB_TASK].run(job_id)
    assert rejected.value.requeue is True
    assert api.get(f"/v1/fine_tuning/jobs/{job_id}").json()["status"] == "queued"


@pytest.mark.e2e
def test_a_worker_sigtermed_twice_preempts_its_job_and_claims_no_other(
    fault_service: FaultService,
) -> None:
    svc = fault_service
    svc.start_worker("worker-1")
    running = svc.submit(max_steps=30, checkpoint_interval=25)
    waiting = svc.submit(max_steps=6, checkpoint_interval=3)
    child = svc.hold_at_step(running, 3)
    worker_name = svc.worker_of(running)
    worker = svc.procs[worker_name]
    worker.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    worker.send_signal(signal.SIGTERM)  # an impatient operator, or a supervisor's retry
    svc.wait_stop_sent(worker_name, running)
    os.kill(child, signal.SIGCONT)
    assert worker.wait(timeout=120) == 0, svc.logs()
    assert training_pids(svc.data_dir) == []

    # Once told to stop, the worker claimed nothing: not the job it preempted (requeued
    # and admitted again at once), not the job waiting behind it.
    job = svc.job(running)
    assert job.status == "queued" and job.attempt == 0, (job.status, svc.logs())
    assert [m for m in svc.messages(running) if m.startswith(CLAIMED)] == [
        "Training started (attempt 1)"
    ], svc.logs()
    assert svc.job(waiting).status == "queued"
    assert not [m for m in svc.messages(waiting) if m.startswith(CLAIMED)], svc.logs()
    # It withdrew its GPUs at the first signal, so nothing was admitted onto them: both
    # jobs wait for a worker (the scheduler runs every second; give it a few passes).
    time.sleep(3 * svc.settings.reconcile_every_s)
    with svc.sessions() as session:
        assert session.scalars(select(Worker)).all() == []
        admitted = session.scalars(select(Job.id).where(Job.admitted_at.is_not(None))).all()
    assert admitted == [], svc.logs()

    # Another worker runs both to the end.
    svc.start_worker("worker-2")
    for job_id in (running, waiting):
        job = svc.wait_terminal(job_id)
        assert job.status == "succeeded" and job.attempt == 1, (job.error, svc.logs())
    check_invariants(svc.settings)
