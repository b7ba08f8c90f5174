"""The `lco` command's behaviour at its edges: a reader that goes away. Each test runs `lco`
in a subprocess, as a user's shell would.

    .venv/bin/python -m pytest tests/test_cli.py -q
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.service_fixtures import ROOT

JOB = {"id": "ftjob-1", "object": "fine_tuning.job", "status": "running", "model": "lco-tiny"}


class _JobHandler(BaseHTTPRequestHandler):
    """Answers every GET with a job, as the service would for `lco jobs get`."""

    def do_GET(self) -> None:
        body = json.dumps(JOB).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

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


def lco(*args: str, cwd: Path = ROOT, **kw: Any) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        cwd=cwd,
        env=env,
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
            stdout=write, stderr=subprocess.PIPE,
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
