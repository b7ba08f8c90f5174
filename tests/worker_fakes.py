"""Scripted training children for the worker's limit tests (no torch): the plumbing of
tests.service_fixtures.fake_run_job, plus runs that break a limit.

`spec.metadata["fake"]` picks the script:
    stall       reports step 1, then makes no progress (a hung grader, say)
    hog         reports step 1, then allocates 64 MiB blocks until memory runs out
    oom_killed  reports step 1, then dies of SIGKILL (what the kernel's OOM killer does)
    no_ckpt     like ok, without checkpoints (so I3 holds for a fake run)
anything else: fake_run_job's scripts (ok, crash, user_error, hang).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from tests.service_fixtures import FakeResult, fake_run_job


def limits_run_job(spec: Any, *, output_dir: Path, callbacks: Any, **kw: Any) -> FakeResult:
    metadata = spec.metadata or {}
    mode = metadata.get("fake", "ok")
    steps = int(metadata.get("steps", "4"))
    delay = float(metadata.get("delay", "0.05"))
    if mode not in ("stall", "hog", "oom_killed", "no_ckpt"):
        return fake_run_job(spec, output_dir=output_dir, callbacks=callbacks, **kw)
    callbacks.on_phase("training", "training from step 0")
    for step in range(1, steps + 1):
        reason = callbacks.should_stop()
        if reason is not None:  # stops between steps like the real core (no checkpoint)
            status = {"cancel": "cancelled", "pause": "paused", "preempt": "preempted"}[reason]
            return FakeResult(status, step - 1, steps, None)
        time.sleep(delay)
        callbacks.on_metrics(step, {"loss": 1.0 / step, "total_steps": steps})
        if mode == "stall":
            time.sleep(3600)
        elif mode == "hog":
            blocks = []
            while True:
                blocks.append(bytearray(64 * 1024 * 1024))
        elif mode == "oom_killed":
            os.kill(os.getpid(), signal.SIGKILL)
    return FakeResult("succeeded", steps, steps, None, trained_tokens=10 * steps)


LIMITS_CHILD = [
    sys.executable,
    "-c",
    "import sys; from tests.worker_fakes import limits_run_job; "
    "from worker.child import main; sys.exit(main(sys.argv[1:], run=limits_run_job))",
]
