"""Fault injection: real jobs (SFT on lco-tiny, CPU) through real API, scheduler and worker
processes on a private PostgreSQL and Redis, hit by the faults of docs/reliability.md.
Each test ends by checking the invariants I1-I7 over the database and the storage dir.

    pytest tests/test_faults.py          # about 5 minutes on 2 busy cores

Training processes are found from /proc (`tests.invariants.training_pids`). A fault must
land while the run is still going, on a fast machine too, so tests freeze the training
process (SIGSTOP) at a step read from its own metrics file, arrange the fault, and let it
go on (SIGCONT). Where the fault needs a particular moment (steps reported past the newest
checkpoint, a checkpoint half-written) the test checks the frozen process is at such a
moment and otherwise lets it run a little and looks again.
"""

from __future__ import annotations

import os
import random
import re
import signal
import time
from pathlib import Path

import pytest
from sqlalchemy import update

from jobs.leases import REFUSED_WRITE
from jobs.models import Job, JobEvent
from lco_core.checkpoint import list_checkpoints
from tests.fault_fixtures import FaultService, wait_stopped
from tests.invariants import RESUMED, ROLLED_BACK, check_invariants, training_pids
from tests.service_fixtures import free_port

pytestmark = pytest.mark.e2e


def _settled_step(svc: FaultService, job_id: str) -> int:
    """The job's last written step once the supervisor has relayed all it was sent."""
    step = -1
    while True:
        time.sleep(4 * svc.settings.poll_s)
        now = svc.job(job_id).step
        if now == step:
            return step
        step = now


def _nudge(pid: int) -> None:
    """Let a frozen process run for a moment, then freeze it again."""
    os.kill(pid, signal.SIGCONT)
    time.sleep(0.05)
    os.kill(pid, signal.SIGSTOP)
    wait_stopped(pid)


def _resumes(svc: FaultService, job_id: str) -> list[int]:
    return [
        int((e.data or {})["step"]) for e in svc.events(job_id) if e.message.startswith(RESUMED)
    ]


def _rollbacks(svc: FaultService, job_id: str) -> list[JobEvent]:
    return [e for e in svc.events(job_id) if e.message.startswith(ROLLED_BACK)]


def _newest_complete(ckpt_dir: Path) -> int:
    found = list_checkpoints(ckpt_dir)
    return int(found[-1].name.removeprefix("step-")) if found else 0


def test_kill_9_mid_step_resumes_from_the_last_checkpoint(fault_service: FaultService) -> None:
    svc = fault_service
    svc.start_worker("worker-1")
    job_id = svc.submit(max_steps=20, checkpoint_interval=4)
    ckpt_dir = svc.job_dir(job_id) / "checkpoints"
    pid = svc.hold_at_step(job_id, 5)
    # Kill at a moment with steps reported past the newest complete checkpoint, so that
    # some steps must be redone.
    while True:
        reported, checkpoint = _settled_step(svc, job_id), _newest_complete(ckpt_dir)
        if reported > checkpoint > 0:
            break
        _nudge(pid)
    os.kill(pid, signal.SIGKILL)

    job = svc.wait_terminal(job_id)
    assert job.status == "succeeded" and job.attempt == 2, (job.error, svc.logs())
    assert _resumes(svc, job_id) == [checkpoint]
    (rollback,) = _rollbacks(svc, job_id)
    assert rollback.data == {"from_step": reported, "to_step": checkpoint}
    assert svc.metric_steps(job_id) == list(range(1, 21))
    check_invariants(svc.settings)


def test_kill_9_during_a_checkpoint_write_is_never_listed_or_used(
    fault_service: FaultService,
) -> None:
    svc = fault_service
    svc.start_worker("worker-1")
    job_id = svc.submit(max_steps=24, checkpoint_interval=2)
    ckpt_dir = svc.job_dir(job_id) / "checkpoints"
    pid = svc.hold_at_step(job_id, 3)  # step-2 is complete
    os.kill(pid, signal.SIGCONT)
    # Catch the process inside a later save: its temp dir exists while it is stopped.
    while True:
        assert svc.job(job_id).status == "running", "never caught a checkpoint write"
        if any(p.name.startswith(".tmp-") for p in ckpt_dir.iterdir()):
            os.kill(pid, signal.SIGSTOP)
            wait_stopped(pid)
            writing = [p for p in ckpt_dir.iterdir() if p.name.startswith(".tmp-")]
            if writing:
                break
            os.kill(pid, signal.SIGCONT)
        time.sleep(0.002)
    (partial,) = writing
    partial_step = int(partial.name.split("-")[2])  # .tmp-step-N-xxxx
    newest = _newest_complete(ckpt_dir)
    os.kill(pid, signal.SIGKILL)
    assert 0 < newest < partial_step
    assert partial not in list_checkpoints(ckpt_dir)
    assert partial_step not in svc.checkpoint_steps(job_id)

    job = svc.wait_terminal(job_id)
    assert job.status == "succeeded" and job.attempt == 2, (job.error, svc.logs())
    assert _resumes(svc, job_id) == [newest]  # the newest complete one, not the partial
    assert not partial.exists()
    assert partial_step in svc.checkpoint_steps(job_id)  # redone, completely this time
    check_invariants(svc.settings)


