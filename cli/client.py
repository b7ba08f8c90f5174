"""Talking to a running service: the HTTP client and its settings, errors as one line,
downloads to a file, and following a job's event stream (`lco jobs watch`). The commands
themselves are in `cli.fine_tuning`.

Settings: `--base-url` (or LCO_BASE_URL, default http://127.0.0.1:8000/v1) and `--api-key`
(or LCO_API_KEY).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from lco_spec.metrics import HEADLINE_METRICS


class ClientError(Exception):
    """The service answered with an error, or a command could not do its part (its message
    is shown to the user as one line; exit status 1)."""


class UsageError(ClientError):
    """The command was not given what it needs, such as an API key (exit status 2)."""


def base_url(args: argparse.Namespace) -> str:
    return str(args.base_url or os.environ.get("LCO_BASE_URL", "http://127.0.0.1:8000/v1"))


def _client(args: argparse.Namespace) -> httpx.Client:
    key = args.api_key or os.environ.get("LCO_API_KEY", "")
    if not key:
        raise UsageError("no API key: pass --api-key or set LCO_API_KEY")
    return httpx.Client(
        base_url=base_url(args).rstrip("/"), headers={"Authorization": f"Bearer {key}"}, timeout=60
    )


def transport_error_message(args: argparse.Namespace, exc: httpx.TransportError) -> str:
    """One line for a request that got no answer: refused, unresolvable, or timed out."""
    reason = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        return f"cannot reach the service at {base_url(args)}: {reason}; is `lco serve` running?"
    return f"no answer from the service at {base_url(args)}: {type(exc).__name__}: {reason}"


def check(response: httpx.Response) -> Any:
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code >= 400:
        err = (body or {}).get("error", {}) if isinstance(body, dict) else {}
        where = f" (param: {err['param']})" if err.get("param") else ""
        raise ClientError(
            f"HTTP {response.status_code}: {err.get('message', response.text)}{where}"
        )
    return body


def show(obj: Any) -> None:
    print(json.dumps(obj, indent=2))


def filename_of(response: httpx.Response, default: str) -> str:
    """The name the service gives the download (Content-Disposition), as a bare file name."""
    disposition = response.headers.get("content-disposition", "")
    _, _, name = disposition.partition('filename="')
    return Path(name.rstrip('"')).name or default


def save(http: httpx.Client, path: str, out_arg: str | None, default: str) -> None:
    """Stream `GET path` to `out_arg`: a file, a directory (under the name the service gives
    it, else `default`), or `-` for stdout. A file appears whole or not at all; its path is
    printed."""
    with http.stream("GET", path) as response:
        if response.status_code >= 400:
            response.read()
            check(response)
        if out_arg == "-":
            for chunk in response.iter_bytes():
                sys.stdout.buffer.write(chunk)
            return
        out = Path(out_arg or ".")
        if out.is_dir():
            out = out / filename_of(response, default)
        partial = out.with_name(f".{out.name}.part")
        try:
            with partial.open("wb") as f:
                for chunk in response.iter_bytes():
                    f.write(chunk)
            os.replace(partial, out)
        except OSError as exc:
            raise ClientError(f"cannot write {out}: {exc.strerror}") from None
        finally:
            partial.unlink(missing_ok=True)
    print(out)


def progress_line(job: dict[str, Any], metrics: dict[str, Any] | None = None) -> str:
    """One line for a job's progress: `running   step 5/32  reward_mean=0.5  loss=0.1`, or,
    before its first step, its phase and what it is doing (never `step 0/?`)."""
    progress = job.get("progress") or {}
    details = job.get("status_details") or {}
    step, total = progress.get("step") or 0, progress.get("total_steps")
    if step:
        line = f"{job['status']:<9} step {step}/{total or '?'}"
    else:
        said = details.get("message") or details.get("reason")
        line = f"{job['status']:<9} {details.get('phase') or ''}" + (f" ({said})" if said else "")
    return "  ".join([line, headline(metrics)]).rstrip()


def headline(metrics: dict[str, Any] | None) -> str:
    """A step's headline metrics: `reward_mean=0.5  loss=0.1`."""
    return "  ".join(
        f"{key}={metrics[key]:.4g}"
        for key in HEADLINE_METRICS
        if metrics and isinstance(metrics.get(key), int | float)
    )


class StepBar:
    """On a terminal, a job's steps as a live progress bar (rich): done/total, elapsed time,
    the step's headline metrics. Lines that are not steps (phases, the end) print above it."""

    def __init__(self, console: Console) -> None:
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[metrics]}"),
            console=console,
        )
        self.task: TaskID | None = None

    def step(self, job: dict[str, Any], metrics: dict[str, Any] | None) -> None:
        progress = job.get("progress") or {}
        step, total = progress.get("step") or 0, progress.get("total_steps")
        if self.task is None:
            self.progress.start()
            self.task = self.progress.add_task("", total=total, metrics="")
        self.progress.update(
            self.task, completed=step, total=total, description=job["status"],
            metrics=headline(metrics),
        )  # fmt: skip

    def line(self, text: str) -> None:
        self.progress.console.print(text, highlight=False, markup=False)

    def stop(self) -> None:
        self.progress.stop()


