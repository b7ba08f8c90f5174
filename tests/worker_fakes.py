"""Scripted training children for worker tests (no torch): `fake_run_job` behaves like the
real core on a timer (FAKE_CHILD); `limits_run_job` adds runs that break a limit
(LIMITS_CHILD). Only light modules are imported here (the standard library,
`lco_core.result`, `lco_spec.errors`; no fastapi, openai or torch), so a child starts in a
fraction of a second and a test's clocks measure the run, not imports.

`spec.metadata["fake"]` picks the script:
    stall       reports step 1, then makes no progress (a hung grader, say)
    hog         reports step 1, then allocates 64 MiB blocks until memory runs out
    oom_killed  reports step 1, then dies of SIGKILL (what the kernel's OOM killer does)
    no_ckpt     like ok, without checkpoints (so I3 holds for a fake run)
anything else: fake_run_job's scripts (ok, crash, user_error, hang).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from lco_core.result import STATUS_FOR_STOP, RunResult
from lco_spec.errors import SpecError

_HOLD_S = 60.0


def fake_run_job(spec: Any, *, output_dir: Path, callbacks: Any, **_: Any) -> RunResult:
    """Behaves like lco_core.runner.run_job on a timer. `spec.metadata["fake"]` picks a script:
    ok (default), crash (exit without a result), user_error, hang (ignores stop requests).

    `hold_steps` ("2,4"): after finishing one of these steps (not one it resumed past) the run
    waits, up to `_HOLD_S`, for a stop request. A test that stops a run mid-way holds it there,
    so the stop cannot lose a race with the run's last step on a slow machine."""
    mode = (spec.metadata or {}).get("fake", "ok")
    steps = int((spec.metadata or {}).get("steps", "4"))
    delay = float((spec.metadata or {}).get("delay", "0.3"))
    ckpts = output_dir / "checkpoints"
    start = 0
    if ckpts.is_dir():  # resume from the newest checkpoint, like the real core
        done = sorted(int(p.name.split("-")[1]) for p in ckpts.glob("step-*"))
        start = done[-1] if done else 0
    if mode == "user_error":
        raise SpecError("the dataset has no field 'answer'", param="training_file")
    # Like the real core: a model-preparation phase first (`prepare_s` long), then training.
    callbacks.on_phase("preparing_model", f"loading the fake model {spec.model}")
    time.sleep(float((spec.metadata or {}).get("prepare_s", "0")))
    callbacks.on_phase("training", f"training from step {start} of {steps}")
    callbacks.on_event(
        "info", "fake run starting", {"start": start, "config": {"total_steps": steps}}
    )
    holds = {int(k) for k in (spec.metadata or {}).get("hold_steps", "").split(",") if k}
    final = None
    for step in range(start + 1, steps + 1):
        if mode != "hang":
            reason = callbacks.should_stop()
            if reason is not None:
                return RunResult(STATUS_FOR_STOP[reason], step - 1, steps, final)
        time.sleep(delay)
        if mode == "crash" and step == 2:
            os._exit(3)
        callbacks.on_metrics(step, {"loss": 1.0 / step})
        if step % 2 == 0 or step == steps:
            final = ckpts / f"step-{step}"
            final.mkdir(parents=True, exist_ok=True)
            (final / "config.json").write_text(json.dumps({"step": step}))
            callbacks.on_checkpoint(final, step, {"loss": 1.0 / step})
        if step in holds:
            held_until = time.monotonic() + _HOLD_S
            while callbacks.should_stop() is None and time.monotonic() < held_until:
                time.sleep(0.02)
    return RunResult(
        "succeeded", steps, steps, final, trained_tokens=10 * steps, summary={"loss": 0.25}
    )


FAKE_CHILD = [
    sys.executable,
    "-c",
    "import sys; from tests.worker_fakes import fake_run_job; "
    "from worker.child import main; sys.exit(main(sys.argv[1:], run=fake_run_job))",
]


def limits_run_job(spec: Any, *, output_dir: Path, callbacks: Any, **kw: Any) -> RunResult:
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
            return RunResult(STATUS_FOR_STOP[reason], step - 1, steps, None)
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
    return RunResult("succeeded", steps, steps, None, trained_tokens=10 * steps)


LIMITS_CHILD = [
    sys.executable,
    "-c",
    "import sys; from tests.worker_fakes import limits_run_job; "
    "from worker.child import main; sys.exit(main(sys.argv[1:], run=limits_run_job))",
]