def test_sigterm_to_the_worker_checkpoints_and_requeues_without_spending_an_attempt(
    fault_service: FaultService,
) -> None:
    svc = fault_service
    svc.start_worker("worker-1")
    svc.start_worker("worker-2")
    job_id = svc.submit(max_steps=30, checkpoint_interval=25)
    child = svc.hold_at_step(job_id, 3)
    worker_name = svc.worker_of(job_id)
    worker = svc.procs[worker_name]
    worker.send_signal(signal.SIGTERM)
    svc.wait_stop_sent(worker_name, job_id)
    os.kill(child, signal.SIGCONT)
    assert worker.wait(timeout=120) == 0, svc.logs()  # a clean exit, after the requeue
    assert child not in training_pids(svc.data_dir)

    job = svc.wait_terminal(job_id)  # the other worker takes it over
    assert job.status == "succeeded" and job.attempt == 1, (job.error, svc.logs())
    messages = svc.messages(job_id)
    assert messages.count("Training started (attempt 1)") == 2  # the attempt was not spent
    preempted = messages.index("Fine-tuning job preempted; requeued")
    (stopped,) = [m for m in messages[:preempted] if m.endswith(": preempt")]
    match = re.fullmatch(r"stopped at step (\d+): preempt", stopped)
    assert match is not None
    at_signal = int(match[1])
    assert at_signal >= 3 and at_signal in svc.checkpoint_steps(job_id)
    assert _resumes(svc, job_id) == [at_signal]
    assert _rollbacks(svc, job_id) == []  # nothing redone
    assert svc.metric_steps(job_id) == list(range(1, 31))
    check_invariants(svc.settings)


def test_redis_restart_and_flushall_lose_no_queued_or_running_job(
    fault_service: FaultService,
) -> None:
    svc = fault_service
    svc.start_worker("worker-1")
    jobs = [svc.submit(max_steps=8, checkpoint_interval=4) for _ in range(3)]
    child = svc.hold_at_step(jobs[0], 2)
    assert [svc.job(j).status for j in jobs[1:]] == ["queued", "queued"]
    svc.redis.restart()  # it keeps nothing on disk: every message is gone
    os.kill(child, signal.SIGCONT)

    def one_running_one_queued() -> bool:
        statuses = [svc.job(j).status for j in jobs[1:]]
        return sorted(statuses) == ["queued", "running"]

    svc.wait_for("the next job to run", one_running_one_queued)
    svc.redis.flushall()

    for job_id in jobs:
        job = svc.wait_terminal(job_id)
        assert job.status == "succeeded" and job.attempt == 1, (job.error, svc.logs())
    check_invariants(svc.settings)


def test_postgres_restart_api_answers_503_and_no_job_is_lost_or_duplicated(
    fault_service: FaultService,
) -> None:
    svc = fault_service
    # A lease longer than the outage with room to spare on a loaded machine (the stop, the
    # 2.5 s of requests, the start and the reconnect): the run must live through it.
    svc.start_worker("worker-1", lease_ttl_s=20.0)
    running = svc.submit(max_steps=30, checkpoint_interval=10)
    queued = svc.submit(max_steps=10, checkpoint_interval=5)
    child = svc.hold_at_step(running, 3)

    svc.pg.stop()
    os.kill(child, signal.SIGCONT)  # it trains on through the outage
    answers = []
    down_until = time.monotonic() + 2.5
    while time.monotonic() < down_until:
        answers.append(svc.http("GET", f"/fine_tuning/jobs/{running}"))
        time.sleep(0.2)
    answers.append(svc.http("POST", f"/fine_tuning/jobs/{queued}/cancel"))
    svc.pg.start()

    assert {r.status_code for r in answers} == {503}
    assert all(r.json()["error"]["code"] == "service_unavailable" for r in answers)
    assert answers[-1].headers["retry-after"]
    svc.wait_for(
        "the API to recover", lambda: svc.http("GET", f"/fine_tuning/jobs/{running}").is_success
    )
    for job_id in (running, queued):
        job = svc.wait_terminal(job_id)
        assert job.status == "succeeded" and job.attempt == 1, (job.error, svc.logs())
    assert svc.metric_steps(running) == list(range(1, 31))
    check_invariants(svc.settings)


