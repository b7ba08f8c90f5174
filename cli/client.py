"""Talking to a running service: the HTTP client and its settings, errors as one line, and
following a job (`lco jobs watch`). The commands themselves are in `cli.fine_tuning`.

Settings: `--base-url` (or LCO_BASE_URL, default http://127.0.0.1:8000/v1) and `--api-key`
(or LCO_API_KEY).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import httpx

from lco_spec.metrics import HEADLINE_METRICS

TERMINAL = ("succeeded", "failed", "cancelled")


class ClientError(Exception):
    """The service answered with an error (its message is shown to the user)."""


def base_url(args: argparse.Namespace) -> str:
    return str(args.base_url or os.environ.get("LCO_BASE_URL", "http://127.0.0.1:8000/v1"))


def _client(args: argparse.Namespace) -> httpx.Client:
    key = args.api_key or os.environ.get("LCO_API_KEY", "")
    if not key:
        raise ClientError("no API key: pass --api-key or set LCO_API_KEY")
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
    shown = [
        f"{key}={metrics[key]:.4g}"
        for key in HEADLINE_METRICS
        if metrics and isinstance(metrics.get(key), int | float)
    ]
    return "  ".join([line, *shown]).rstrip()


def watch(args: argparse.Namespace, job_id: str) -> int:
    last = ""
    with _client(args) as http:
        while True:
            job = check(http.get(f"/fine_tuning/jobs/{job_id}"))
            step = (job.get("progress") or {}).get("step") or 0
            values = None
            if step:
                points = check(
                    http.get(
                        f"/fine_tuning/jobs/{job_id}/metrics",
                        params={"from_step": step, "to_step": step},
                    )
                )["data"]
                values = points[-1]["metrics"] if points else None
            line = progress_line(job, values)
            if line.split("  ")[0] != last:  # a new step or phase
                print(line, flush=True)
                last = line.split("  ")[0]
            if job["status"] in TERMINAL:
                print(
                    f"{job_id}: {job['status']}"
                    + (f" -> {job['fine_tuned_model']}" if job.get("fine_tuned_model") else "")
                )
                if job.get("error"):
                    print(f"error: {job['error'].get('message')}", file=sys.stderr)
                return 0 if job["status"] == "succeeded" else 1
            time.sleep(args.interval)
