"""Fixtures for the fault-injection suite (tests/test_faults.py): a private PostgreSQL
cluster and a private Redis server that a test may stop, restart or flush without touching
the machine's shared services, and a live service (API, scheduler, worker processes) on
them that trains `lco-tiny` for real.

    def test_x(fault_service: FaultService) -> None:
        fault_service.start_worker("worker-1")
        job_id = fault_service.submit(max_steps=20)
        pid = fault_service.wait_training_pid(job_id)
        os.kill(pid, signal.SIGKILL)

The cluster and the Redis server live for the module; each test gets a fresh database, a
flushed Redis and its own data dir. Teardown kills every process the test started (their
process groups) and any training process left behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from glob import glob
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from jobs.db import make_engine, make_session_factory
from jobs.migrate import upgrade
from jobs.models import Checkpoint, Job, JobEvent, JobMetric
from jobs.settings import Settings
from jobs.states import is_terminal
from tests.invariants import training_pids
from tests.service_fixtures import ROOT, fast_settings, free_port, new_key, settings_env

# Short leases and loops so a lost worker is noticed in seconds, on a loaded 2-core machine.
FAULT_SETTINGS: dict[str, Any] = {
    "lease_ttl_s": 6.0,
    "heartbeat_s": 1.0,
    "poll_s": 0.2,
    "stop_grace_s": 20.0,
    "retry_backoff_s": 0.0,
    "redispatch_after_s": 5.0,
    "reconcile_every_s": 1.0,
    "max_attempts": 3,
    "worker_ttl_s": 10.0,
}


def _which_pg_bin() -> Path | None:
    found = sorted(glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


class PgCluster:
    """A throwaway PostgreSQL cluster on a free port (trust auth, fsync off). PostgreSQL
    refuses to run as root, so as root it runs as the `postgres` user."""

    def __init__(self, bindir: Path):
        self.bindir = bindir
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="lco-faults-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            self._as_user = ["runuser", "-u", "postgres", "--"]
            os.chmod(self.root, 0o755)
            shutil.chown(self.root, "postgres")
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run(
            [*self._as_user, str(self.bindir / tool), *args],
            check=True,
            capture_output=True,
            timeout=120,
        )

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.log), "-w", "start")

    def stop(self) -> None:
        """A fast shutdown: open connections are terminated, as in a real restart."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def url(self, dbname: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{dbname}"

    def create_database(self) -> str:
        import psycopg

        name = f"lco_faults_{secrets.token_hex(4)}"
        dsn = f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres"
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def destroy(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired):
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)


