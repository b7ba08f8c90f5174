"""Abuse at the API's edge: rate limits keyed on who the caller is (not how the header is
spelled; fake keys cost no database lookup past the address's burst), a cap on request
headers (431), and NUL bytes in ids, query values, headers and JSON bodies (404/400, never a
500 from PostgreSQL), on the in-process app and on a real `lco serve`."""

from __future__ import annotations

import contextlib
import json
import secrets
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.guards import bad_text_field, nul_query_param, server_header_bound
from api.ratelimit import Buckets, bearer_key
from jobs.migrate import upgrade
from jobs.settings import Settings
from tests.service_fixtures import LiveService, fast_settings, free_port, new_key


def _fake_key() -> str:
    # Well formed, so authenticating it would query the database.
    return "lco-" + secrets.token_hex(24)


def _counting_loads(client: TestClient) -> list[str]:
    """Every key the app authenticates against the database, from now on."""
    auth = client.app.state.services.auth  # type: ignore[attr-defined]
    loads: list[str] = []
    load = auth.load

    def counted(key: str) -> Any:
        loads.append(key)
        return load(key)

    auth.load = counted
    return loads


def _limited_client(settings: Settings, **update: Any) -> TestClient:
    limited = settings.model_copy(
        update={"rate_limit_per_minute": 6, "rate_limit_burst": 3, **update}
    )
    return TestClient(create_app(limited), raise_server_exceptions=False)


# -- rate limits ---------------------------------------------------------------------------------
def test_bearer_key_ignores_case_and_whitespace() -> None:
    for header in ("Bearer K", "bearer K", "BEARER   K  ", "  Bearer\tK", "Bearer K "):
        assert bearer_key(header) == "K"
    for header in (None, "", "Bearer", "Bearer   ", "Basic K", "K"):
        assert bearer_key(header) is None


@pytest.mark.parametrize("auth_cache_s", [1.0, 0.0])
def test_spellings_of_one_key_share_its_bucket(
    sqlite_settings: Settings, auth_cache_s: float
) -> None:
    key, other = new_key(sqlite_settings, "a"), new_key(sqlite_settings, "b")
    spellings = [f"Bearer {key}", f"bearer {key}", f"BEARER   {key}  ", f"Bearer\t{key}"]
    with _limited_client(sqlite_settings, auth_cache_s=auth_cache_s) as client:
        codes = [
            client.get("/v1/files", headers={"Authorization": h}).status_code for h in spellings
        ]
        assert codes == [200, 200, 200, 429]
        for header in spellings:  # whatever the spelling, the key's bucket is empty
            response = client.get("/v1/files", headers={"Authorization": header})
            assert response.status_code == 429
            assert response.json()["error"]["code"] == "rate_limit_exceeded"
            assert int(response.headers["Retry-After"]) >= 1
        # Another key (from the same address) has its own bucket: the address was not charged.
        ok = client.get("/v1/files", headers={"Authorization": f"Bearer {other}"})
        assert ok.status_code == 200


def test_rotating_fake_keys_from_one_address_stop_reaching_the_database(
    sqlite_settings: Settings,
) -> None:
    with _limited_client(sqlite_settings) as client:
        loads = _counting_loads(client)
        codes = [
            client.get("/v1/files", headers={"Authorization": f"Bearer {_fake_key()}"}).status_code
            for _ in range(12)
        ]
        assert codes == [401] * 3 + [429] * 9
        assert len(loads) == 3  # the address's burst, then no lookup at all
        # No key at all is the same address's traffic.
        assert client.get("/v1/files").status_code == 429


def test_buckets_give_back_a_token_moved_to_a_key() -> None:
    now = [0.0]
    buckets = Buckets(per_minute=60, burst=2, clock=lambda: now[0])
    assert buckets.take("addr:x") == 0 and buckets.take("addr:x") == 0
    assert buckets.take("addr:x") == pytest.approx(1.0)
    buckets.give_back("addr:x")
    assert buckets.take("addr:x") == 0
    now[0] += 1.0  # refills at the rate, never past the burst
    buckets.give_back("addr:x")
    buckets.give_back("addr:x")
    assert buckets.buckets["addr:x"][0] == 2.0


# -- header size -----------------------------------------------------------------------------------
def test_oversized_headers_are_a_431_envelope_before_any_lookup(
    sqlite_settings: Settings,
) -> None:
    key = new_key(sqlite_settings, "a")
    with TestClient(create_app(sqlite_settings), raise_server_exceptions=False) as client:
        loads = _counting_loads(client)
        limit = sqlite_settings.max_header_bytes
        for headers in (
            {"Authorization": "Bearer " + "k" * (limit + 1)},
            {"Authorization": f"Bearer {key}", **{f"X-Pad-{i}": "p" * 1000 for i in range(40)}},
        ):
            response = client.get("/v1/files", headers=headers)
            assert response.status_code == 431, response.text
            error = response.json()["error"]
            assert error["code"] == "request_header_fields_too_large"
            assert error["type"] == "invalid_request_error"
        assert loads == []
        assert client.get("/v1/files", headers={"Authorization": f"Bearer {key}"}).is_success


