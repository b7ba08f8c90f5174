"""`GET /metrics`: Prometheus text that prometheus-client's own parser reads; the queue-depth
gauge follows a queued job; HTTP metrics are labelled by route template, not path; per-job
gauges appear for a running job only; an unreachable database is `lco_database_up 0`, not a
failed scrape."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import update

from api.app import create_app
from jobs.db import make_engine, make_session_factory
from jobs.leases import claim, fenced, record_metrics
from jobs.models import Job, Worker
from tests.service_fixtures import STRING_CHECK, ApiClient, rl_lines


def _scrape(client: TestClient) -> dict[str, list[Any]]:
    """Every sample by name (prometheus-client's parser: the text must be well formed)."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples: dict[str, list[Any]] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    return samples


def _value(samples: dict[str, list[Any]], name: str, **labels: str) -> float:
    matches = [s.value for s in samples.get(name, []) if labels.items() <= s.labels.items()]
    assert len(matches) == 1, (name, labels, samples.get(name))
    return float(matches[0])


def _submit(api: ApiClient) -> str:
    file_id = api.upload(rl_lines()).json()["id"]
    body = {
        "model": "lco-tiny",
        "training_file": file_id,
        "method": {"type": "lco", "lco": {"grader": STRING_CHECK}},
    }
    response = api.post("/v1/fine_tuning/jobs", json=body)
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


def test_queued_job_moves_the_queue_depth_gauge(api: ApiClient) -> None:
    before = _scrape(api.client)
    assert _value(before, "lco_database_up") == 1
    assert _value(before, "lco_queue_depth", pool="default") == 0
    assert _value(before, "lco_queue_oldest_age_seconds", pool="default") == 0
    assert _value(before, "lco_worker_capacity_gpus", pool="default") == 8
    assert _value(before, "lco_workers_live", pool="default") == 1
    for status in ("succeeded", "failed", "cancelled"):
        assert _value(before, "lco_jobs_finished_total", status=status) == 0

    job_id = _submit(api)
    after = _scrape(api.client)
    assert _value(after, "lco_queue_depth", pool="default") == 1
    assert _value(after, "lco_queue_oldest_age_seconds", pool="default") >= 0
    assert _value(after, "lco_jobs_running", pool="default") == 0
    assert "lco_job_step" not in after  # no running job: no per-job series

    # Claimed, with three steps: the per-job gauges appear, labelled by job and pool.
    sessions = make_session_factory(make_engine(api.settings))
    with sessions() as session, session.begin():
        lease = claim(session, job_id, owner="test", ttl_s=60)
    assert lease is not None
    with fenced(sessions, lease) as session:
        for step in (1, 2, 3):
            record_metrics(session, lease, step, {"loss": 1.0, "total_steps": 10})
    running = _scrape(api.client)
    assert _value(running, "lco_queue_depth", pool="default") == 0
    assert _value(running, "lco_jobs_running", pool="default") == 1
    assert _value(running, "lco_job_step", job_id=job_id, pool="default") == 3
    assert _value(running, "lco_job_last_step_age_seconds", job_id=job_id) >= 0
    assert _value(running, "lco_job_steps_per_second", job_id=job_id) >= 0

    api.post(f"/v1/fine_tuning/jobs/{job_id}/cancel")
    with sessions() as session, session.begin():  # the worker's part of a cancel, abridged
        session.execute(
            update(Job).where(Job.id == job_id).values(status="cancelled", lease_owner=None)
        )
    done = _scrape(api.client)
    assert _value(done, "lco_jobs_finished_total", status="cancelled") == 1
    assert "lco_job_step" not in done


def test_http_metrics_use_route_templates(api: ApiClient) -> None:
    for job_id in ("ftjob-a", "ftjob-b", "ftjob-c"):
        assert api.get(f"/v1/fine_tuning/jobs/{job_id}").status_code == 404
    api.client.get("/no/such/path/1")
    api.client.get("/no/such/path/2")
    _scrape(api.client)  # a request is counted once answered: the next scrape shows this one
    samples = _scrape(api.client)
    routes = {s.labels["route"] for s in samples["lco_http_requests_total"]}
    assert "/v1/fine_tuning/jobs/{job_id}" in routes
    assert not any("ftjob-" in r or "/no/such" in r for r in routes)
    assert "unmatched" in routes
    counted = sum(
        s.value
        for s in samples["lco_http_requests_total"]
        if s.labels["route"] == "/v1/fine_tuning/jobs/{job_id}" and s.labels["status"] == "404"
    )
    assert counted == 3
    assert any(
        s.labels["route"] == "/metrics" for s in samples["lco_http_request_duration_seconds_count"]
    )


def test_stale_worker_leaves_capacity(api: ApiClient) -> None:
    sessions = make_session_factory(make_engine(api.settings))
    with sessions() as session, session.begin():
        session.execute(update(Worker).values(heartbeat_at=datetime(2020, 1, 1, tzinfo=UTC)))
    samples = _scrape(api.client)
    assert _value(samples, "lco_worker_capacity_gpus", pool="default") == 0


def test_unreachable_database_is_a_gauge_not_an_error(api: ApiClient) -> None:
    closed = api.settings.model_copy(
        update={"database_url": "postgresql+psycopg://lco@127.0.0.1:1/lco"}
    )
    with TestClient(create_app(closed), raise_server_exceptions=False) as client:
        samples = _scrape(client)
    assert _value(samples, "lco_database_up") == 0
    assert "lco_queue_depth" not in samples