def sse_messages(response: httpx.Response) -> Iterator[tuple[str | None, str, str]]:
    """`(id, event, data)` for each message of a `text/event-stream` body, as the SSE spec
    frames them: `field: value` lines up to a blank line; comment lines (`: keepalive`) and
    unknown fields skipped. `id` is None when the server sends none."""
    event_id: str | None = None
    event = "message"
    data: list[str] = []
    for line in response.iter_lines():
        if not line:
            if data:
                yield event_id, event, "\n".join(data)
            event, data = "message", []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "event":
            event = value
        elif field == "data":
            data.append(value)
        elif field == "id":
            event_id = value


class _Follower:
    """Turns a job's stream into progress lines: one per phase while it prepares, one per
    step (with that step's headline metrics), one per change of status."""

    def __init__(self, job_id: str, bar: StepBar | None = None) -> None:
        self.job_id = job_id
        self.bar = bar  # a terminal's progress bar; None: one line per step
        self.job: dict[str, Any] | None = None
        self.point: dict[str, Any] | None = None  # the newest metrics point
        self.shown: tuple[str | None, str] = (None, "")  # status and line, without metrics

    def _show(self, job: dict[str, Any], metrics: dict[str, Any] | None) -> None:
        if self.bar is not None and (job.get("progress") or {}).get("step"):
            self.bar.step(job, metrics)
            self.shown = (job["status"], progress_line(job))
            return
        head = progress_line(job)  # a line repeats only when its metrics are all that differ
        if head != self.shown[1] and self.bar is not None:
            self.bar.line(progress_line(job, metrics))
            self.shown = (job["status"], head)
        elif head != self.shown[1]:
            print(progress_line(job, metrics), flush=True)
            self.shown = (job["status"], head)

    def feed(self, event: str, data: Any) -> int | None:
        """Take one message; the exit status once the stream says the job ended."""
        if event == "job":
            self.job = data
            step = (data.get("progress") or {}).get("step") or 0
            point = self.point if self.point and self.point["step"] == step else None
            # A step's line waits for its metrics, which follow the job in the same poll;
            # a new status does not wait (after the first: the history's metrics are coming).
            moved = self.shown[0] is not None and data["status"] != self.shown[0]
            if not step or point or moved:
                self._show(data, point["metrics"] if point else None)
        elif event == "metrics":
            self.point = data
            if self.job is not None:
                progress = self.job.get("progress") or {}
                # The history is replayed first: only the job's current step is news.
                if data["step"] >= (progress.get("step") or 0):
                    job = {**self.job, "progress": {**progress, "step": data["step"]}}
                    self._show(job, data["metrics"])
        elif event == "end":
            return self._end(data["status"])
        return None

    def _end(self, status: str) -> int:
        if self.bar is not None:
            self.bar.stop()
        job = self.job or {}
        model = job.get("fine_tuned_model")
        print(f"{self.job_id}: {status}" + (f" -> {model}" if model else ""), flush=True)
        if job.get("error"):
            print(f"error: {job['error'].get('message')}", file=sys.stderr)
        return 0 if status == "succeeded" else 1


# A stream ends without `end` when the server's time limit for one stream is reached, or the
# server restarts: follow again, a moment later, from the last event id when it sends ids.
RECONNECT_S = 1.0
# Streams in a row that end before sending anything: the service is not serving this one.
MAX_EMPTY_STREAMS = 5


def watch(args: argparse.Namespace, job_id: str) -> int:
    """Follow `job_id`'s event stream (`GET .../stream`) until the job ends; its exit status
    is 0 when the job succeeded, 1 when it failed or was cancelled."""
    console = Console()
    follower = _Follower(job_id, StepBar(console) if console.is_terminal else None)
    last_id: str | None = None
    empty = 0
    with _client(args) as http:
        while True:
            headers = {"Last-Event-ID": last_id} if last_id else {}
            got = 0
            try:
                with http.stream(
                    "GET", f"/fine_tuning/jobs/{job_id}/stream", headers=headers
                ) as response:
                    if response.status_code >= 400:
                        response.read()
                        check(response)
                    kind = response.headers.get("content-type", "")
                    if not kind.startswith("text/event-stream"):
                        raise ClientError(f"{response.url} is not an event stream ({kind})")
                    for event_id, event, data in sse_messages(response):
                        got += 1
                        last_id = event_id or last_id
                        try:
                            payload = json.loads(data)
                        except ValueError:
                            raise ClientError(
                                f"{response.url} sent a {event} that is not JSON"
                            ) from None
                        status = follower.feed(event, payload)
                        if status is not None:
                            return status
            except (httpx.RemoteProtocolError, httpx.ReadError):
                pass  # the server went away mid-stream: reconnect (refused: one error line)
            empty = 0 if got else empty + 1
            if empty >= MAX_EMPTY_STREAMS:
                raise ClientError(f"the event stream of {job_id} keeps ending with nothing sent")
            time.sleep(RECONNECT_S)
