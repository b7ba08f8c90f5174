"""The service's processes: `lco serve` (embedded), `lco worker`, `lco scheduler`, and
`lco migrate`, which creates or upgrades the database.

    lco serve [--host H] [--port P] [--data-dir D] [--no-worker]
    lco worker [--pools default] [--gpus 1] [--concurrency 1]
    lco scheduler
    lco migrate [--data-dir D]

`serve` and `migrate` create the database; `worker` and `scheduler` refuse one that is not
there (see `cli.options`).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from cli.options import DATA_DIR, database_settings
from jobs.logs import configure_logging


def _die_with_parent() -> None:
    """In the worker child of `lco serve`: get SIGTERM (a warm shutdown) when serve exits,
    however it exits (uvicorn re-raises SIGTERM, skipping our cleanup). Linux only."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from api.app import create_app
    from api.guards import server_header_bound
    from api.server_protocol import BoundedHeadH11Protocol
    from jobs.db import make_engine, make_session_factory
    from jobs.dispatch import Dispatcher, make_producer
    from jobs.reconcile import run_forever

    settings = database_settings(args, create=True)
    configure_logging()
    settings.ensure_dirs()
    worker: subprocess.Popen[bytes] | None = None
    if not args.no_worker:
        # Same code path as production: a real Celery worker process on the same broker.
        worker = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "worker", "--concurrency", "1"],
            env=dict(os.environ),
            cwd=str(Path(__file__).resolve().parent.parent),
            preexec_fn=_die_with_parent,
        )
    stop = threading.Event()
    sessions = make_session_factory(make_engine(settings))
    threading.Thread(
        target=run_forever,
        args=(sessions, Dispatcher(make_producer(settings)), settings, stop),
        daemon=True,
    ).start()
    print(
        f"lco: serving on http://{args.host}:{args.port}/v1 (data in {settings.data_dir})",
        flush=True,
    )
    try:
        # h11, not httptools: h11 bounds how much of a request head it buffers, so one huge
        # header cannot stall the loop (httptools reads it whole); api.guards answers 431,
        # and past h11's bound BoundedHeadH11Protocol does.
        uvicorn.run(
            create_app(settings),
            host=args.host,
            port=args.port,
            log_level="warning",
            http=BoundedHeadH11Protocol,
            log_config=None,  # uvicorn's lines go through the JSON handler above
            h11_max_incomplete_event_size=server_header_bound(settings.max_header_bytes),
        )
    finally:
        stop.set()
        if worker is not None and worker.poll() is None:
            worker.terminate()
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from worker.app import create_worker_app

    settings = database_settings(args)
    pools = args.pools or settings.default_pool
    # Its heartbeats give the pools their capacity: `gpus` for one job at a time.
    app = create_worker_app(
        settings, pools=pools.split(","), gpus=args.gpus or settings.worker_gpus
    )
    # One job per process (see worker.app): solo unless more slots are asked for.
    pool = ["--pool", "solo"] if args.concurrency == 1 else ["--concurrency", str(args.concurrency)]
    argv = [
        "worker",
        "-Q",
        pools,
        *pool,
        "--loglevel",
        args.loglevel,
        "--without-gossip",
        "--without-mingle",
        "--hostname",
        f"lco-{pools}@%h-{os.getpid()}",
    ]
    configure_logging(args.loglevel.upper())
    app.worker_main(argv)
    return 0


def cmd_scheduler(args: argparse.Namespace) -> int:
    from jobs.db import make_engine, make_session_factory
    from jobs.dispatch import Dispatcher, make_producer
    from jobs.reconcile import run_forever

    settings = database_settings(args)
    configure_logging()
    stop = threading.Event()
    # The reaper locks job rows: frozen inside a transaction, it must not hold them from the
    # workers' heartbeats for longer than a lease lasts.
    engine = make_engine(settings, idle_in_transaction_s=settings.lease_ttl_s / 2)
    try:
        run_forever(
            make_session_factory(engine),
            Dispatcher(make_producer(settings)),
            settings,
            stop,
        )
    except KeyboardInterrupt:
        stop.set()
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    database_settings(args, create=True)
    print("database is at the latest migration")
    return 0


def add_parsers(sub: Any) -> None:
    """`serve`, `worker`, `scheduler` and `migrate`, on the top-level subparsers."""
    p = sub.add_parser(
        "serve", parents=[DATA_DIR], help="API + one worker + scheduler on this machine"
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--no-worker", action="store_true", help="API and scheduler only")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser(
        "worker", parents=[DATA_DIR], help="a Celery worker consuming the given pool queues"
    )
    p.add_argument("--pools", help="comma-separated queues (default: LCO_DEFAULT_POOL)")
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--gpus", type=int, help="GPUs one job may use (default: LCO_WORKER_GPUS)")
    p.add_argument("--loglevel", default="info")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("scheduler", parents=[DATA_DIR], help="reaper and reconciler loop")
    p.set_defaults(func=cmd_scheduler)

    p = sub.add_parser("migrate", parents=[DATA_DIR], help="alembic upgrade head")
    p.set_defaults(func=cmd_migrate)
