"""The `lco` command's behaviour at its edges: a reader that goes away, a service that is not
running. Each test runs `lco` in a subprocess, as a user's shell would.

    .venv/bin/python -m pytest tests/test_cli.py -q
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

from cli.client import progress_line
from jobs.settings import Settings
from tests.background import Background
from tests.service_fixtures import ROOT, free_port

JOB = {"id": "ftjob-1", "object": "fine_tuning.job", "status": "running", "model": "lco-tiny"}


class _JobHandler(BaseHTTPRequestHandler):
    """Answers every GET with a job, as the service would for `lco jobs get`; the job's
    stream sends the job once, then only keepalives (a job that does not move)."""

    def do_GET(self) -> None:
        if self.path.endswith("/stream"):
            self._stream()
            return
        body = json.dumps(JOB).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _stream(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        message = f"event: job\ndata: {json.dumps(JOB)}\n\n"
        deadline = time.monotonic() + 60
        try:
            while time.monotonic() < deadline:  # until the client goes
                self.wfile.write(message.encode())
                self.wfile.flush()
                message = ": keepalive\n\n"
                time.sleep(0.2)
        except OSError:
            pass

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def stub_service() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _JobHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


def lco(
    *args: str, cwd: Path = ROOT, env: dict[str, str] | None = None, **kw: Any
) -> subprocess.CompletedProcess[str]:
    """`lco ARGS` in a subprocess, without the caller's service settings (LCO_DATA_DIR, ...)
    unless `env` gives them; output captured unless `kw` says otherwise."""
    kw.setdefault("stdout", subprocess.PIPE)
    kw.setdefault("stderr", subprocess.PIPE)
    service = {f"LCO_{name.upper()}" for name in Settings.model_fields}
    base = {k: v for k, v in os.environ.items() if k not in service}
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        cwd=cwd,
        env={**base, "PYTHONPATH": str(ROOT), **(env or {})},
        text=True,
        timeout=60,
        check=False,
        **kw,
    )


def test_output_into_a_closed_pipe_exits_quietly(stub_service: str) -> None:
    """`lco jobs get ID | head -c1`: the reader is gone before lco writes (read end closed),
    so the write fails for certain; lco exits like a process killed by SIGPIPE, no traceback."""
    read, write = os.pipe()
    os.close(read)
    try:
        result = lco(
            "jobs", "get", "ftjob-1", "--base-url", stub_service, "--api-key", "k",
            stdout=write,
        )  # fmt: skip
    finally:
        os.close(write)
    assert result.returncode == 141, result.stderr
    assert result.stderr == ""


def test_output_into_head_is_complete_and_quiet(stub_service: str) -> None:
    result = subprocess.run(
        f"{sys.executable} -m cli.main jobs get ftjob-1 --base-url {stub_service} "
        "--api-key k | head -c1",
        shell=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.stdout == "{"
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "command",
    [
        ["jobs", "get", "ftjob-1"],
        ["jobs", "list"],
        ["jobs", "list", "--json"],
        ["jobs", "watch", "ftjob-1"],
        ["jobs", "events", "ftjob-1", "--json"],
        ["jobs", "download", "ftjob-1"],
        ["files", "list", "--json"],
        ["pools"],
    ],
)
def test_a_service_that_is_not_running_is_named_in_one_line(command: list[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    result = lco(*command, env={"LCO_BASE_URL": url, "LCO_API_KEY": "k"})
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: cannot reach the service at {url}: ")
    assert "Connection refused" in line and line.endswith("is `lco serve` running?")


# -- the database: named, and made only by `lco serve` and `lco migrate` ----------------------
@pytest.mark.parametrize(
    "command",
    [
        ["team", "list"],
        ["team", "create", "nlp"],
        ["team", "set", "nlp", "--share", "2"],
        ["key", "create", "--team", "nlp"],
        ["key", "list"],
        ["key", "revoke", "key-1"],
        ["scheduler"],
        ["worker"],
    ],
)
def test_commands_refuse_to_create_the_database(tmp_path: Path, command: list[str]) -> None:
    """Run from a directory without one, a server-side command says which database it
    would use, makes nothing, and tells how to create one or point at another."""
    result = lco(*command, cwd=tmp_path)
    db = tmp_path / "data" / "lco.db"
    assert result.returncode == 1, result.stderr
    assert result.stderr.splitlines() == [
        f"database: sqlite:///{db}",
        f"error: no database at {db}: create it with `lco migrate --data-dir {db.parent}`, "
        "or point at an existing one with --data-dir DIR (or LCO_DATA_DIR)",
    ]
    assert not (tmp_path / "data").exists()


def test_migrate_creates_the_database_the_other_commands_then_use(tmp_path: Path) -> None:
    data = tmp_path / "elsewhere"
    db_line = f"database: sqlite:///{data / 'lco.db'}"
    migrated = lco("migrate", "--data-dir", str(data), cwd=tmp_path)
    assert migrated.returncode == 0 and migrated.stderr.splitlines() == [db_line]
    created = lco("team", "create", "nlp", "--data-dir", str(data), cwd=tmp_path)
    assert created.returncode == 0 and created.stderr.splitlines() == [db_line]
    assert created.stdout.startswith("created team nlp")
    listed = lco("team", "list", cwd=tmp_path, env={"LCO_DATA_DIR": str(data)})
    assert listed.stdout.startswith("nlp (") and listed.stderr.splitlines() == [db_line]


def test_teams_made_by_the_cli_get_a_queued_jobs_bound_unless_told_otherwise(
    tmp_path: Path,
) -> None:
    assert lco("migrate", "--data-dir", str(tmp_path)).returncode == 0
    assert lco("team", "create", "default", "--data-dir", str(tmp_path)).returncode == 0
    unbounded = lco(
        "team", "create", "open", "--max-queued-jobs", "none", "--data-dir", str(tmp_path)
    )
    assert unbounded.returncode == 0
    bad = lco("team", "create", "x", "--max-queued-jobs", "lots", "--data-dir", str(tmp_path))
    assert bad.returncode == 2  # a usage error, before the database is touched
    assert "'lots' is neither a whole number nor `none`" in bad.stderr.splitlines()[-1]
    teams = lco("team", "list", "--data-dir", str(tmp_path)).stdout.splitlines()
    assert [line.split()[0] for line in teams] == ["default", "open"]
    assert "max_queued_jobs=100 " in teams[0] and "max_queued_jobs=None " in teams[1]


def test_a_database_error_mid_command_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import jobs.auth
    from cli.main import main

    def gone(session: Any) -> None:
        raise OperationalError("SELECT ...", {}, Exception("server closed the connection"))

    assert lco("migrate", "--data-dir", str(tmp_path)).returncode == 0
    monkeypatch.setattr(jobs.auth, "list_teams", gone)
    monkeypatch.setenv("LCO_DATA_DIR", str(tmp_path))  # not --data-dir: it would stay set
    assert main(["team", "list"]) == 1
    assert capsys.readouterr().err.splitlines()[-1] == (
        "error: database: server closed the connection"
    )


def test_an_empty_database_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "lco.db").touch()
    result = lco("team", "list", "--data-dir", str(tmp_path))
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == (
        f"error: the database sqlite:///{tmp_path / 'lco.db'} has no tables: create it with "
        f"`lco migrate --data-dir {tmp_path}`, or point at an existing one with --data-dir DIR "
        "(or LCO_DATA_DIR)"
    )


def test_ctrl_c_while_watching_ends_in_one_line(stub_service: str, tmp_path: Path) -> None:
    service = {f"LCO_{name.upper()}" for name in Settings.model_fields}
    env = {k: v for k, v in os.environ.items() if k not in service}
    watch = Background.start(
        [sys.executable, "-m", "cli.main", "jobs", "watch", "ftjob-1", "--base-url",
         stub_service, "--api-key", "k"],
        cwd=ROOT, env={**env, "PYTHONPATH": str(ROOT)}, logs=tmp_path,
    )  # fmt: skip
    try:
        assert watch.first_line().startswith("running")  # it is watching
        watch.proc.send_signal(signal.SIGINT)
        assert watch.wait() == 130, watch.stderr
    finally:
        watch.kill()
    assert watch.stderr.strip() == "interrupted"


def test_progress_lines_show_the_phase_then_steps_with_the_headline_metrics() -> None:
    queued = {"status": "queued", "progress": {"step": 0, "total_steps": None},
              "status_details": {"phase": "queued", "reason": "waiting_for_worker"}}  # fmt: skip
    assert progress_line(queued) == "queued    queued (waiting_for_worker)"
    preparing = {"status": "running", "progress": {"step": 0},
                 "status_details": {"phase": "preparing_model",
                                    "message": "loading lco-tiny onto cpu"}}  # fmt: skip
    assert progress_line(preparing) == "running   preparing_model (loading lco-tiny onto cpu)"
    running = {"status": "running", "progress": {"step": 5, "total_steps": 32}}
    metrics = {"advantage_abs_mean": 0.7, "loss": 0.25, "reward_mean": 0.5, "note": "x"}
    assert progress_line(running, metrics) == "running   step 5/32  reward_mean=0.5  loss=0.25"
