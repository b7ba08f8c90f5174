"""Prometheus metrics for `GET /metrics`: the API's own HTTP traffic, and the service's state
read from the database at scrape time.

    registry = build_registry(settings, read_sessions)   # once per app (api.app)
    app.add_middleware(HttpMetrics, metrics=registry.http)

Workers export nothing themselves: they already push everything through the database
(heartbeats into `workers`, steps into `job_metrics`, status into `jobs`), and the scrape
reads it there. One scrape target (any API process) therefore sees the whole service, and a
worker behind a firewall needs no port. The cost is one short read transaction per scrape
(a handful of aggregate queries, plus one per running job, which GPUs bound).

HTTP metrics are per process. Under `uvicorn --workers N`, set `PROMETHEUS_MULTIPROC_DIR` to
an empty directory shared by the processes (docker-compose.yml does) and every scrape sums
them (prometheus-client's multiprocess mode); without it each process answers for itself.

Labels stay bounded: `route` is the route template (`/v1/fine_tuning/jobs/{job_id}`), never
the path; `pool` and `status` come from settings and the state machine; only the per-job
gauges of *running* jobs carry a `job_id` (at most one per busy GPU).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from jobs.ids import utcnow
from jobs.models import Job, JobMetric, Worker
from jobs.settings import Settings
from jobs.states import TERMINAL, JobStatus

log = logging.getLogger(__name__)

# Seconds; the job stream's requests last minutes and land in +Inf, which is what they are.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Steps per running job over which its throughput is measured.
THROUGHPUT_WINDOW = 10
UNMATCHED = "unmatched"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def route_template(scope: Scope) -> str:
    """The matched route's template, or `unmatched` (404s must not mint new label values)."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED


@dataclass
class HttpMetrics:
    requests: Counter
    latency: Histogram


class ServiceCollector(Collector):
    """Reads the queue, jobs, workers and running jobs' steps from the database per scrape."""

    def __init__(self, settings: Settings, sessions: sessionmaker[Session]) -> None:
        self.settings = settings
        self.sessions = sessions

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "lco_database_up", "1 when the scrape could read the database, else 0"
        )
        try:
            with self.sessions() as session:
                metrics = list(self._read(session, utcnow()))
        except SQLAlchemyError:
            log.warning("metrics.db_unreachable", exc_info=True)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from metrics

    def _read(self, session: Session, now: datetime) -> Iterator[Metric]:
        pools = list(self.settings.pools)
        extra = session.scalars(select(Job.pool).distinct().where(Job.pool.not_in(pools)))
        pools += sorted(extra)

        def per_pool(rows: object) -> dict[str, float]:
            out = dict.fromkeys(pools, 0.0)
            for pool, value in rows:  # type: ignore[attr-defined]
                out[pool] = float(value or 0)
            return out

        queued_since = func.coalesce(Job.status_since, Job.created_at)
        depth = per_pool(
            session.execute(
                select(Job.pool, func.count())
                .where(Job.status == JobStatus.QUEUED)
                .group_by(Job.pool)
            )
        )
        oldest: dict[str, float] = dict.fromkeys(pools, 0.0)
        for pool, since in session.execute(
            select(Job.pool, func.min(queued_since))
            .where(Job.status == JobStatus.QUEUED)
            .group_by(Job.pool)
        ):
            oldest[pool] = max(0.0, (now - _aware(since)).total_seconds())
        running = per_pool(
            session.execute(
                select(Job.pool, func.count())
                .where(Job.status == JobStatus.RUNNING)
                .group_by(Job.pool)
            )
        )
        busy = per_pool(
            session.execute(
                select(Job.pool, func.sum(Job.gpus))
                .where(Job.status == JobStatus.RUNNING)
                .group_by(Job.pool)
            )
        )
        yield _gauge("lco_queue_depth", "Queued jobs per pool (admitted or not)", depth)
        yield _gauge(
            "lco_queue_oldest_age_seconds",
            "Seconds the longest-queued job of the pool has been queued (0 when none)",
            oldest,
        )
        yield _gauge("lco_jobs_running", "Running jobs per pool", running)
        yield _gauge("lco_gpus_busy", "GPUs held by running jobs per pool", busy)

        paused = session.scalar(select(func.count()).where(Job.status == JobStatus.PAUSED))
        yield _single("lco_jobs_paused", "Paused jobs", float(paused or 0))

        finished = CounterMetricFamily(
            "lco_jobs_finished",
            "Jobs that reached a terminal status, by status (counted from the jobs table)",
            labels=["status"],
        )
        counts = dict(
            session.execute(
                select(Job.status, func.count())
                .where(Job.status.in_([str(s) for s in TERMINAL]))
                .group_by(Job.status)
            ).all()
        )
        for status in sorted(TERMINAL):
            finished.add_metric([str(status)], float(counts.get(str(status), 0)))
        yield finished

        yield from self._workers(session, now, pools)
        yield from self._running_jobs(session, now)

    def _workers(self, session: Session, now: datetime, pools: list[str]) -> Iterator[Metric]:
        live = dict.fromkeys(pools, 0.0)
        capacity = dict.fromkeys(pools, 0.0)
        oldest_beat = dict.fromkeys(pools, 0.0)
        ttl = self.settings.worker_ttl_s
        for row in session.scalars(select(Worker)):
            age = max(0.0, (now - _aware(row.heartbeat_at)).total_seconds())
            if age > ttl:
                continue  # no longer capacity (jobs.workers.live_workers)
            live[row.pool] = live.get(row.pool, 0.0) + 1
            capacity[row.pool] = capacity.get(row.pool, 0.0) + row.gpus
            oldest_beat[row.pool] = max(oldest_beat.get(row.pool, 0.0), age)
        yield _gauge("lco_workers_live", "Workers whose heartbeat is within worker_ttl_s", live)
        yield _gauge("lco_worker_capacity_gpus", "GPUs the live workers offer per pool", capacity)
        yield _gauge(
            "lco_worker_heartbeat_oldest_age_seconds",
            "Age of the stalest live worker heartbeat per pool",
            oldest_beat,
        )

    def _running_jobs(self, session: Session, now: datetime) -> Iterator[Metric]:
        step = GaugeMetricFamily("lco_job_step", "Last step of a running job", labels=LABELS)
        rate = GaugeMetricFamily(
            "lco_job_steps_per_second",
            f"Steps per second over a running job's last {THROUGHPUT_WINDOW} steps",
            labels=LABELS,
        )
        age = GaugeMetricFamily(
            "lco_job_last_step_age_seconds",
            "Seconds since a running job's last step (since it started, before its first)",
            labels=LABELS,
        )
        jobs = session.execute(
            select(Job.id, Job.pool, Job.step, Job.started_at, Job.status_since).where(
                Job.status == JobStatus.RUNNING
            )
        ).all()
        for job_id, pool, job_step, started_at, since in jobs:
            labels = [job_id, pool]
            times = [
                _aware(t)
                for t in session.scalars(
                    select(JobMetric.created_at)
                    .where(JobMetric.job_id == job_id)
                    .order_by(JobMetric.step.desc())
                    .limit(THROUGHPUT_WINDOW + 1)
                )
            ]
            step.add_metric(labels, float(job_step or 0))
            # The attempt's start (status_since) bounds the window: steps of an earlier
            # attempt, before a requeue, say nothing about this one's pace.
            attempt_start = _aware(since or started_at or now)
            recent = [t for t in times if t >= attempt_start]
            last = recent[0] if recent else attempt_start
            age.add_metric(labels, max(0.0, (now - last).total_seconds()))
            span = (recent[0] - recent[-1]).total_seconds() if len(recent) > 1 else 0.0
            rate.add_metric(labels, (len(recent) - 1) / span if span > 0 else 0.0)
        yield step
        yield rate
        yield age


