"""Three kinds of fault at the API's edge: an Idempotency-Key reservation left by a request
that died (it blocks retries only for `request_timeout_s`), hostile upload filenames (kept
as a clean label, never a path, never a 500, PostgreSQL included), and the interactive docs
(off by default: they load Swagger UI from a CDN into the dashboard's origin)."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from api import idempotency
from api.app import create_app
from jobs.db import make_engine, make_session_factory, transaction
from jobs.ids import utcnow
from jobs.migrate import upgrade
from jobs.models import File, IdempotencyRecord
from jobs.settings import Settings
from jobs.uploads import Upload
from tests.service_fixtures import ApiClient, fast_settings, new_key, sft_lines


# -- Idempotency-Key: a reservation whose request died -----------------------------------------
def _die_mid_request(monkeypatch: pytest.MonkeyPatch) -> None:
    """The handler fails and the middleware never forgets its reservation, as when the
    process is killed between reserving the key and storing the response."""

    def crash(*_: Any) -> Any:
        raise RuntimeError("process killed")

    monkeypatch.setattr(Upload, "_validate", crash)
    monkeypatch.setattr(idempotency, "_forget", lambda *_: None)


def _clock_at(monkeypatch: pytest.MonkeyPatch, when: datetime) -> None:
    monkeypatch.setattr(idempotency, "utcnow", lambda: when)


def test_a_dead_requests_reservation_blocks_until_the_request_timeout_then_frees_the_key(
    api: ApiClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    headers = {**api.headers, "Idempotency-Key": "upload-dies"}
    with monkeypatch.context() as dying:
        _die_mid_request(dying)
        assert api.upload(sft_lines(), headers=headers).status_code == 500
    # Just before the timeout the key is still taken: the first request may be running.
    timeout = timedelta(seconds=api.settings.request_timeout_s)
    _clock_at(monkeypatch, utcnow() + timeout - timedelta(seconds=5))
    busy = api.upload(sft_lines(), headers=headers)
    assert busy.status_code == 409
    assert busy.json()["error"]["code"] == "idempotency_key_in_use"
    # After it the reservation is dead: the retry runs as a first request.
    later = utcnow() + timeout + timedelta(seconds=1)
    _clock_at(monkeypatch, later)
    retry = api.upload(sft_lines(), headers=headers)
    assert retry.status_code == 200, retry.text
    assert "Idempotent-Replayed" not in retry.headers
    # A completed response still replays for idempotency_ttl_s, long past the timeout.
    _clock_at(monkeypatch, later + timedelta(hours=23))
    again = api.upload(sft_lines(), headers=headers)
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == retry.json()
    assert len(api.get("/v1/files").json()["data"]) == 1


def test_a_request_outliving_the_timeout_does_not_write_over_its_successor(
    api: ApiClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    services = api.client.app.state.services  # type: ignore[attr-defined]
    principal, digest = hashlib.sha256(b"caller").hexdigest(), "d" * 64
    slow = idempotency._reserve(services, principal, "k", digest)
    assert isinstance(slow, idempotency.Claim)
    # Past the timeout a retry takes the key (on SQLite, even the same pk).
    timeout = timedelta(seconds=api.settings.request_timeout_s)
    _clock_at(monkeypatch, slow.created_at + timeout + timedelta(seconds=1))
    retry = idempotency._reserve(services, principal, "k", digest)
    assert isinstance(retry, idempotency.Claim) and retry != slow
    # The slow one finishes late: its store and its forget touch nothing of the retry's.
    idempotency._store(services, slow, 200, "application/json", b'{"late": true}')
    idempotency._forget(services, slow)
    idempotency._store(services, retry, 201, "application/json", b'{"retry": true}')
    with transaction(services.sessions) as session:
        rows = list(
            session.scalars(
                select(IdempotencyRecord).where(IdempotencyRecord.principal == principal)
            )
        )
    assert [(r.pk, r.status_code, r.body) for r in rows] == [(retry.pk, 201, '{"retry": true}')]


# -- upload filenames ---------------------------------------------------------------------------
HOSTILE = {
    "..\\..\\windows\\evil.jsonl": "evil.jsonl",
    "../../../etc/passwd": "passwd",
    "..": "upload.jsonl",
    "./": "upload.jsonl",
    "a\x00b.jsonl": "ab.jsonl",
    "\x1b[2J\x07\t\x7fline.jsonl": "[2Jline.jsonl",
    "invoice\u202eldnosj.exe": "invoiceldnosj.exe",
    "\u2066x\u2069\u200e\u200f.jsonl": "x.jsonl",
    "C:\\Users\\me\\train set.jsonl": "train set.jsonl",
    "naïve 日本.jsonl": "naïve 日本.jsonl",
    "x" * 1000 + ".jsonl": "x" * 249 + ".jsonl",
}


def _multipart(filename: str) -> tuple[bytes, str]:
    """The form as a client that does not escape its filename sends it (httpx would turn a
    NUL into `%00`): the name's raw UTF-8 bytes in the part's header."""
    boundary = "hygiene-boundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        "Content-Type: application/jsonl\r\n\r\n"
    )
    body = head.encode() + sft_lines() + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def _check_hostile_names(client: TestClient, headers: dict[str, str], data_dir: Path) -> None:
    for raw, clean in HOSTILE.items():
        body, content_type = _multipart(raw)
        response = client.post(
            "/v1/files", content=body, headers={**headers, "Content-Type": content_type}
        )
        assert response.status_code == 200, (raw, response.text)
        made = response.json()
        assert made["filename"] == clean, raw
        assert client.get(f"/v1/files/{made['id']}", headers=headers).json()["filename"] == clean
        content = client.get(f"/v1/files/{made['id']}/content", headers=headers)
        assert content.status_code == 200 and content.content == sft_lines()
    # The bytes live under ids only: nothing named after the client outside the files dir.
    stored = [p for p in data_dir.rglob("*") if p.is_file() and p.suffix == ".jsonl"]
    assert len(stored) == len(HOSTILE)
    assert all(p.parent.name == "files" and p.name.startswith("file-") for p in stored)
    assert not any(p.name in ("evil.jsonl", "passwd") for p in data_dir.parent.rglob("*"))


def test_hostile_upload_filenames_are_stored_as_clean_labels(api: ApiClient) -> None:
    _check_hostile_names(api.client, api.headers, api.settings.data_dir)
    with transaction(make_session_factory(make_engine(api.settings))) as session:
        names = list(session.scalars(select(File.filename)))
    assert sorted(names) == sorted(HOSTILE.values())


def test_a_nul_in_a_filename_never_reaches_postgresql(tmp_path: Path, pg_url: str) -> None:
    settings = fast_settings(tmp_path / "data", database_url=pg_url)
    upgrade(settings)
    headers = {"Authorization": f"Bearer {new_key(settings, 'team-pg')}"}
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        _check_hostile_names(client, headers, settings.data_dir)


# -- interactive docs ---------------------------------------------------------------------------
def test_docs_are_off_by_default_and_never_load_a_cdn(sqlite_settings: Settings) -> None:
    with TestClient(create_app(sqlite_settings)) as client:
        for path in ("/docs", "/redoc", "/docs/oauth2-redirect"):
            page = client.get(path)
            assert page.status_code == 404 and "cdn" not in page.text.lower()
        assert client.get("/openapi.json").status_code == 200
    # Turned on by the operator they are the stock pages, CDN and all: their choice then.
    enabled = sqlite_settings.model_copy(update={"api_docs": True})
    with TestClient(create_app(enabled)) as client:
        assert "cdn.jsdelivr.net" in client.get("/docs").text
