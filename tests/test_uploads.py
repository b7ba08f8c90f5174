"""Uploads: the key is checked before the body is read, the file is streamed to storage and
validated in bounded memory, and a team's stored files are held to a storage quota."""

from __future__ import annotations

import asyncio
import io
import json
import tracemalloc
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.limits import MULTIPART_SLACK
from jobs.db import make_engine, make_session_factory
from jobs.storage import Storage
from jobs.uploads import Upload
from lco_spec import datasets
from lco_spec.datasets import validate_dataset
from tests.service_fixtures import ApiClient, sft_lines

MB = 1024 * 1024


def raw_post(app: Any, headers: dict[str, str], n_chunks: int) -> tuple[int, int, bytes]:
    """POST /v1/files straight into the ASGI app with a body of `n_chunks` MiB that is only
    produced when the app asks for it: (status, body chunks the app read, response body)."""
    asked = 0
    response: dict[str, Any] = {"body": b""}

    async def receive() -> dict[str, Any]:
        nonlocal asked
        if asked >= n_chunks:
            await asyncio.sleep(3600)  # a client that sends nothing more
        asked += 1
        return {"type": "http.request", "body": b"x" * MB, "more_body": asked < n_chunks}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            response["status"] = message["status"]
        elif message["type"] == "http.response.body":
            response["body"] += message.get("body", b"")

    head = {
        "content-type": "multipart/form-data; boundary=xyz",
        "content-length": str(n_chunks * MB),
        **headers,
    }
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/files",
        "raw_path": b"/v1/files",
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in head.items()],
        "client": ("127.0.0.1", 5000),
        "server": ("testserver", 80),
    }
    asyncio.run(asyncio.wait_for(app(scope, receive, send), 30))
    return response["status"], asked, response["body"]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer lco-" + "x" * 48},
        {"Authorization": "Bearer lco-" + "x" * 48, "Idempotency-Key": "k1"},
        {"Authorization": "Basic abc", "Idempotency-Key": "k2"},
    ],
    ids=["no-key", "unknown-key", "unknown-key-idempotent", "other-scheme-idempotent"],
)
def test_an_upload_without_a_valid_key_is_refused_before_its_body_is_read(
    api: ApiClient, headers: dict[str, str]
) -> None:
    # 300 MiB declared: the answer comes without the app asking for a single chunk.
    status, asked, body = raw_post(api.client.app, headers, 300)
    assert status == 401 and asked == 0
    assert json.loads(body)["error"]["code"] == "invalid_api_key"


def test_an_upload_declared_over_the_storage_quota_is_refused_before_its_body(
    api: ApiClient,
) -> None:
    settings = api.settings.model_copy(update={"team_storage_bytes": 10 * MB})
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        status, asked, body = raw_post(client.app, api.headers, 300)
    error = json.loads(body)["error"]
    assert status == 429 and asked == 0
    assert error["code"] == "storage_quota_exceeded" and error["param"] == "file"
    assert str(300 * MB - MULTIPART_SLACK) in error["message"] and str(10 * MB) in error["message"]


def test_the_storage_quota_counts_stored_files_per_team(api: ApiClient) -> None:
    one = sft_lines(40)
    settings = api.settings.model_copy(update={"team_storage_bytes": 2 * len(one) + 10})
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:

        def upload(headers: dict[str, str]) -> Any:
            return client.post(
                "/v1/files",
                headers=headers,
                files={"file": ("t.jsonl", one)},
                data={"purpose": "fine-tune"},
            )

        first, second = upload(api.headers).json(), upload(api.headers).json()
        assert first["status"] == second["status"] == "processed"
        third = upload(api.headers)
        error = third.json()["error"]
        assert third.status_code == 429 and error["code"] == "storage_quota_exceeded"
        assert f"stores {2 * len(one)} bytes" in error["message"]
        assert third.headers.get("retry-after")
        # Another team is not charged for it; deleting a file makes room again.
        assert upload(api.other_headers).status_code == 200
        assert client.delete(f"/v1/files/{first['id']}", headers=api.headers).status_code == 200
        assert upload(api.headers).status_code == 200
        listed = client.get("/v1/files", headers=api.headers).json()["data"]
        assert len(listed) == 2  # the refused upload left no row
    files_dir = Storage(settings).team_root(_team_of(settings, api.key)) / "files"
    assert not list(files_dir.glob("*.part"))  # nor a partial file
    assert len(list(files_dir.glob("*.jsonl"))) == 2


