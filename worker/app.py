"""The Celery app of the workers: JSON only, no result backend, prefetch 1, late acks,
explicit task names, one queue per GPU pool (see docs/reliability.md).

    app = create_worker_app(Settings(), pools=["default"], gpus=1)
    app.worker_main(["worker", "-Q", "default", "--pool", "solo"])   # what `lco worker` does

One job per worker process (`--pool solo`): the training runs in a child process anyway,
and the supervisor then shares the worker's main thread, so a warm shutdown (SIGTERM)
reaches it: the run checkpoints, and the job is requeued without spending an attempt.
From the first SIGTERM on, the worker withdraws its GPUs and claims no job: a message it
still receives is put back for another worker.
Once ready, the worker heartbeats its pools (`worker.heartbeat`): that is their capacity.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.exceptions import Reject
from celery.signals import worker_ready, worker_shutdown, worker_shutting_down
from kombu import Queue

from jobs.dispatch import RUN_JOB_TASK, celery_config
from jobs.settings import Settings
from worker import tasks
from worker.context import WorkerContext
from worker.heartbeat import Heartbeats


def create_worker_app(
    settings: Settings, *, pools: list[str] | None = None, gpus: int | None = None
) -> Celery:
    settings.ensure_dirs()
    ctx = WorkerContext(settings)
    beats = Heartbeats(
        ctx, pools=pools or [settings.default_pool], gpus=gpus or settings.worker_gpus
    )
    app = Celery("lco")
    app.conf.update(celery_config(settings))
    app.conf.task_queues = [Queue(pool, routing_key=pool) for pool in settings.pools]
    # Keep the JSON log handler `lco worker` installs (jobs.logs) instead of Celery's own.
    app.conf.worker_hijack_root_logger = False

    def _preempt_running_jobs(**_: Any) -> None:
        # Runs in the signal handler, once per SIGTERM: only flags, no I/O.
        ctx.shutting_down.set()
        beats.withdraw()

    worker_shutting_down.connect(_preempt_running_jobs, weak=False)
    worker_ready.connect(lambda **_: beats.start(), weak=False)
    worker_shutdown.connect(lambda **_: beats.stop(), weak=False)

    @app.task(name=RUN_JOB_TASK, ignore_result=True, acks_late=True)
    def run_job(job_id: str) -> None:
        if not tasks.run_job(ctx, job_id) and ctx.shutting_down.is_set():
            # Not claimed because this worker is stopping: the message goes back to the
            # queue for another worker (else only the reconciler's re-send would find it).
            raise Reject("worker shutting down", requeue=True)

    return app
