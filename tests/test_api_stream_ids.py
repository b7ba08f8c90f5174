"""The job stream's event ids: every message carries one, and a reconnect with
`Last-Event-ID` resumes after it instead of replaying the history. Driven through the
in-process API on a terminal job, so each stream ends by itself with `event: end`."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select

from jobs.db import make_engine, make_session_factory
from jobs.events import add_event
from jobs.leases import Lease, claim, fenced, finish, record_metrics
from jobs.models import Job
from jobs.states import JobStatus
from tests.service_fixtures import STRING_CHECK, ApiClient, rl_lines

Message = tuple[str | None, str, Any]


def _running_job(api: ApiClient) -> tuple[str, Lease, Any]:
    file_id = api.upload(rl_lines()).json()["id"]
    body = {
        "model": "lco-tiny",
        "training_file": file_id,
        "method": {"type": "lco", "lco": {"grader": STRING_CHECK}},
    }
    job_id = api.post("/v1/fine_tuning/jobs", json=body).json()["id"]
    sessions = make_session_factory(make_engine(api.settings))
    with sessions() as session, session.begin():
        lease = claim(session, job_id, owner="test", ttl_s=60)
        assert session.scalar(select(Job.team_id).where(Job.id == job_id))
    assert lease is not None
    return job_id, lease, sessions


def _read(api: ApiClient, job_id: str, last_event_id: str | None = None) -> list[Message]:
    """Every `(id, event, data)` of one connection, until the server closes it."""
    headers = dict(api.headers)
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    out: list[Message] = []
    with api.client.stream(
        "GET", f"/v1/fine_tuning/jobs/{job_id}/stream", headers=headers
    ) as response:
        assert response.status_code == 200
        for block in response.read().decode().split("\n\n"):
            fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
            if "event" in fields:
                out.append((fields.get("id"), fields["event"], json.loads(fields["data"])))
    return out


def test_every_message_has_an_id_and_a_reconnect_resumes_after_it(api: ApiClient) -> None:
    job_id, lease, sessions = _running_job(api)
    with fenced(sessions, lease) as session:
        for step in (1, 2, 3, 4):
            record_metrics(session, lease, step, {"loss": 1.0 / step, "total_steps": 4})
            add_event(session, job_id, f"note {step}")
    with fenced(sessions, lease) as session:
        finish(session, lease, JobStatus.CANCELLED, message="Fine-tuning job cancelled")

    first = _read(api, job_id)
    assert all(event_id for event_id, _, _ in first)
    steps = [data["step"] for _, kind, data in first if kind == "metrics"]
    assert steps == [1, 2, 3, 4]
    # Drop the connection just after step 2's point: resume from its id.
    cut = next(
        i for i, (_, kind, data) in enumerate(first) if kind == "metrics" and data["step"] == 2
    )
    resumed = _read(api, job_id, last_event_id=first[cut][0])
    kinds = [kind for _, kind, _ in resumed]
    assert kinds[0] == "job" and kinds[-1] == "end"  # the job as it is now, then only news
    assert [d["step"] for _, k, d in resumed if k == "metrics"] == [3, 4]
    sent_before = [d["message"] for _, k, d in first[: cut + 1] if k == "event"]
    again = [d["message"] for _, k, d in resumed if k == "event"]
    assert not set(sent_before) & set(again)
    # Everything after the cut arrives once: the union is the full stream, minus the job
    # snapshot (sent again) and nothing else.
    assert [m for m in first[cut + 1 :] if m[1] != "job"] == [m for m in resumed if m[1] != "job"]

    # The last id of a finished stream resumes to nothing new but the end.
    tail = _read(api, job_id, last_event_id=first[-1][0])
    assert [kind for _, kind, _ in tail] == ["job", "end"]


def test_a_foreign_last_event_id_replays_the_history(api: ApiClient) -> None:
    job_id, lease, sessions = _running_job(api)
    with fenced(sessions, lease) as session:
        record_metrics(session, lease, 1, {"loss": 1.0, "total_steps": 1})
        finish(session, lease, JobStatus.CANCELLED, message="Fine-tuning job cancelled")
    full = _read(api, job_id)
    for bogus in ("", "abc", "1.2", "-1.0.0", "9" * 40 + ".0.0"):
        assert _read(api, job_id, last_event_id=bogus) == full
