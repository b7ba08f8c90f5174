"""`lco serve` (the embedded default) owns its worker: stopping serve, by SIGTERM or
SIGKILL, stops the worker too; nothing is left behind."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

from tests.service_fixtures import fast_settings, lco_serve


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found += [int(c) for c in text]
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except FileNotFoundError:
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_stopping_serve_stops_its_worker(tmp_path: Path, sig: signal.Signals) -> None:
    with lco_serve(fast_settings(tmp_path / "data"), tmp_path / "serve.log") as service:
        serve = service.procs[0]
        workers = _children(serve.pid)
        assert len(workers) == 1
        os.kill(serve.pid, sig)
        serve.wait(timeout=30)
        deadline = time.monotonic() + 30
        while _alive(workers[0]):
            assert time.monotonic() < deadline, service.dump_logs()
            time.sleep(0.2)