class RedisServer:
    """A throwaway Redis on a free port that keeps nothing on disk (a restart loses all)."""

    def __init__(self, binary: str):
        self.binary = binary
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="lco-faults-redis-"))
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        subprocess.run(
            [
                self.binary,
                "--daemonize",
                "yes",
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.dir),
                "--logfile",
                str(self.dir / "redis.log"),
                "--pidfile",
                str(self.dir / "redis.pid"),
            ],
            check=True,
            timeout=30,
        )
        self._wait(up=True)

    def command(self, line: str) -> bytes:
        """One inline command over a plain socket (redis-py's client retries on refused
        connections, which makes "is it down yet?" take seconds)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as conn:
            conn.sendall(line.encode() + b"\r\n")
            return conn.recv(1024)

    def alive(self) -> bool:
        try:
            return self.command("PING").startswith(b"+PONG")
        except OSError:
            return False

    def _wait(self, *, up: bool, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while self.alive() != up:
            if time.monotonic() > deadline:
                raise TimeoutError(f"redis on port {self.port} did not go {'up' if up else 'down'}")
            time.sleep(0.02)

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.command("SHUTDOWN NOSAVE")
        self._wait(up=False)

    def restart(self) -> None:
        self.stop()
        self.start()

    def flushall(self) -> None:
        assert self.command("FLUSHALL").startswith(b"+OK")

    def destroy(self) -> None:
        with contextlib.suppress(Exception):
            self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def fault_pg() -> Iterator[PgCluster]:
    bindir = _which_pg_bin()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    cluster = PgCluster(bindir)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture(scope="module")
def fault_redis() -> Iterator[RedisServer]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    server = RedisServer(binary)
    try:
        server.start()
        yield server
    finally:
        server.destroy()


# -- the live service ----------------------------------------------------------------------
@dataclass
class FaultService:
    """API, scheduler and workers (real processes) on the private PostgreSQL and Redis."""

    settings: Settings
    tmp_path: Path
    pg: PgCluster
    redis: RedisServer
    key: str = ""
    api_port: int = 0
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _sessions: sessionmaker[Session] | None = None
    _file_id: str | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}/v1"

    @property
    def data_dir(self) -> Path:
        return self.settings.data_dir

    @property
    def sessions(self) -> sessionmaker[Session]:
        if self._sessions is None:
            # pre-ping: the tests restart the database under this pool.
            self._sessions = make_session_factory(make_engine(self.settings))
        return self._sessions

    def env(self) -> dict[str, str]:
        env = settings_env(self.settings)
        for key in FAULT_SETTINGS:
            env[f"LCO_{key.upper()}"] = str(getattr(self.settings, key))
        env["LCO_DEVICE"] = "cpu"
        return env

    def start(
        self, name: str, argv: list[str], env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        log = (self.tmp_path / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            [sys.executable, *argv],
            env={**self.env(), **(env or {})},
            cwd=str(ROOT),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.procs[name] = proc
        return proc

    def start_api_and_scheduler(self) -> None:
        self.api_port = free_port()
        self.start(
            "api",
            [
                "-m",
                "uvicorn",
                "--factory",
                "api.app:create_app_from_env",
                "--port",
                str(self.api_port),
                "--log-level",
                "warning",
            ],
        )
        self.start("scheduler", ["-m", "cli.main", "scheduler"])
        deadline = time.monotonic() + 60
        while True:
            self._check_alive()
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{self.api_port}/healthz", timeout=2).is_success:
                    return
            assert time.monotonic() < deadline, "the API did not become healthy\n" + self.logs()
            time.sleep(0.2)

    def start_worker(self, name: str, **settings: float) -> subprocess.Popen[bytes]:
        """A worker process; `settings` (e.g. `lease_ttl_s=20.0`) override the fault
        settings for it alone."""
        env = {f"LCO_{key.upper()}": str(value) for key, value in settings.items()}
        return self.start(name, ["-m", "cli.main", "worker", "--pools", "default"], env)

    def worker_of(self, job_id: str) -> str:
        """The name of the worker process holding `job_id`'s lease."""
        owner = self.job(job_id).lease_owner or ""
        pid = int(owner.rsplit(":", 1)[-1]) if ":" in owner else -1
        for name, proc in self.procs.items():
            if proc.pid == pid:
                return name
        raise AssertionError(f"no worker of ours holds {job_id} (owner {owner!r})")

    def _check_alive(self) -> None:
        for name, proc in self.procs.items():
            if name in ("api", "scheduler") and proc.poll() is not None:
                raise AssertionError(f"{name} exited\n" + self.logs())

    def logs(self) -> str:
        parts = []
        for name in self.procs:
            path = self.tmp_path / f"{name}.log"
            if path.exists():
                parts.append(f"== {name}\n{path.read_text(errors='replace')[-3000:]}")
        return "\n".join(parts)

    def stop(self) -> None:
        """Kill everything at once: the test has checked what it wanted."""
        for proc in self.procs.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
        for proc in self.procs.values():
            proc.wait(timeout=30)
        for pid in training_pids(self.data_dir):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)

    # -- the API, as a user sees it ------------------------------------------------------------
    def http(self, method: str, path: str, **kw: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.key}"}
        return httpx.request(method, self.base_url + path, headers=headers, timeout=30, **kw)

    def training_file(self) -> str:
        if self._file_id is None:
            from lco_core.tasks import get_task, split_examples

            items, _ = split_examples(get_task("addition"), 32, 4, seed=0, supervised=True)
            data = "".join(json.dumps(item) + "\n" for item in items).encode()
            response = self.http(
                "POST", "/files", files={"file": ("sft.jsonl", data)}, data={"purpose": "fine-tune"}
            )
            assert response.status_code == 200, response.text
            self._file_id = str(response.json()["id"])
        return self._file_id

    def submit(self, *, max_steps: int, checkpoint_interval: int = 4) -> str:
        """An SFT job on lco-tiny (steps take about 0.1 s on an idle core), evaluated only
        before and after training (on 4 examples)."""
        hp = {
            "max_steps": max_steps,
            "batch_size": 4,
            "checkpoint_interval": checkpoint_interval,
            "eval_interval": 1000,
            "eval_samples": 4,
        }
        body = {
            "model": "lco-tiny",
            "training_file": self.training_file(),
            "seed": 7,
            "method": {"type": "supervised", "supervised": {"hyperparameters": hp}},
        }
        response = self.http("POST", "/fine_tuning/jobs", json=body)
        assert response.status_code == 200, response.text
        return str(response.json()["id"])

    # -- the database, as the truth ------------------------------------------------------------
    def job(self, job_id: str) -> Job:
        with self.sessions() as session:
            job = session.scalar(select(Job).where(Job.id == job_id))
            assert job is not None
            return job

    def events(self, job_id: str) -> list[JobEvent]:
        with self.sessions() as session:
            return list(
                session.scalars(
                    select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.pk)
                )
            )

    def messages(self, job_id: str) -> list[str]:
        return [e.message for e in self.events(job_id)]

    def metric_steps(self, job_id: str) -> list[int]:
        with self.sessions() as session:
            return list(
                session.scalars(
                    select(JobMetric.step).where(JobMetric.job_id == job_id).order_by(JobMetric.pk)
                )
            )

    def checkpoint_steps(self, job_id: str) -> list[int]:
        with self.sessions() as session:
            return sorted(
                session.scalars(select(Checkpoint.step_number).where(Checkpoint.job_id == job_id))
            )

    def job_dir(self, job_id: str) -> Path:
        from jobs.storage import Storage

        return Storage(self.settings).job_dir(self.job(job_id).team_id, job_id)

    def wait_for(
        self, what: str, predicate: Callable[[], bool], timeout: float = 240.0, every: float = 0.2
    ) -> None:
        """Poll until `predicate()`; fail with the service logs after `timeout` (a bound on
        a hang, not a timing assertion)."""
        deadline = time.monotonic() + timeout
        while not predicate():
            self._check_alive()
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}\n{self.logs()}")
            time.sleep(every)

    def wait_step(self, job_id: str, step: int) -> None:
        def reached() -> bool:
            job = self.job(job_id)
            assert not is_terminal(job.status), (job.status, job.error, self.logs())
            return job.status == "running" and job.step >= step

        self.wait_for(f"{job_id} to reach step {step}", reached)

    def wait_stop_sent(self, worker: str, job_id: str) -> None:
        """Until `worker`'s supervisor has written its stop request (preempt, cancel, pause)
        to `job_id`'s training process: its `job.stop_sent` log line. A test that froze the
        process thaws it after this, so the request is already waiting in the process's
        control pipe and cannot lose a race with the run's remaining steps."""
        path = self.tmp_path / f"{worker}.log"

        def sent() -> bool:
            for line in path.read_text(errors="replace").splitlines():
                with contextlib.suppress(ValueError):
                    record = json.loads(line)
                    if record.get("message") == "job.stop_sent" and (
                        record.get("job_id") == job_id
                    ):
                        return True
            return False

        self.wait_for(f"{worker} to send {job_id} a stop request", sent, every=0.05)

    def wait_terminal(self, job_id: str, timeout: float = 300.0) -> Job:
        self.wait_for(
            f"{job_id} to finish", lambda: is_terminal(self.job(job_id).status), timeout=timeout
        )
        return self.job(job_id)

    def wait_training_pid(self, job_id: str, attempt: int | None = None) -> int:
        """The pid of `job_id`'s training process, once it has one (of `attempt`, if given)."""
        found: list[int] = []

        def started() -> bool:
            if attempt is not None and self.job(job_id).attempt != attempt:
                return False
            found[:] = training_pids(self.data_dir, job_id)
            return bool(found)

        self.wait_for(f"a training process of {job_id}", started, every=0.05)
        return found[0]

    def hold_at_step(self, job_id: str, step: int, attempt: int | None = None) -> int:
        """Freeze (SIGSTOP) `job_id`'s training process once it has logged `step` steps, and
        return its pid; the test arranges its fault and sends SIGCONT. The trigger is the
        run's own metrics.jsonl, polled every few ms, so a fast machine cannot race past it
        the way it could past the relayed progress."""
        pid = self.wait_training_pid(job_id, attempt)
        log = self.job_dir(job_id) / "metrics.jsonl"
        while not log.exists() or log.read_bytes().count(b"\n") < step:
            assert _alive(pid), f"{job_id} ended before step {step}\n" + self.logs()
            time.sleep(0.005)
        os.kill(pid, signal.SIGSTOP)
        wait_stopped(pid)
        return pid


def _state(pid: int) -> str:
    """The process state letter from /proc (R, S, T, Z...), or "" once it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""


def _alive(pid: int) -> bool:
    return _state(pid) not in ("", "Z")


def wait_stopped(pid: int) -> None:
    """Wait until `pid` is really stopped (SIGSTOP is delivered asynchronously)."""
    for _ in range(5000):
        if _state(pid) in ("T", "t"):
            return
        time.sleep(0.001)
    raise AssertionError(f"{pid} did not stop")


@pytest.fixture
def fault_service(
    tmp_path: Path, tiny_model_path: Path, fault_pg: PgCluster, fault_redis: RedisServer
) -> Iterator[FaultService]:
    fault_redis.flushall()
    settings = fast_settings(
        tmp_path / "data",
        database_url=fault_pg.create_database(),
        broker_url=fault_redis.url,
        **FAULT_SETTINGS,
    )
    upgrade(settings)
    service = FaultService(settings, tmp_path, fault_pg, fault_redis)
    service.key = new_key(settings, "faults")
    try:
        service.start_api_and_scheduler()
        yield service
    finally:
        service.stop()
        if service._sessions is not None:
            service._sessions.kw["bind"].dispose()
