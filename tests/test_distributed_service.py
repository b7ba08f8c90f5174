"""A CPU worker told to run 2 gloo ranks (`LCO_WORKER_CPU_RANKS=2`) trains a job through
the real API, scheduler and worker; kill -9 of one rank mid-run ends the whole group, and
the job resumes from its last checkpoint on the next attempt and succeeds, with the
reliability invariants holding. Uses the private PostgreSQL and Redis of test_faults.py:

    pytest tests/test_distributed_service.py      # about 2 minutes on 2 busy cores
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from tests.fault_fixtures import FaultService
from tests.invariants import RESUMED, check_invariants

pytestmark = pytest.mark.e2e


def rank_pids(launcher: int) -> list[int]:
    """The ranks a training child (the launcher) started: its children that are not the
    launcher's own helpers (torchrun's rendezvous store runs in-process)."""
    try:
        text = Path(f"/proc/{launcher}/task/{launcher}/children").read_text()
    except OSError:
        return []
    pids = []
    for pid in (int(p) for p in text.split()):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        # Spawned ranks, not multiprocessing's resource tracker.
        if b"multiprocessing" in cmdline and b"resource_tracker" not in cmdline:
            pids.append(pid)
    return pids


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def test_two_cpu_ranks_survive_kill_9_of_one_rank(
    fault_service: FaultService, monkeypatch: pytest.MonkeyPatch
) -> None:
    svc = fault_service
    env = svc.env
    monkeypatch.setattr(svc, "env", lambda: {**env(), "LCO_WORKER_CPU_RANKS": "2"})
    svc.start_worker("worker-1")
    job_id = svc.submit(max_steps=12, checkpoint_interval=4)
    launcher = svc.wait_training_pid(job_id, attempt=1)
    svc.wait_for("its 2 ranks", lambda: len(rank_pids(launcher)) >= 2)
    ranks = rank_pids(launcher)
    metrics = svc.job_dir(job_id) / "metrics.jsonl"
    # Past the first checkpoint (step 4) and before the end: some steps will be redone.
    svc.wait_for(
        "step 5", lambda: metrics.exists() and metrics.read_bytes().count(b"\n") >= 5, every=0.01
    )
    # Freeze both ranks first, so a fast pair cannot train on to the end before the kill.
    for pid in ranks:
        os.kill(pid, signal.SIGSTOP)
    os.kill(ranks[1], signal.SIGKILL)
    os.kill(ranks[0], signal.SIGCONT)
    # torchrun's launcher ends the other rank and exits: nothing of attempt 1 survives.
    svc.wait_for("attempt 1's group to end", lambda: not any(map(alive, [launcher, *ranks])))

    job = svc.wait_terminal(job_id)
    assert job.status == "succeeded" and job.attempt == 2, (job.error, svc.logs())
    resumed = [e for e in svc.events(job_id) if e.message.startswith(RESUMED)]
    assert [int((e.data or {})["step"]) for e in resumed] in ([4], [8])
    assert svc.metric_steps(job_id) == list(range(1, 13))
    lines = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert [m["step"] for m in lines] == list(range(1, 13))
    assert {m["world_size"] for m in lines} == {2}
    time.sleep(0.5)
    assert not any(map(alive, [launcher, *ranks]))
    check_invariants(svc.settings)


def test_pause_then_resume_and_cancel_reach_every_rank(
    fault_service: FaultService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pause: rank 0 hears it and passes it on, all ranks checkpoint together and exit;
    resume continues with 2 ranks to the end. Cancel of another job ends its whole group."""
    svc = fault_service
    env = svc.env
    monkeypatch.setattr(svc, "env", lambda: {**env(), "LCO_WORKER_CPU_RANKS": "2"})
    svc.start_worker("worker-1")
    job_id = svc.submit(max_steps=150, checkpoint_interval=1000)
    svc.wait_step(job_id, 3)
    launcher = svc.wait_training_pid(job_id)
    ranks = rank_pids(launcher)
    assert len(ranks) == 2
    assert svc.http("POST", f"/fine_tuning/jobs/{job_id}/pause").status_code == 200
    svc.wait_for("the pause", lambda: svc.job(job_id).status == "paused")
    paused_at = svc.job(job_id).step
    assert paused_at in svc.checkpoint_steps(job_id)  # saved by all ranks before stopping
    svc.wait_for("the group to end", lambda: not any(map(alive, [launcher, *ranks])))
    assert svc.http("POST", f"/fine_tuning/jobs/{job_id}/resume").status_code == 200
    job = svc.wait_terminal(job_id)
    assert job.status == "succeeded", (job.error, svc.logs())
    assert svc.metric_steps(job_id) == list(range(1, 151))

    doomed = svc.submit(max_steps=100_000, checkpoint_interval=1000)
    svc.wait_step(doomed, 2)
    launcher = svc.wait_training_pid(doomed)
    ranks = rank_pids(launcher)
    assert svc.http("POST", f"/fine_tuning/jobs/{doomed}/cancel").status_code == 200
    svc.wait_for("the cancel", lambda: svc.job(doomed).status == "cancelled", every=0.1)
    svc.wait_for("no rank left", lambda: not any(map(alive, [launcher, *ranks])), timeout=20)
    check_invariants(svc.settings)
