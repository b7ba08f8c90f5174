"""Celery workers: thin tasks (`lco.run_job`, `lco.reconcile`) and the job supervisor that runs
the training core in a child process. Build the app with `worker.app.create_worker_app`."""
