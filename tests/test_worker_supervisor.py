"""The worker's supervisor with a scripted training child (no torch): relaying, fencing,
cancel/pause between steps, kill after the grace period, crash retries, duplicate messages."""

from __future__ import annotations

import threading
import time
from typing import Any

from sqlalchemy import select, update

from jobs.db import make_engine, make_session_factory
from jobs.models import Job, JobMetric
from tests.service_fixtures import ApiClient, sft_body, sft_lines
from tests.worker_fakes import FAKE_CHILD
from worker.context import WorkerContext
from worker.tasks import run_job


def _submit(api: ApiClient, **metadata: str) -> str:
    file_id = api.upload(sft_lines()).json()["id"]
    body = sft_body(file_id)
    body["metadata"] = metadata
    response = api.post("/v1/fine_tuning/jobs", json=body)
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


def _ctx(api: ApiClient, **overrides: Any) -> WorkerContext:
    settings = api.settings.model_copy(update=overrides)
    return WorkerContext(settings, child_command=FAKE_CHILD)


def _job(api: ApiClient, job_id: str) -> dict[str, Any]:
    return dict(api.get(f"/v1/fine_tuning/jobs/{job_id}").json())


def _wait_step(api: ApiClient, job_id: str, step: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while _job(api, job_id)["progress"]["step"] < step:
        assert time.monotonic() < deadline, _job(api, job_id)
        time.sleep(0.1)


def test_success_relays_metrics_checkpoints_and_model_name(api: ApiClient) -> None:
    job_id = _submit(api, steps="4", delay="0.05")
    assert run_job(_ctx(api), job_id) is True
    job = _job(api, job_id)
    assert job["status"] == "succeeded", job
    assert (
        job["fine_tuned_model"].startswith("ft:lco-tiny:team-a::")
        and job_id in job["fine_tuned_model"]
    )
    assert job["trained_tokens"] == 40 and job["finished_at"] is not None
    assert job["progress"] == {"step": 4, "total_steps": 4, "percent": 100.0}
    metrics = api.get(f"/v1/fine_tuning/jobs/{job_id}/metrics").json()["data"]
    assert [m["step"] for m in metrics] == [1, 2, 3, 4]
    ckpts = api.get(f"/v1/fine_tuning/jobs/{job_id}/checkpoints").json()["data"]
    assert [c["step_number"] for c in ckpts] == [4, 2]
    messages = [
        e["message"]
        for e in api.get(f"/v1/fine_tuning/jobs/{job_id}/events?limit=100").json()["data"]
    ]
    assert "The job has successfully completed" in messages and "fake run starting" in messages
    # A redelivered message for a finished job does nothing.
    assert run_job(_ctx(api), job_id) is False


def test_status_shows_the_model_preparation_phase_while_it_lasts(api: ApiClient) -> None:
    job_id = _submit(api, steps="2", delay="0.05", prepare_s="6")
    thread = threading.Thread(target=run_job, args=(_ctx(api), job_id))
    thread.start()
    deadline = time.monotonic() + 30
    while (details := _job(api, job_id)["status_details"])["phase"] != "preparing_model":
        assert time.monotonic() < deadline, details
        time.sleep(0.05)
    assert details["message"] == "loading the fake model lco-tiny", details
    thread.join(timeout=30)
    job = _job(api, job_id)
    # Finished: no phase and no message left over from the run.
    assert job["status"] == "succeeded" and job["status_details"]["phase"] is None
    assert job["status_details"]["message"] is None
    events = api.get(f"/v1/fine_tuning/jobs/{job_id}/events?limit=100").json()["data"]
    phases = [e["data"]["phase"] for e in reversed(events) if (e["data"] or {}).get("phase")]
    assert phases == ["preparing_model", "training"]


def test_cancel_while_running_stops_between_steps(api: ApiClient) -> None:
    job_id = _submit(api, steps="50", delay="0.05", hold_steps="1")
    thread = threading.Thread(target=run_job, args=(_ctx(api), job_id))
    thread.start()
    _wait_step(api, job_id, 1)
    # A second message while the lease is live is a no-op (I2).
    assert run_job(_ctx(api), job_id) is False
    assert (
        api.post(f"/v1/fine_tuning/jobs/{job_id}/cancel").json()["status_details"]["phase"]
        == "cancelling"
    )
    thread.join(timeout=30)
    assert not thread.is_alive()
    job = _job(api, job_id)
    assert job["status"] == "cancelled" and job["progress"]["step"] < 50
    assert api.post(f"/v1/fine_tuning/jobs/{job_id}/cancel").status_code == 409


def test_pause_then_resume_continues_from_checkpoint(api: ApiClient) -> None:
    job_id = _submit(api, steps="6", delay="0.05", hold_steps="2")
    thread = threading.Thread(target=run_job, args=(_ctx(api), job_id))
    thread.start()
    _wait_step(api, job_id, 2)
    api.post(f"/v1/fine_tuning/jobs/{job_id}/pause")
    thread.join(timeout=30)
    assert _job(api, job_id)["status"] == "paused"
    assert api.post(f"/v1/fine_tuning/jobs/{job_id}/resume").json()["status"] == "queued"
    assert run_job(_ctx(api), job_id) is True
    job = _job(api, job_id)
    assert job["status"] == "succeeded" and job["attempts"] == 1  # a pause spends none
    steps = [m["step"] for m in api.get(f"/v1/fine_tuning/jobs/{job_id}/metrics").json()["data"]]
    assert steps == sorted(set(steps)) and steps[-1] == 6  # strictly increasing (I4)


def _claim_tokens(api: ApiClient, job_id: str) -> list[int]:
    events = api.get(f"/v1/fine_tuning/jobs/{job_id}/events?limit=100").json()["data"]
    return [
        e["data"]["fencing_token"]
        for e in reversed(events)  # the API lists newest first
        if (e["data"] or {}).get("status") == "running"
    ]


def test_pauses_never_spend_attempts_and_every_claim_takes_a_new_token(api: ApiClient) -> None:
    """Five pause/resume cycles (more than max_attempts) and the job still succeeds, as
    attempt 1; the fencing token still moves on at every claim (I2, I7)."""
    # Each run holds at the step its cycle pauses at, so no pause can come too late.
    job_id = _submit(api, steps="30", delay="0.05", hold_steps="2,4,6,8,10")
    ctx = _ctx(api)
    assert api.settings.max_attempts < 5
    for cycle in range(1, 6):
        thread = threading.Thread(target=run_job, args=(ctx, job_id))
        thread.start()
        _wait_step(api, job_id, 2 * cycle)  # past the checkpoint the last run left
        assert api.post(f"/v1/fine_tuning/jobs/{job_id}/pause").status_code == 200
        thread.join(timeout=30)
        assert not thread.is_alive()
        job = _job(api, job_id)
        assert job["status"] == "paused" and job["attempts"] == 0, job
        resumed = api.post(f"/v1/fine_tuning/jobs/{job_id}/resume").json()
        assert resumed["status"] == "queued" and resumed["status_details"]["reason"] == (
            "waiting_for_worker"
        )
    assert run_job(ctx, job_id) is True
    job = _job(api, job_id)
    assert job["status"] == "succeeded" and job["attempts"] == 1, job
    assert job["progress"]["step"] == 30
    tokens = _claim_tokens(api, job_id)
    assert len(tokens) == 6 and tokens == sorted(set(tokens)), tokens


def test_a_job_out_of_attempts_is_failed_with_the_reason_when_a_worker_gets_it(
    api: ApiClient,
) -> None:
    """A queued, admitted job no claim can take (here: attempts used up by an older version
    that counted pauses) fails with the reason instead of waiting for a worker forever."""
    job_id = _submit(api)
    with make_session_factory(make_engine(api.settings))() as session:
        session.execute(update(Job).where(Job.id == job_id).values(attempt=3))
        session.commit()
    job = _job(api, job_id)
    assert job["status"] == "queued" and job["status_details"]["reason"] == "waiting_for_worker"
    assert run_job(_ctx(api), job_id) is False
    job = _job(api, job_id)
    assert job["status"] == "failed" and job["finished_at"] is not None
    assert job["error"]["code"] == "attempts_exhausted"
    assert "3 of 3" in job["error"]["message"]
    events = api.get(f"/v1/fine_tuning/jobs/{job_id}/events?limit=5").json()["data"]
    assert events[0]["level"] == "error"
    assert events[0]["message"] == "Fine-tuning job failed: " + job["error"]["message"]
    # A redelivered message finds it finished and changes nothing.
    assert run_job(_ctx(api), job_id) is False
    assert _job(api, job_id)["error"] == job["error"]


def test_child_that_ignores_stop_is_killed(api: ApiClient) -> None:
    job_id = _submit(api, fake="hang", steps="200", delay="0.1")
    thread = threading.Thread(target=run_job, args=(_ctx(api, stop_grace_s=1.0), job_id))
    thread.start()
    _wait_step(api, job_id, 1)
    api.post(f"/v1/fine_tuning/jobs/{job_id}/cancel")
    thread.join(timeout=30)
    assert _job(api, job_id)["status"] == "cancelled"


def test_crash_is_retried_then_fails_after_max_attempts(api: ApiClient) -> None:
    job_id = _submit(api, fake="crash", delay="0.01")
    ctx = _ctx(api, max_attempts=2)
    with make_session_factory(make_engine(api.settings))() as session:
        job = session.scalar(select(Job).where(Job.id == job_id))
        assert job is not None
        job.max_attempts = 2
        session.commit()
    assert run_job(ctx, job_id) is True
    job = _job(api, job_id)
    assert job["status"] == "queued" and job["attempts"] == 1
    assert run_job(ctx, job_id) is True
    job = _job(api, job_id)
    assert job["status"] == "failed" and job["error"]["code"] == "training_failed"
    assert run_job(ctx, job_id) is False


def test_user_error_fails_without_retry(api: ApiClient) -> None:
    job_id = _submit(api, fake="user_error")
    assert run_job(_ctx(api), job_id) is True
    job = _job(api, job_id)
    assert job["status"] == "failed" and job["error"]["param"] == "training_file"
    assert job["attempts"] == 1


def test_metric_rows_are_unique_per_step(api: ApiClient) -> None:
    job_id = _submit(api, steps="3", delay="0.01")
    run_job(_ctx(api), job_id)
    with make_session_factory(make_engine(api.settings))() as session:
        steps = list(session.scalars(select(JobMetric.step).where(JobMetric.job_id == job_id)))
    assert sorted(steps) == [1, 2, 3]


def test_worker_shutdown_preempts_without_spending_an_attempt(api: ApiClient) -> None:
    job_id = _submit(api, steps="12", delay="0.05", hold_steps="2")
    ctx = _ctx(api)
    thread = threading.Thread(target=run_job, args=(ctx, job_id))
    thread.start()
    _wait_step(api, job_id, 2)
    ctx.shutting_down.set()  # what the worker's SIGTERM (warm shutdown) does
    thread.join(timeout=30)
    job = _job(api, job_id)
    assert job["status"] == "queued" and job["attempts"] == 0
    # The next worker resumes from the checkpoint the preempted run left.
    assert run_job(_ctx(api), job_id) is True
    job = _job(api, job_id)
    assert job["status"] == "succeeded" and job["attempts"] == 1