def test_sigstop_past_the_lease_then_sigcont_the_zombie_is_refused(
    fault_service: FaultService,
) -> None:
    svc = fault_service
    svc.start_worker("worker-1")
    svc.start_worker("worker-2")
    job_id = svc.submit(max_steps=30, checkpoint_interval=5)
    child = svc.hold_at_step(job_id, 2)
    frozen = svc.procs[svc.worker_of(job_id)]
    stale_token = svc.job(job_id).fencing_token
    # The whole worker freezes (a paused VM, a stuck host): supervisor and training process.
    os.killpg(frozen.pid, signal.SIGSTOP)

    def second_attempt_training() -> bool:
        job = svc.job(job_id)
        seen_claim = False
        for event in svc.events(job_id):
            data = event.data or {}
            seen_claim = seen_claim or data.get("fencing_token", 0) > stale_token
            if seen_claim and event.message.startswith("Step "):
                return job.attempt == 2
        return False

    svc.wait_for("the job to be reaped and trained by the other worker", second_attempt_training)
    os.killpg(child, signal.SIGCONT)
    os.killpg(frozen.pid, signal.SIGCONT)

    job = svc.wait_terminal(job_id)
    assert job.status == "succeeded" and job.attempt == 2, (job.error, svc.logs())
    svc.wait_for(
        "the zombie to record its refused write",
        lambda: any(REFUSED_WRITE in (e.data or {}) for e in svc.events(job_id)),
    )
    refused = [
        (e.data or {})[REFUSED_WRITE] for e in svc.events(job_id) if REFUSED_WRITE in (e.data or {})
    ]
    assert [r["fencing_token"] for r in refused] == [stale_token]
    assert child not in training_pids(svc.data_dir)  # its supervisor killed it on waking
    assert frozen.poll() is None  # the worker itself lives on
    assert svc.metric_steps(job_id) == list(range(1, 31))
    check_invariants(svc.settings)


def test_a_job_that_always_crashes_fails_after_max_attempts_and_others_run_on(
    fault_service: FaultService,
) -> None:
    svc = fault_service
    svc.start_worker("worker-1")
    svc.start_worker("worker-2")
    doomed = svc.submit(max_steps=500, checkpoint_interval=50)
    other = svc.submit(max_steps=20, checkpoint_interval=10)
    # Every attempt of `doomed` dies as if the kernel's OOM killer took it.
    deadline = time.monotonic() + 300
    while svc.job(doomed).status not in ("failed", "succeeded", "cancelled"):
        assert time.monotonic() < deadline, svc.logs()
        for pid in training_pids(svc.data_dir, doomed):
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)

    job = svc.job(doomed)
    assert job.status == "failed" and job.attempt == svc.settings.max_attempts == 3
    assert job.error is not None and job.error["code"] == "training_failed"
    assert job.error["message"] == "the training process was killed by SIGKILL (attempt 3 of 3)"
    job = svc.wait_terminal(other)
    assert job.status == "succeeded" and job.attempt == 1, (job.error, svc.logs())
    check_invariants(svc.settings)


def test_cancel_of_a_running_job_is_final_within_10s_with_no_orphan(
    fault_service: FaultService,
) -> None:
    svc = fault_service
    svc.start_worker("worker-1")
    job_id = svc.submit(max_steps=100_000, checkpoint_interval=50)
    svc.wait_step(job_id, 2)
    pid = svc.wait_training_pid(job_id)

    started = time.monotonic()
    assert svc.http("POST", f"/fine_tuning/jobs/{job_id}/cancel").status_code == 200
    svc.wait_for(
        "the job to be cancelled", lambda: svc.job(job_id).status == "cancelled", every=0.1
    )
    elapsed = time.monotonic() - started
    assert elapsed < 10.0, f"cancelled after {elapsed:.1f}s"
    assert training_pids(svc.data_dir) == []
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # gone, and reaped by its supervisor
    check_invariants(svc.settings)


def test_api_answers_503_while_the_database_cannot_be_reached(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from api.app import create_app
    from jobs.settings import Settings

    nowhere = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/lco"
    app = create_app(Settings(data_dir=tmp_path, database_url=nowhere))
    with TestClient(app, raise_server_exceptions=False) as client:
        for path in ("/healthz", "/v1/fine_tuning/jobs"):
            response = client.get(path, headers={"Authorization": f"Bearer lco-{'a' * 48}"})
            assert response.status_code == 503, response.text
            assert response.json()["error"]["code"] == "service_unavailable"
            assert response.headers["retry-after"]


@pytest.mark.slow
def test_soak_kill_9_at_random_steps_until_it_is_done(fault_service: FaultService) -> None:
    """Five crashes at random steps of one run, on two workers: every resume lands on the
    newest checkpoint and the redone steps reproduce the first reports (I5)."""
    svc = fault_service
    svc.start_worker("worker-1")
    svc.start_worker("worker-2")
    job_id = svc.submit(max_steps=120, checkpoint_interval=5)
    with svc.sessions() as session, session.begin():
        session.execute(update(Job).where(Job.id == job_id).values(max_attempts=10))
    rng = random.Random(5)
    for attempt in range(1, 6):
        target = _settled_step(svc, job_id) + rng.randint(1, 12)
        pid = svc.hold_at_step(job_id, min(target, 110), attempt=attempt)
        os.kill(pid, signal.SIGKILL)

    job = svc.wait_terminal(job_id, timeout=600)
    assert job.status == "succeeded" and job.attempt == 6, (job.error, svc.logs())
    assert len(_resumes(svc, job_id)) == 5
    assert svc.metric_steps(job_id) == list(range(1, 121))
    check_invariants(svc.settings)
