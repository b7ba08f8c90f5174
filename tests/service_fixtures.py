"""Fixtures and helpers for the service tests (API, job store, workers, live server).

Import what a test needs: `from tests.service_fixtures import api, sqlite_settings, ...`.
Every test gets its own data dir and database: SQLite under tmp_path, or a fresh
PostgreSQL database `lco_test_<random>` (dropped afterwards) and a dedicated Redis db.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from openai import OpenAI

from jobs.auth import create_api_key, create_team
from jobs.db import make_engine, make_session_factory, transaction
from jobs.migrate import upgrade
from jobs.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
REDIS_URL = "redis://127.0.0.1:6379/11"

# Fast control loops so tests see leases, stops and re-dispatches within seconds.
FAST = {
    "lease_ttl_s": 5.0,
    "heartbeat_s": 1.0,
    "poll_s": 0.2,
    "stop_grace_s": 20.0,
    "retry_backoff_s": 0.0,
    "redispatch_after_s": 30.0,
    "reconcile_every_s": 1.0,
}


def fast_settings(data_dir: Path, **overrides: Any) -> Settings:
    return Settings(data_dir=data_dir, **{**FAST, **overrides})


def settings_env(settings: Settings) -> dict[str, str]:
    """The LCO_* environment that reproduces `settings` in a subprocess."""
    # Drop the caller's service settings (keep others, e.g. LCO_ROLLOUT_ENGINE).
    fields = {f"LCO_{name.upper()}" for name in Settings.model_fields}
    env = {k: v for k, v in os.environ.items() if k not in fields}
    env["LCO_DATA_DIR"] = str(settings.data_dir.resolve())
    if settings.database_url:
        env["LCO_DATABASE_URL"] = settings.database_url
    if settings.broker_url:
        env["LCO_BROKER_URL"] = settings.broker_url
    for key in FAST:
        env[f"LCO_{key.upper()}"] = str(getattr(settings, key))
    env["LCO_MAX_UPLOAD_BYTES"] = str(settings.max_upload_bytes)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def new_key(settings: Settings, team: str) -> str:
    with transaction(make_session_factory(make_engine(settings))) as session:
        row = create_team(session, team)
        _, key = create_api_key(session, row)
    return key


@pytest.fixture
def sqlite_settings(tmp_path: Path) -> Settings:
    settings = fast_settings(tmp_path / "data")
    upgrade(settings)
    return settings


# -- PostgreSQL and Redis ------------------------------------------------------------------------
def pg_available() -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", 5432), timeout=1):
        return True
    return False


def redis_available() -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", 6379), timeout=1):
        return True
    return False


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for this test; dropped afterwards."""
    if not pg_available():
        pytest.skip("PostgreSQL is not running on 127.0.0.1:5432")
    import psycopg

    name = f"lco_test_{secrets.token_hex(6)}"
    with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(
            "host=127.0.0.1 user=postgres dbname=postgres", autocommit=True
        ) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A dedicated Redis db number, flushed before and after."""
    if not redis_available():
        pytest.skip("Redis is not running on 127.0.0.1:6379")
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    try:
        yield REDIS_URL
    finally:
        client.flushdb()
        client.close()


# -- in-process API client ---------------------------------------------------------------------
@dataclass
class ApiClient:
    """A TestClient with one team's key, plus a second team for tenancy checks."""

    client: TestClient
    settings: Settings
    key: str
    other_key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    @property
    def other_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.other_key}"}

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return self.client.get(path, headers=kw.pop("headers", self.headers), **kw)

    def post(self, path: str, **kw: Any) -> httpx.Response:
        return self.client.post(path, headers=kw.pop("headers", self.headers), **kw)

    def delete(self, path: str, **kw: Any) -> httpx.Response:
        return self.client.delete(path, headers=kw.pop("headers", self.headers), **kw)

    def upload(self, data: bytes, name: str = "train.jsonl", **kw: Any) -> httpx.Response:
        return self.post(
            "/v1/files", files={"file": (name, data)}, data={"purpose": "fine-tune"}, **kw
        )


def register_worker(
    settings: Settings, *, gpus: int, pool: str = "default", hours: float = 0
) -> None:
    """A worker row as a heartbeat writes it; `hours` dates the beat ahead, so a worker
    without a process stays live for a whole test."""
    from datetime import timedelta

    from jobs.ids import utcnow
    from jobs.workers import beat

    with transaction(make_session_factory(make_engine(settings))) as session:
        now = utcnow() + timedelta(hours=hours)
        beat(session, worker_id=f"test-worker-{pool}", pool=pool, gpus=gpus, now=now)


