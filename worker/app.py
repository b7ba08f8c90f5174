"""The Celery app of the workers: JSON only, no result backend, prefetch 1, late acks,
explicit task names, one queue per GPU pool (see docs/reliability.md).

    app = create_worker_app(Settings())
    app.worker_main(["worker", "-Q", "default", "--concurrency", "1"])   # what `lco worker` does
"""

from __future__ import annotations

from celery import Celery
from kombu import Queue

from jobs.dispatch import RUN_JOB_TASK, celery_config
from jobs.settings import Settings
from worker import tasks
from worker.context import WorkerContext


def create_worker_app(settings: Settings) -> Celery:
    settings.ensure_dirs()
    ctx = WorkerContext(settings)
    app = Celery("lco")
    app.conf.update(celery_config(settings))
    app.conf.task_queues = [Queue(pool, routing_key=pool) for pool in settings.pools]

    @app.task(name=RUN_JOB_TASK, ignore_result=True, acks_late=True)
    def run_job(job_id: str) -> None:
        tasks.run_job(ctx, job_id)

    return app
