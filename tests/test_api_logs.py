"""Structured logs (jobs.logs): JSON lines with time, level, logger, message and the `extra`
fields; a request id per HTTP request in `x-request-id` and on the request's log lines (a
well-formed incoming id kept, anything else replaced); a job-related line carries the job
id; configuring twice does not double the lines."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from jobs.logs import HANDLER_NAME, configure_logging, log_context
from tests.service_fixtures import STRING_CHECK, ApiClient, rl_lines


@pytest.fixture
def lines() -> Iterator[io.StringIO]:
    """JSON logging on, into a buffer; the root logger as it was afterwards."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    buffer = io.StringIO()
    configure_logging("INFO", stream=buffer)
    try:
        yield buffer
    finally:
        for handler in [h for h in root.handlers if h not in handlers]:
            root.removeHandler(handler)
        root.setLevel(level)


def _records(buffer: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines() if line.strip()]


def test_a_line_is_json_with_the_standard_and_extra_fields(lines: io.StringIO) -> None:
    configure_logging("INFO", stream=lines)  # again: still one handler
    assert [h.get_name() for h in logging.getLogger().handlers].count(HANDLER_NAME) == 1
    with log_context(job_id="ftjob-1", team_id="team-1", attempt=2, fencing_token=7):
        logging.getLogger("worker.supervisor").info("job.child_started", extra={"pid": 42})
    (record,) = _records(lines)
    assert record["message"] == "job.child_started"
    assert record["level"] == "INFO" and record["logger"] == "worker.supervisor"
    assert record["time"].startswith("20") and "T" in record["time"]
    assert record["pid"] == 42
    assert (record["job_id"], record["team_id"], record["attempt"], record["fencing_token"]) == (
        "ftjob-1",
        "team-1",
        2,
        7,
    )


def test_request_id_is_returned_and_on_the_requests_lines(
    api: ApiClient, lines: io.StringIO
) -> None:
    file_id = api.upload(rl_lines()).json()["id"]
    body = {
        "model": "lco-tiny",
        "training_file": file_id,
        "method": {"type": "lco", "lco": {"grader": STRING_CHECK}},
    }
    response = api.post(
        "/v1/fine_tuning/jobs", json=body, headers={**api.headers, "x-request-id": "req-abc.1"}
    )
    assert response.status_code == 200, response.text
    assert response.headers["x-request-id"] == "req-abc.1"
    job_id = response.json()["id"]
    records = _records(lines)
    mine = [r for r in records if r.get("request_id") == "req-abc.1"]
    access = [r for r in mine if r["message"] == "http.request"]
    assert access and access[0]["route"] == "/v1/fine_tuning/jobs"
    assert access[0]["status"] == 200 and access[0]["method"] == "POST"
    # The submission's scheduler pass dispatched the job: a job line, under the request's id.
    dispatched = [r for r in mine if r["message"] == "job.dispatched"]
    assert dispatched and dispatched[0]["job_id"] == job_id

    # A malformed id is replaced (never echoed); none at all gets a fresh one each time.
    bad = api.get("/v1/fine_tuning/jobs", headers={**api.headers, "x-request-id": "a b\x01"})
    assert bad.headers["x-request-id"] != "a b\x01" and len(bad.headers["x-request-id"]) == 32
    one, two = api.get("/livez"), api.get("/livez")
    assert one.headers["x-request-id"] != two.headers["x-request-id"]
    # A refusal before any route (404 of an unknown path) carries an id too.
    assert api.client.get("/nowhere").headers["x-request-id"]


def test_worker_lines_carry_the_job_id(api: ApiClient, lines: io.StringIO) -> None:
    """The worker's task and supervisor, in-process with a scripted child: their lines are
    JSON and name the job."""
    from tests.service_fixtures import sft_body, sft_lines
    from tests.worker_fakes import FAKE_CHILD
    from worker.context import WorkerContext
    from worker.tasks import run_job

    file_id = api.upload(sft_lines()).json()["id"]
    body = sft_body(file_id)
    body["metadata"] = {"steps": "2", "delay": "0.01"}
    job_id = api.post("/v1/fine_tuning/jobs", json=body).json()["id"]
    assert run_job(WorkerContext(api.settings, child_command=FAKE_CHILD), job_id) is True
    worker_lines = [r for r in _records(lines) if r["logger"].startswith("worker.")]
    started = [r for r in worker_lines if r["message"] == "job.child_started"]
    assert started and started[0]["job_id"] == job_id and started[0]["pid"] > 0
    assert all(r.get("job_id") == job_id for r in worker_lines if "job_id" in r)