def _raw_request(port: int, head: bytes, timeout: float = 20.0) -> bytes:
    """Send `head` (keeps sending while the server reads) and return what it answers."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        # The server may close while we are still sending: then read what it answered.
        with contextlib.suppress(OSError):
            sock.sendall(head)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except OSError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[LiveService, int, str]]:
    """`lco serve --no-worker` on a free port (the scheduler, no worker), and a key."""
    settings = fast_settings(tmp_path / "data")
    upgrade(settings)
    key = new_key(settings, "live")
    port = free_port()
    service = LiveService(f"http://127.0.0.1:{port}/v1", settings)
    argv = [sys.executable, "-m", "cli.main", "serve", "--port", str(port), "--no-worker"]
    service.start(argv, tmp_path / "serve.log")
    try:
        service.wait_healthy()
        yield service, port, key
    finally:
        service.stop()


def test_lco_serve_bounds_the_header_read(served: tuple[LiveService, int, str]) -> None:
    service, port, key = served
    limit = service.settings.max_header_bytes
    # Over the limit, under the server's bound: the envelope.
    head = f"GET /v1/files HTTP/1.1\r\nHost: x\r\nX-Pad: {'p' * (limit + 10)}\r\n\r\n".encode()
    answer = _raw_request(port, head)
    assert answer.startswith(b"HTTP/1.1 431"), answer[:200]
    assert b'"request_header_fields_too_large"' in answer
    # 16 MB of one header: the server stops reading at its bound and closes, quickly.
    started = time.monotonic()
    huge = b"GET /v1/files HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + b"k" * (16 << 20)
    answer = _raw_request(port, huge)
    assert time.monotonic() - started < 10
    # Cut off by the server's bound, and still the envelope (api.server_protocol).
    assert answer.startswith(b"HTTP/1.1 431"), answer[:200]
    assert b'"request_header_fields_too_large"' in answer
    assert server_header_bound(limit) < 1 << 20
    # And everyone else is still served.
    ok = httpx.get(f"{service.base_url}/files", headers={"Authorization": f"Bearer {key}"})
    assert ok.status_code == 200


# -- NUL bytes -------------------------------------------------------------------------------------
def test_nul_checks() -> None:
    assert nul_query_param(b"limit=3&after=file-1") is None
    assert nul_query_param(b"limit=3&after=file-%001") == "after"
    assert nul_query_param(b"a%00b=1") == "a\\x00b"
    assert bad_text_field({"a": ["ok", {"b": "x\x00"}]}) == "a.1.b"
    assert bad_text_field({"a": "\ud800"}) == "a"
    assert bad_text_field({"k\x00": 1}) == "k\\x00"
    assert bad_text_field("\x00") == "body"
    assert bad_text_field({"a": [1, None, "fine"]}) is None


def _check_nul_everywhere(client: TestClient, headers: dict[str, str]) -> None:
    for method, path in (
        ("GET", "/v1/files/file-%00abc"),
        ("GET", "/v1/files/file-%00abc/content"),
        ("DELETE", "/v1/files/file-%00abc"),
        ("GET", "/v1/fine_tuning/jobs/ftjob-%00"),
        ("GET", "/v1/fine_tuning/jobs/ftjob-%00/events"),
        ("POST", "/v1/fine_tuning/jobs/ftjob-%00/cancel"),
        ("GET", "/v1/fine_tuning/jobs/ftjob-x/checkpoints/%00"),
        ("GET", "/v1/models/ft%00x"),
        ("GET", "/v1/downloads/abc%00def"),  # no key needed: the token is the credential
    ):
        for auth in (headers, {}):
            response = client.request(method, path, headers=auth)
            assert response.status_code == 404, (method, path, response.text)
            assert response.json()["error"]["type"] == "invalid_request_error"
    for path, param in (
        ("/v1/files?after=file-%00", "after"),
        ("/v1/fine_tuning/jobs?after=%00&limit=2", "after"),
        ("/v1/fine_tuning/jobs/ftjob-x/events?after=e%00", "after"),
        ("/v1/downloads/abc?x=%00", "x"),
    ):
        response = client.get(path, headers=headers)
        assert response.status_code == 400, (path, response.text)
        assert response.json()["error"]["param"] == param
    response = client.get("/v1/files", headers={**headers, "X-Trace": "a\x00b"})
    assert (response.status_code, response.json()["error"]["param"]) == (400, "x-trace")
    for body, param in (
        ({"model": "lco-tiny", "training_file": "file-\x00"}, "training_file"),
        ({"model": "lco-tiny", "training_file": "f", "metadata": {"k": "\x00"}}, "metadata.k"),
        ({"model": "lco-\ud800", "training_file": "f"}, "model"),
    ):
        raw = json.dumps(body).encode()  # \u0000 and \ud800 escapes, as clients send them
        response = client.post(
            "/v1/fine_tuning/jobs",
            content=raw,
            headers={**headers, "Content-Type": "application/json"},
        )
        assert response.status_code == 400, (body, response.text)
        assert response.json()["error"]["param"] == param


def test_nul_bytes_are_404_or_400_on_sqlite(sqlite_settings: Settings) -> None:
    headers = {"Authorization": f"Bearer {new_key(sqlite_settings, 'a')}"}
    with TestClient(create_app(sqlite_settings), raise_server_exceptions=False) as client:
        _check_nul_everywhere(client, headers)


def test_nul_bytes_never_reach_postgresql(tmp_path: Path, pg_url: str) -> None:
    settings = fast_settings(tmp_path / "data", database_url=pg_url)
    upgrade(settings)
    headers = {"Authorization": f"Bearer {new_key(settings, 'team-pg')}"}
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        _check_nul_everywhere(client, headers)
        # The guards let ordinary requests through.
        assert client.get("/v1/files?limit=2", headers=headers).status_code == 200
