"""Celery workers: a thin task (`lco.run_job`; the reconciler is the `lco scheduler` loop, `jobs/reconcile.py`) and the job supervisor that runs
the training core in a child process. Build the app with `worker.app.create_worker_app`."""
