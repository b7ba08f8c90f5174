"""The job object's `estimated_finish` (OpenAI's field, Unix seconds) comes from the
scheduler's plan: a running or admitted job after its remaining time (its own pace once it
has steps, else the pool's typical run length), a queued one a typical run length after
its estimated start; null once the job is out of the queue (paused, finished).

    .venv/bin/pytest tests/test_api_estimated_finish.py -q
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from jobs.db import make_engine, make_session_factory, transaction
from jobs.ids import utcnow
from jobs.models import Job, UsageRecord
from jobs.queue import QueueSlots
from tests.job_rows import job_row
from tests.service_fixtures import ApiClient, sft_body, sft_lines

JOBS = "/v1/fine_tuning/jobs"


def _submit(api: ApiClient, gpus: int) -> dict[str, Any]:
    file_id = api.upload(sft_lines()).json()["id"]
    # A batch of 8 splits evenly over 8 ranks (an uneven one is a 400 at submission).
    body = sft_body(file_id, batch_size=8)
    response = api.post(JOBS, json={**body, "resources": {"gpus": gpus}})
    assert response.status_code == 200, response.text
    return dict(response.json())


def _get(api: ApiClient, job_id: str) -> dict[str, Any]:
    return dict(api.get(f"{JOBS}/{job_id}").json())


def _near(value: int | None, expected: float, slack: float = 3.0) -> bool:
    return value is not None and abs(value - expected) <= slack


def test_estimated_finish_follows_the_plan_and_is_null_out_of_the_queue(api: ApiClient) -> None:
    typical = api.settings.default_job_duration_s  # no finished job yet in the pool
    # The fixture's worker has 8 GPUs: the first job takes them all (admitted), the second waits.
    first = _submit(api, gpus=8)
    second = _submit(api, gpus=8)
    now = time.time()
    first, second = _get(api, first["id"]), _get(api, second["id"])
    assert first["status_details"]["reason"] == "waiting_for_worker"
    assert _near(first["estimated_finish"], now + typical)
    start = second["queue"]["estimated_start_at"]
    # Two GETs, each planning from its own clock: a second apart on a loaded machine.
    assert _near(start, first["estimated_finish"])
    assert _near(second["estimated_finish"], start + typical, 1)

    # Running at its own pace: 5 of 10 steps in 100 s leaves 100 s.
    sessions = make_session_factory(make_engine(api.settings))
    with transaction(sessions) as session:
        job = _job(session, first["id"])
        job.status, job.step, job.total_steps = "running", 5, 10
        session.add(
            UsageRecord(
                job_id=job.id,
                team_id=job.team_id,
                pool=job.pool,
                gpus=job.gpus,
                start_step=0,
                started_at=utcnow() - timedelta(seconds=100),
            )
        )
    now = time.time()
    running, waiting = _get(api, first["id"]), _get(api, second["id"])
    assert running["status"] == "running"
    assert _near(running["estimated_finish"], now + 100)
    assert _near(waiting["estimated_finish"], now + 100 + typical)
    # The list shows the same estimates.
    listed = {j["id"]: j for j in api.get(JOBS).json()["data"]}
    assert listed[first["id"]]["estimated_finish"] == running["estimated_finish"]
    assert listed[second["id"]]["estimated_finish"] == waiting["estimated_finish"]

    # Past the pool's typical run length without a step to pace it: no estimate, not "now".
    with transaction(sessions) as session:
        session.execute(update(Job).where(Job.id == first["id"]).values(step=0))
        session.execute(
            update(UsageRecord)
            .where(UsageRecord.job_id == first["id"])
            .values(started_at=utcnow() - timedelta(seconds=typical + 60))
        )
    assert _get(api, first["id"])["estimated_finish"] is None

    # Paused, cancelled and succeeded jobs have none.
    assert api.post(f"{JOBS}/{second['id']}/pause").status_code == 200
    assert _get(api, second["id"])["estimated_finish"] is None
    assert api.post(f"{JOBS}/{second['id']}/cancel").status_code == 200
    assert _get(api, second["id"])["estimated_finish"] is None
    with transaction(sessions) as session:
        session.execute(
            update(Job)
            .where(Job.id == first["id"])
            .values(status="succeeded", finished_at=utcnow(), step=10)
        )
    assert _get(api, first["id"])["estimated_finish"] is None


def test_a_queued_job_without_capacity_has_no_estimate(api: ApiClient) -> None:
    # More GPUs than any worker of the pool has: it can never start, so it has no estimate.
    sessions = make_session_factory(make_engine(api.settings))
    job = _submit(api, gpus=1)
    with transaction(sessions) as session:
        stuck = job_row(_job(session, job["id"]).team_id, gpus=9)
        session.add(stuck)
    with sessions() as session:
        places = QueueSlots(api.settings, ttl_s=0).places(session, [stuck.id, job["id"]])
    assert stuck.id in places.slots and stuck.id not in places.finishes
    assert job["id"] in places.finishes  # admitted: a typical run from now
    assert _get(api, stuck.id)["estimated_finish"] is None


def _job(session: Session, job_id: str) -> Job:
    return session.scalars(select(Job).where(Job.id == job_id)).one()