LABELS = ["job_id", "pool"]


def _aware(value: datetime) -> datetime:
    # UTCDateTime returns aware values; a raw aggregate (min) on SQLite returns naive ones.
    from datetime import UTC

    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _gauge(name: str, doc: str, values: dict[str, float]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=["pool"])
    for pool, value in values.items():
        family.add_metric([pool], value)
    return family


def _single(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


@dataclass
class MetricsRegistry:
    """What one app serves on /metrics."""

    registry: CollectorRegistry
    http: HttpMetrics
    service: ServiceCollector

    def exposition(self) -> bytes:
        """The text format; in multiprocess mode, every API process's HTTP metrics summed."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            MultiProcessCollector(registry)
            registry.register(self.service)
            return generate_latest(registry)
        return generate_latest(self.registry)


def build_registry(settings: Settings, read_sessions: sessionmaker[Session]) -> MetricsRegistry:
    # A registry per app, not prometheus-client's global one: tests build many apps in one
    # process, and two apps must not share (or collide on) counters.
    registry = CollectorRegistry()
    http = HttpMetrics(
        requests=Counter(
            "lco_http_requests",
            "HTTP requests answered, by method, route template and status code",
            ["method", "route", "status"],
            registry=registry,
        ),
        latency=Histogram(
            "lco_http_request_duration_seconds",
            "Time to answer an HTTP request (the whole body, for streams)",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        ),
    )
    service = ServiceCollector(settings, read_sessions)
    registry.register(service)
    return MetricsRegistry(registry=registry, http=http, service=service)


class HttpMetricsMiddleware:
    """Counts and times every HTTP request by route template (pure ASGI: streams pass
    through unbuffered)."""

    def __init__(self, app: ASGIApp, metrics: HttpMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        started = time.perf_counter()

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = route_template(scope)
            # Any token is a valid HTTP method: those we serve, else `other`.
            method = scope["method"] if scope["method"] in METHODS else "other"
            self.metrics.requests.labels(method, route, str(status)).inc()
            self.metrics.latency.labels(method, route).observe(time.perf_counter() - started)
