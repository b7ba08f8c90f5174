"""What one `/metrics` scrape costs on a large jobs table: the service metrics are read from
the database at scrape time (api/metrics.py), so this is the query cost a Prometheus server
adds every scrape interval.

    .venv/bin/python scripts/bench_metrics.py                      # SQLite, 20,000 jobs
    .venv/bin/python scripts/bench_metrics.py --database-url postgresql+psycopg://postgres@127.0.0.1:5432/DB
    .venv/bin/python scripts/bench_metrics.py --jobs 100000 --running 64

Fills a fresh database with `--jobs` jobs (1/10 queued, `--running` running with 50 metric
rows each, the rest finished), then times `--scrapes` in-process `GET /metrics` calls and
prints the median and the worst in milliseconds. The database must be empty (it is
migrated here); the SQLite default lives in a temporary directory.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fastapi.testclient import TestClient

from api.app import create_app
from jobs.auth import create_team
from jobs.db import make_engine, make_session_factory, transaction
from jobs.ids import utcnow
from jobs.migrate import upgrade
from jobs.models import Job, JobMetric
from jobs.settings import Settings


def fill(settings: Settings, n_jobs: int, n_running: int) -> None:
    sessions = make_session_factory(make_engine(settings))
    now = utcnow()
    with transaction(sessions) as session:
        team = create_team(session, "bench")
        session.flush()
        statuses = ["succeeded", "failed", "cancelled"]
        rows = []
        for i in range(n_jobs):
            if i < n_running:
                status = "running"
            elif i % 10 == 0:
                status = "queued"
            else:
                status = statuses[i % 3]
            rows.append(
                {
                    "id": f"ftjob-bench{i:07d}",
                    "team_id": team.id,
                    "created_at": now - timedelta(seconds=n_jobs - i),
                    "updated_at": now,
                    "status_since": now - timedelta(seconds=60),
                    "started_at": now - timedelta(seconds=600),
                    "spec": {},
                    "model": "lco-tiny",
                    "base_model": "lco-tiny",
                    "training_file": "file-x",
                    "method_type": "supervised",
                    "seed": 1,
                    "pool": "default",
                    "status": status,
                    "step": 50 if status == "running" else 0,
                }
            )
        session.execute(Job.__table__.insert(), rows)
        metrics = [
            {
                "job_id": f"ftjob-bench{j:07d}",
                "step": s,
                "created_at": now - timedelta(seconds=(50 - s) * 2),
                "metrics": {"loss": 1.0},
            }
            for j in range(n_running)
            for s in range(1, 51)
        ]
        session.execute(JobMetric.__table__.insert(), metrics)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--database-url")
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--running", type=int, default=16)
    parser.add_argument("--scrapes", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp), database_url=args.database_url)
        upgrade(settings)
        fill(settings, args.jobs, args.running)
        with TestClient(create_app(settings)) as client:
            client.get("/metrics")  # warm: connections, imports
            times = []
            for _ in range(args.scrapes):
                started = time.perf_counter()
                response = client.get("/metrics")
                times.append((time.perf_counter() - started) * 1000)
                assert response.status_code == 200
        backend = settings.effective_database_url.split(":", 1)[0]
        print(
            f"{backend}: {args.jobs} jobs, {args.running} running: /metrics median "
            f"{statistics.median(times):.1f} ms, worst {max(times):.1f} ms over {args.scrapes}"
        )


if __name__ == "__main__":
    main()
