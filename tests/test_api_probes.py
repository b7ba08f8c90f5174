"""Probes: `/livez` answers whatever the database does; `/readyz` is 503, naming what failed,
while PostgreSQL cannot be reached (a TCP relay in front of it, stopped), and 200 once it can
(the relay started); a database without the schema, or a broker that refuses connections,
is not ready either."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from jobs.migrate import upgrade
from jobs.settings import Settings
from tests.service_fixtures import fast_settings


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Relay:
    """A TCP relay on `port` to PostgreSQL: "the database" is up while it runs."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.server: socket.socket | None = None
        self.conns: list[socket.socket] = []

    def start(self) -> None:
        self.server = socket.create_server(("127.0.0.1", self.port), reuse_port=False)
        threading.Thread(target=self._accept, args=(self.server,), daemon=True).start()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", 5432))
            self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def stop(self) -> None:
        if self.server is not None:
            # shutdown() wakes the thread blocked in accept(); close() alone would not.
            with contextlib.suppress(OSError):
                self.server.shutdown(socket.SHUT_RDWR)
            self.server.close()
        for conn in self.conns:
            with contextlib.suppress(OSError):
                conn.close()
        self.conns.clear()


@pytest.fixture
def relay() -> Iterator[Relay]:
    r = Relay(_free_port())
    yield r
    r.stop()


def _settings(tmp_path: Path, database_url: str, **kw: str) -> Settings:
    return fast_settings(tmp_path / "data").model_copy(update={"database_url": database_url, **kw})


def test_readyz_follows_the_database(tmp_path: Path, pg_url: str, relay: Relay) -> None:
    upgrade(_settings(tmp_path, pg_url))
    through_relay = pg_url.replace("127.0.0.1:5432", f"127.0.0.1:{relay.port}")
    app = create_app(_settings(tmp_path, through_relay))
    with TestClient(app, raise_server_exceptions=False) as client:
        down = client.get("/readyz")
        assert down.status_code == 503
        body = down.json()
        assert body["status"] == "unready"
        assert body["checks"]["database"].startswith("unreachable")
        assert body["checks"]["broker"] == "ok"
        assert client.get("/livez").status_code == 200  # alive all the same

        relay.start()
        up = client.get("/readyz")
        assert up.status_code == 200, up.text
        assert up.json() == {
            "status": "ready",
            "checks": {"database": "ok", "migrations": "ok", "broker": "ok"},
        }

        relay.stop()  # stopped again: the pool's connections die with it
        assert client.get("/readyz").status_code == 503


def test_readyz_needs_the_schema_at_head(tmp_path: Path, pg_url: str) -> None:
    with TestClient(create_app(_settings(tmp_path, pg_url)), raise_server_exceptions=False) as c:
        response = c.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["migrations"].startswith("at no schema, expected ")


def test_readyz_needs_the_broker(tmp_path: Path) -> None:
    settings = fast_settings(tmp_path / "data")
    upgrade(settings)
    closed = settings.model_copy(update={"broker_url": f"redis://127.0.0.1:{_free_port()}/0"})
    with TestClient(create_app(closed), raise_server_exceptions=False) as client:
        response = client.get("/readyz")
    assert response.status_code == 503
    checks = response.json()["checks"]
    assert checks["broker"].startswith("unreachable") and checks["database"] == "ok"
