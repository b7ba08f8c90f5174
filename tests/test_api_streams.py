"""Caps on open job streams (Server-Sent Events): per API key and in total per process, a
429 `too_many_streams` in OpenAI's envelope past either, and a slot freed when a stream
ends. Streams are driven at the ASGI level: the TestClient buffers a whole response, and a
stream of a job that is not terminal stays open."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI

from api.app import create_app
from tests.service_fixtures import STRING_CHECK, ApiClient, rl_lines


def _job(api: ApiClient, headers: dict[str, str]) -> str:
    """A queued job of the team `headers` authenticate: its stream stays open."""
    file_id = api.upload(rl_lines(), headers=headers).json()["id"]
    body = {
        "model": "lco-tiny",
        "training_file": file_id,
        "method": {"type": "lco", "lco": {"grader": STRING_CHECK}},
    }
    response = api.post("/v1/fine_tuning/jobs", json=body, headers=headers)
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


@dataclass
class _Stream:
    """One `GET .../stream` in flight: its status once the response started, and a way to
    disconnect the client."""

    task: asyncio.Task[None]
    started: asyncio.Future[tuple[int, dict[str, str]]]
    gone: asyncio.Event
    body: list[bytes] = field(default_factory=list)

    async def close(self) -> None:
        self.gone.set()
        await asyncio.wait_for(self.task, 10)


async def _open(app: FastAPI, key: str, job_id: str) -> tuple[_Stream, int]:
    path = f"/v1/fine_tuning/jobs/{job_id}/stream"
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver"), (b"authorization", f"Bearer {key}".encode())],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    loop = asyncio.get_running_loop()
    started: asyncio.Future[tuple[int, dict[str, str]]] = loop.create_future()
    gone = asyncio.Event()
    sent_request = False

    async def receive() -> dict[str, Any]:
        nonlocal sent_request
        if not sent_request:
            sent_request = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    stream: _Stream

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start" and not started.done():
            headers = {k.decode(): v.decode() for k, v in message.get("headers", [])}
            started.set_result((message["status"], headers))
        elif message["type"] == "http.response.body":
            stream.body.append(message.get("body", b""))

    task = loop.create_task(app(scope, receive, send))  # type: ignore[arg-type]
    stream = _Stream(task, started, gone)
    status, _ = await asyncio.wait_for(asyncio.shield(started), 10)
    return stream, status


def _capped(api: ApiClient, **caps: int) -> FastAPI:
    return create_app(api.settings.model_copy(update=caps))


async def _assert_refused(stream: _Stream, status: int, limit: int) -> None:
    assert status == 429
    await asyncio.wait_for(stream.task, 10)
    _, headers = stream.started.result()
    assert int(headers["retry-after"]) >= 1
    error = json.loads(b"".join(stream.body))["error"]
    assert error["code"] == "too_many_streams"
    assert error["type"] == "rate_limit_error"
    assert f"limit {limit}" in error["message"]


def test_per_key_cap(api: ApiClient) -> None:
    job_a, job_b = _job(api, api.headers), _job(api, api.other_headers)
    app = _capped(api, max_streams_per_key=2, max_streams_total=100)

    async def scenario() -> None:
        first, s1 = await _open(app, api.key, job_a)
        second, s2 = await _open(app, api.key, job_a)
        assert (s1, s2) == (200, 200)
        third, s3 = await _open(app, api.key, job_a)
        await _assert_refused(third, s3, limit=2)
        other, s_other = await _open(app, api.other_key, job_b)  # another key is unaffected
        assert s_other == 200
        await first.close()  # the client went away: its slot is free again
        again, s_again = await _open(app, api.key, job_a)
        assert s_again == 200
        for stream in (second, other, again):
            await stream.close()
        assert app.state.stream_slots.open == 0 and not app.state.stream_slots.by_key

    asyncio.run(scenario())


def test_total_cap(api: ApiClient) -> None:
    job_a, job_b = _job(api, api.headers), _job(api, api.other_headers)
    app = _capped(api, max_streams_per_key=8, max_streams_total=2)

    async def scenario() -> None:
        first, s1 = await _open(app, api.key, job_a)
        second, s2 = await _open(app, api.key, job_a)
        assert (s1, s2) == (200, 200)
        refused, s3 = await _open(app, api.other_key, job_b)
        await _assert_refused(refused, s3, limit=2)
        await first.close()
        other, s_other = await _open(app, api.other_key, job_b)
        assert s_other == 200
        for stream in (second, other):
            await stream.close()
        assert app.state.stream_slots.open == 0

    asyncio.run(scenario())


def test_slot_freed_when_the_job_finishes(api: ApiClient) -> None:
    """A stream that ends by itself (its job became terminal) frees its slot; so does a
    request refused before streaming (404)."""
    job_a = _job(api, api.headers)
    app = _capped(api, max_streams_per_key=1, max_streams_total=1)

    async def scenario() -> None:
        missing, status = await _open(app, api.key, "ftjob-missing")
        assert status == 404
        await asyncio.wait_for(missing.task, 10)
        stream, status = await _open(app, api.key, job_a)
        assert status == 200
        cancel = api.post(f"/v1/fine_tuning/jobs/{job_a}/cancel")
        assert cancel.status_code == 200, cancel.text
        await asyncio.wait_for(stream.task, 10)  # ends after `event: end`, no disconnect
        assert b"event: end" in b"".join(stream.body)
        assert app.state.stream_slots.open == 0
        again, status = await _open(app, api.key, job_a)
        assert status == 200
        await again.close()

    asyncio.run(scenario())
