"""Every process type writes JSON log lines that name the job they are about: the scheduler
(`lco scheduler`) and the training process (the API's and the worker's own lines are in
tests/test_api_logs.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.service_fixtures import ApiClient, settings_env, sft_body, sft_lines
from worker.context import WorkerContext
from worker.tasks import run_job


def _json_lines(text: str) -> list[dict[str, Any]]:
    out = []
    for line in text.splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def _submit(api: ApiClient) -> str:
    file_id = api.upload(sft_lines()).json()["id"]
    response = api.post("/v1/fine_tuning/jobs", json=sft_body(file_id))
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


def test_the_scheduler_logs_json_naming_the_job_it_dispatches(
    api: ApiClient, tmp_path: Path
) -> None:
    job_id = _submit(api)
    log = tmp_path / "scheduler.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "scheduler"],
            env=settings_env(api.settings), stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                lines = _json_lines(log.read_text())
                if any(r.get("job_id") == job_id for r in lines):
                    break
                time.sleep(0.5)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    lines = _json_lines(log.read_text())
    dispatched = [r for r in lines if r.get("message") == "job.dispatched"]
    assert dispatched and dispatched[0]["job_id"] == job_id, log.read_text()[-2000:]
    assert {"time", "level", "logger"} <= set(dispatched[0])


def test_the_training_process_logs_json_with_the_job_and_attempt(api: ApiClient) -> None:
    job_id = _submit(api)
    assert run_job(WorkerContext(api.settings), job_id) is True
    assert api.get(f"/v1/fine_tuning/jobs/{job_id}").json()["status"] == "succeeded"
    logs = list(api.settings.data_dir.glob(f"teams/*/jobs/{job_id}/logs/attempt-1.log"))
    assert len(logs) == 1
    lines = [r for r in _json_lines(logs[0].read_text()) if r.get("logger") == "lco_core.trainer"]
    assert lines, logs[0].read_text()[-2000:]
    assert lines[0]["job_id"] == job_id and lines[0]["attempt"] == 1
    assert isinstance(lines[0]["fencing_token"], int)
