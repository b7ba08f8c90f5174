"""The worker's limits on one job's run, with scripted training children (no torch): a run
that stops making progress (step_timeout_s), runs too long in all (max_job_runtime_s) or
runs out of memory (train_memory_limit_mb, or the OOM killer) is killed and failed at once,
without its retries, and the next job, another team's, runs as usual."""

from __future__ import annotations

import errno
import itertools
import threading
import time
from typing import Any

import pytest

from tests.invariants import check_invariants
from tests.service_fixtures import ApiClient, sft_body, sft_lines
from tests.worker_fakes import LIMITS_CHILD
from worker import supervisor
from worker.context import WorkerContext
from worker.tasks import run_job


def _submit(api: ApiClient, *, other_team: bool = False, **metadata: str) -> str:
    headers = api.other_headers if other_team else api.headers
    file_id = api.upload(sft_lines(), headers=headers).json()["id"]
    body = sft_body(file_id)
    body["metadata"] = metadata
    response = api.post("/v1/fine_tuning/jobs", json=body, headers=headers)
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


def _ctx(api: ApiClient, **overrides: Any) -> WorkerContext:
    return WorkerContext(api.settings.model_copy(update=overrides), child_command=LIMITS_CHILD)


def _job(api: ApiClient, job_id: str, *, other_team: bool = False) -> dict[str, Any]:
    headers = api.other_headers if other_team else api.headers
    return dict(api.get(f"/v1/fine_tuning/jobs/{job_id}", headers=headers).json())


def _last_event(api: ApiClient, job_id: str) -> dict[str, Any]:
    return dict(api.get(f"/v1/fine_tuning/jobs/{job_id}/events?limit=1").json()["data"][0])


def _assert_failed_at_once(api: ApiClient, job_id: str, code: str) -> dict[str, Any]:
    job = _job(api, job_id)
    assert job["status"] == "failed" and job["error"]["code"] == code, job
    assert job["attempts"] == 1 and api.settings.max_attempts > 1  # no retry spent
    event = _last_event(api, job_id)
    assert event["level"] == "error"
    assert event["message"] == "Fine-tuning job failed: " + job["error"]["message"]
    return job


def test_a_run_without_progress_fails_with_step_timeout_and_the_next_job_runs(
    api: ApiClient,
) -> None:
    stalled = _submit(api, fake="stall", steps="5")
    other = _submit(api, other_team=True, fake="no_ckpt", steps="3")
    # Long enough for a child to start on a loaded machine (the clock runs from its start).
    ctx = _ctx(api, step_timeout_s=5.0)
    started = time.monotonic()
    assert run_job(ctx, stalled) is True
    assert time.monotonic() - started < 60  # not the child's hour-long sleep
    job = _assert_failed_at_once(api, stalled, "step_timeout")
    assert "no training step completed for 5s (step_timeout_s)" in job["error"]["message"]
    assert job["progress"]["step"] == 1

    assert run_job(ctx, other) is True
    job = _job(api, other, other_team=True)
    assert job["status"] == "succeeded" and job["progress"]["step"] == 3, job
    check_invariants(api.settings)


def test_a_run_past_max_job_runtime_fails_with_max_runtime_exceeded(api: ApiClient) -> None:
    job_id = _submit(api, fake="no_ckpt", steps="400", delay="0.05")
    assert run_job(_ctx(api, max_job_runtime_s=6.0), job_id) is True
    job = _assert_failed_at_once(api, job_id, "max_runtime_exceeded")
    assert "more than 6s in all (max_job_runtime_s)" in job["error"]["message"]
    assert 0 < job["progress"]["step"] < 400
    check_invariants(api.settings)


def test_max_job_runtime_counts_the_attempts_before_a_pause(api: ApiClient) -> None:
    """Pausing and resuming does not reset the clock: the second attempt is stopped once
    both together reach the limit, well before it alone could."""
    job_id = _submit(api, fake="no_ckpt", steps="100000", delay="0.05")
    ctx = _ctx(api, max_job_runtime_s=16.0)
    thread = threading.Thread(target=run_job, args=(ctx, job_id))
    thread.start()
    time.sleep(6.0)  # the attempt's clock started after this: it has run less than 6 s
    assert _job(api, job_id)["progress"]["step"] >= 1
    assert api.post(f"/v1/fine_tuning/jobs/{job_id}/pause").status_code == 200
    thread.join(timeout=60)
    assert _job(api, job_id)["status"] == "paused"
    assert api.post(f"/v1/fine_tuning/jobs/{job_id}/resume").status_code == 200

    started = time.monotonic()
    assert run_job(ctx, job_id) is True
    assert time.monotonic() - started < 14.0  # alone it would have had 16 s
    _assert_failed_at_once(api, job_id, "max_runtime_exceeded")
    check_invariants(api.settings)


def test_a_run_over_its_memory_limit_fails_with_out_of_memory(api: ApiClient) -> None:
    job_id = _submit(api, fake="hog")
    assert run_job(_ctx(api, train_memory_limit_mb=512), job_id) is True
    job = _assert_failed_at_once(api, job_id, "out_of_memory")
    message = job["error"]["message"]
    assert message.startswith("the training process ran out of memory (train_memory_limit_mb 512)")
    assert "MemoryError" in message
    check_invariants(api.settings)


def test_a_child_killed_by_the_oom_killer_fails_at_once_and_other_sigkills_retry(
    api: ApiClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No cgroup limit to hit here: the cgroup's oom_kill counter is faked instead.
    job_id = _submit(api, fake="oom_killed")
    counter = itertools.count()
    monkeypatch.setattr(supervisor, "oom_kills", lambda: next(counter))
    assert run_job(_ctx(api), job_id) is True
    job = _assert_failed_at_once(api, job_id, "out_of_memory")
    assert job["error"]["message"] == (
        "the training process was killed by the OOM killer "
        "(the training process was killed by SIGKILL)"
    )

    # A SIGKILL while the counter stands still is a crash like any other: retried.
    monkeypatch.setattr(supervisor, "oom_kills", lambda: 0)
    retried = _submit(api, fake="oom_killed")
    assert run_job(_ctx(api), retried) is True
    job = _job(api, retried)
    assert job["status"] == "queued" and job["attempts"] == 1, job


def test_running_out_of_address_space_is_recognised_however_it_surfaces() -> None:
    from worker.memory import is_out_of_memory

    class OutOfMemoryError(RuntimeError):  # torch.OutOfMemoryError's name and base
        pass

    assert is_out_of_memory(MemoryError())
    assert is_out_of_memory(OutOfMemoryError("CUDA out of memory"))
    assert is_out_of_memory(OSError(errno.ENOMEM, "Cannot allocate memory"))
    # What `import torch` raises under RLIMIT_AS 512 MiB (measured on this machine).
    assert is_out_of_memory(
        ImportError("libtorch_cpu.so: failed to map segment from shared object")
    )
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
    assert not is_out_of_memory(OSError(errno.ENOENT, "No such file"))