def _team_of(settings: Any, key: str) -> str:
    from jobs.auth import authenticate_key

    with make_session_factory(make_engine(settings))() as session:
        found = authenticate_key(session, key)
        assert found is not None
        return found.team_id


def test_malformed_multipart_bodies_are_400s_naming_file(api: ApiClient) -> None:
    cases = {
        "not multipart": ("application/json", b"{}"),
        "no boundary": ("multipart/form-data", b"--x\r\n"),
        "truncated": (
            "multipart/form-data; boundary=b",
            b'--b\r\nContent-Disposition: form-data; name="file"; filename="t.jsonl"\r\n\r\n{"a"',
        ),
    }
    for name, (content_type, body) in cases.items():
        response = api.post(
            "/v1/files", content=body, headers={**api.headers, "content-type": content_type}
        )
        assert response.status_code == 400, name
        assert response.json()["error"]["param"] == "file", name
    two_files = api.post(
        "/v1/files",
        files=[("file", ("a.jsonl", sft_lines())), ("file", ("b.jsonl", sft_lines()))],
        data={"purpose": "fine-tune"},
    )
    assert two_files.status_code == 400 and "one file" in two_files.json()["error"]["message"]
    assert api.get("/v1/files").json()["data"] == []


def _big_single_line_file(n_mb: int) -> Iterator[bytes]:
    yield b'{"messages": [{"role": "user", "content": "'
    for _ in range(n_mb):
        yield b"y" * MB
    yield b'"}, {"role": "assistant", "content": "ok"}]}\n'
    yield sft_lines(3)


def test_storing_and_validating_a_large_upload_holds_about_one_line(api: ApiClient) -> None:
    """A 64 MiB line (64 times the line limit) followed by valid lines: stored and validated
    with a peak of Python allocations near the line limit, not the file size."""
    storage = Storage(api.settings)
    with make_session_factory(make_engine(api.settings))() as session:
        upload = Upload.begin(storage, api.settings, _team_of(api.settings, api.key))
        tracemalloc.start()
        try:
            for chunk in _big_single_line_file(64):
                upload.write(chunk)
            row = upload.finish(session, filename="big.jsonl", purpose="fine-tune")
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
            upload.abort()
        assert row.status == "error" and row.bytes > 64 * MB
        assert "line 1: line is too long" in (row.status_details or "")
        assert peak < 6 * MB, peak


@pytest.mark.parametrize(
    "data",
    [
        sft_lines(5),
        b"\xef\xbb\xbf" + sft_lines(2),  # a byte order mark
        sft_lines(2) + b"\n\n  \n" + sft_lines(1).rstrip(b"\n"),  # blank lines, no final LF
        b'{"messages": [{"role": "user", "content": "a\rb"}, '
        b'{"role": "assistant", "content": "c"}]}\n',  # a raw CR inside a string
        sft_lines(2) + b"oops\n" + b"[1]\n",
    ],
)
def test_a_stream_validates_exactly_as_the_bytes_do(data: bytes) -> None:
    def seen(report: datasets.DatasetReport) -> tuple[Any, ...]:
        errors = [(e.line, e.param, str(e)) for e in report.errors]
        return report.n_examples, report.kind_detected, errors

    assert seen(validate_dataset(io.BytesIO(data), "any")) == seen(validate_dataset(data, "any"))


def test_an_over_long_line_in_a_stream_is_one_error_and_the_next_line_is_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(datasets, "MAX_LINE_BYTES", 100)
    data = b'{"x": "' + b"z" * 500 + b'"}\n' + sft_lines(1)
    report = validate_dataset(io.BytesIO(data), "supervised")
    assert [(e.line, "too long" in e.message) for e in report.errors] == [(1, True)]
    assert report.n_examples == 1