@pytest.fixture
def api(sqlite_settings: Settings) -> Iterator[ApiClient]:
    """The app in-process, with two teams and an 8-GPU worker registered in the default
    pool (no process behind it: tests run jobs with `worker.tasks.run_job`), so submitted
    jobs are admitted as in a deployment."""
    from api.app import create_app

    register_worker(sqlite_settings, gpus=8, hours=24)
    key, other = new_key(sqlite_settings, "team-a"), new_key(sqlite_settings, "team-b")
    with TestClient(create_app(sqlite_settings), raise_server_exceptions=False) as client:
        yield ApiClient(client, sqlite_settings, key, other)


def sft_lines(n: int = 4) -> bytes:
    rows = [
        {
            "messages": [
                {"role": "user", "content": f"{i}+1?"},
                {"role": "assistant", "content": str(i + 1)},
            ]
        }
        for i in range(n)
    ]
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def rl_lines(n: int = 4) -> bytes:
    rows = [
        {"messages": [{"role": "user", "content": f"{i}+1?"}], "answer": str(i + 1)}
        for i in range(n)
    ]
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


STRING_CHECK = {
    "type": "string_check",
    "name": "exact",
    "input": "{{sample.output_text}}",
    "reference": "{{item.answer}}",
    "operation": "eq",
}


def sft_body(file_id: str, **hp: Any) -> dict[str, Any]:
    return {
        "model": "lco-tiny",
        "training_file": file_id,
        "method": {"type": "supervised", "supervised": {"hyperparameters": {"max_steps": 3, **hp}}},
    }


# -- live server -----------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LiveService:
    """Processes started for one live test; stopped (process groups killed) at teardown."""

    base_url: str
    settings: Settings
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)

    def start(self, argv: list[str], log: Path) -> None:
        out = log.open("wb")
        self.procs.append(
            subprocess.Popen(
                argv,
                env=settings_env(self.settings),
                cwd=str(ROOT),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
        self.logs.append(log)

    def wait_healthy(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for proc, log in zip(self.procs, self.logs, strict=True):
                if proc.poll() is not None:
                    raise RuntimeError(f"{proc.args} exited:\n{log.read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if (
                    httpx.get(self.base_url.removesuffix("/v1") + "/healthz", timeout=2).status_code
                    == 200
                ):
                    return
            time.sleep(0.3)
        raise TimeoutError("the service did not become healthy")

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)

    def dump_logs(self) -> str:
        return "\n".join(
            f"== {log.name}\n{log.read_text()[-4000:]}" for log in self.logs if log.exists()
        )


def lco_cli(settings: Settings, *args: str, timeout: float = 120) -> str:
    """Run `lco ARGS` against `settings` in a subprocess; its stdout."""
    result = subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def cli_key(settings: Settings, team: str) -> str:
    """A new team and its first key, made with the CLI as an operator would."""
    lco_cli(settings, "team", "create", team)
    return lco_cli(settings, "key", "create", "--team", team).strip().splitlines()[-1]


@pytest.fixture
def embedded(tmp_path: Path, tiny_model_path: Path) -> Iterator[tuple[LiveService, str]]:
    """`lco serve` (SQLite, filesystem broker, one worker) on a free port, and a key."""
    settings = fast_settings(tmp_path / "data")
    lco_cli(settings, "migrate")  # as an operator would before making teams and keys
    key = cli_key(settings, "live")
    with lco_serve(settings, tmp_path / "serve.log") as service:
        yield service, key


@contextlib.contextmanager
def lco_serve(settings: Settings, log: Path) -> Iterator[LiveService]:
    """`lco serve` with `settings` on a free port, answering; stopped (with its worker) on exit."""
    port = free_port()
    service = LiveService(f"http://127.0.0.1:{port}/v1", settings)
    service.start([sys.executable, "-m", "cli.main", "serve", "--port", str(port)], log)
    try:
        service.wait_healthy()
        yield service
    finally:
        service.stop()


def jsonl(items: list[dict[str, Any]]) -> bytes:
    """Items as an uploadable JSONL body."""
    return "".join(json.dumps(item) + "\n" for item in items).encode()


def wait_for_job(
    client: OpenAI,
    job_id: str,
    statuses: set[str],
    service: LiveService,
    timeout: float = 300,
    min_step: int = 0,
) -> Any:
    """Poll until the job reaches one of `statuses` (and `min_step`); fail on any other end."""
    deadline = time.monotonic() + timeout
    while True:
        job = client.fine_tuning.jobs.retrieve(job_id)
        step = (job.model_extra or {}).get("progress", {}).get("step", 0)
        if job.status in statuses and step >= min_step:
            return job
        if job.status in {"failed", "cancelled", "succeeded"} - statuses:
            pytest.fail(f"{job_id} ended {job.status}: {job.error}\n{service.dump_logs()}")
        if time.monotonic() > deadline:
            pytest.fail(f"{job_id} still {job.status} after {timeout}s\n{service.dump_logs()}")
        time.sleep(0.5)
