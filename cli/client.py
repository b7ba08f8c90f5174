"""`lco files ...`, `lco jobs ...`, `lco pools` and `lco admin jobs ...`: HTTP client
commands against a running service (`admin` ones with an admin key: any team's jobs).

Settings: `--base-url` (or LCO_BASE_URL, default http://127.0.0.1:8000/v1) and `--api-key`
(or LCO_API_KEY). Responses are printed as JSON; `jobs watch` prints progress lines.
`jobs submit --config job.yaml` takes the same file as `lco train`: local paths in
`training_file`/`validation_file` are uploaded first and replaced by their file ids.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from jobs.states import JobStatus
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


def _check(response: httpx.Response) -> Any:
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


def _show(obj: Any) -> None:
    print(json.dumps(obj, indent=2))


def _upload(http: httpx.Client, path: Path, purpose: str = "fine-tune") -> Any:
    """POST /files; the file object (`status` is `error` for a dataset that failed checks)."""
    with path.open("rb") as f:
        return _check(
            http.post("/files", files={"file": (path.name, f)}, data={"purpose": purpose})
        )


def files_upload(args: argparse.Namespace) -> int:
    with _client(args) as http:
        body = _upload(http, Path(args.path), args.purpose)
    _show(body)
    return 0 if body.get("status") == "processed" else 1


def files_list(args: argparse.Namespace) -> int:
    with _client(args) as http:
        _show(_check(http.get("/files")))
    return 0


# Job fields that name a dataset: a file id, or in a spec file a local path to upload.
FILE_FIELDS = ("training_file", "validation_file")


def _upload_local_files(http: httpx.Client, spec: dict[str, Any], spec_path: Path) -> None:
    """Upload the local files a job spec names (paths relative to the spec file, as
    `lco train` reads them) and put their file ids in their place; `file-...` ids stay."""
    local: dict[str, Path] = {}
    for field in FILE_FIELDS:
        value = spec.get(field)
        if isinstance(value, str) and not value.startswith("file-"):
            local[field] = (spec_path.parent / value).resolve()
            if not local[field].is_file():
                raise ClientError(
                    f"{field}: no such file {local[field]} (nor a file id `file-...`)"
                )
    uploaded: dict[Path, str] = {}  # one upload for a file named twice
    for field, path in local.items():
        if path not in uploaded:
            body = _upload(http, path)
            if body.get("status") != "processed":
                raise ClientError(f"{field}: {path} was refused: {body.get('status_details')}")
            uploaded[path] = body["id"]
            print(f"uploaded {path} as {body['id']} ({field})", file=sys.stderr)
        spec[field] = uploaded[path]


def jobs_submit(args: argparse.Namespace) -> int:
    spec_path = Path(args.config or args.spec)
    text = spec_path.read_text()
    if spec_path.suffix in (".yaml", ".yml"):
        import yaml

        spec = yaml.safe_load(text)
    else:
        spec = json.loads(text)
    if not isinstance(spec, dict):
        raise ClientError(f"{spec_path}: a job spec is a mapping (model, training_file, ...)")
    with _client(args) as http:
        _upload_local_files(http, spec, spec_path)
        job = _check(http.post("/fine_tuning/jobs", json=spec))
    if args.watch:  # the job's id, then its progress (not the whole job object)
        print(f"{job['id']}: {job['status']}", flush=True)
        return _watch(args, job["id"])
    _show(job)
    return 0


def jobs_list(args: argparse.Namespace) -> int:
    with _client(args) as http:
        page = _check(http.get("/fine_tuning/jobs", params={"limit": args.limit}))
    for job in page["data"]:
        print(
            f"{job['id']}  {job['status']:<10} {job['model']}  {job.get('fine_tuned_model') or ''}"
            + _queue_text(job)
        )
    return 0


def _queue_text(job: dict[str, Any]) -> str:
    """`  #2 in default, waiting_for_capacity, starts ~14:05 UTC` for a queued job."""
    place = job.get("queue")
    if not place:
        return ""
    reason = (job.get("status_details") or {}).get("reason") or ""
    eta = place.get("estimated_start_at")
    when = f", starts ~{time.strftime('%H:%M UTC', time.gmtime(eta))}" if eta else ""
    return f"  #{place['position']} in {job.get('pool')}, {reason}{when}"


def pools_show(args: argparse.Namespace) -> int:
    with _client(args) as http:
        _show(_check(http.get(f"/pools/{args.name}" if args.name else "/pools")))
    return 0


def jobs_get(args: argparse.Namespace) -> int:
    with _client(args) as http:
        _show(_check(http.get(f"/fine_tuning/jobs/{args.job_id}")))
    return 0


def jobs_cancel(args: argparse.Namespace) -> int:
    with _client(args) as http:
        _show(_check(http.post(f"/fine_tuning/jobs/{args.job_id}/cancel")))
    return 0


def _team_id(http: httpx.Client, team: str) -> str:
    """The id of the team named `team` (a name or an id), from the admin team list."""
    for row in _check(http.get("/admin/teams"))["data"]:
        if team in (row["id"], row["name"]):
            return str(row["id"])
    raise ClientError(f"no team named {team!r}")


def admin_jobs_list(args: argparse.Namespace) -> int:
    params: dict[str, Any] = {"limit": args.limit}
    if args.status:
        params["status"] = args.status
    if args.after:
        params["after"] = args.after
    with _client(args) as http:
        if args.team:
            params["team_id"] = _team_id(http, args.team)
        page = _check(http.get("/admin/jobs", params=params))
    for job in page["data"]:
        print(
            f"{job['id']}  {job['status']:<10} team {job['organization_id']}  {job['model']}"
            + _queue_text(job)
        )
    if page["has_more"] and page["data"]:
        print(f"(more: --after {page['data'][-1]['id']})", file=sys.stderr)
    return 0


def _admin_job_action(action: str) -> Any:
    def run(args: argparse.Namespace) -> int:
        with _client(args) as http:
            _show(_check(http.post(f"/admin/jobs/{args.job_id}/{action}")))
        return 0

    return run


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


def _watch(args: argparse.Namespace, job_id: str) -> int:
    last = ""
    with _client(args) as http:
        while True:
            job = _check(http.get(f"/fine_tuning/jobs/{job_id}"))
            step = (job.get("progress") or {}).get("step") or 0
            values = None
            if step:
                points = _check(
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


def jobs_watch(args: argparse.Namespace) -> int:
    return _watch(args, args.job_id)


def add_commands(sub: Any) -> None:
    def common(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--base-url")
        p.add_argument("--api-key")
        return p

    files = sub.add_parser("files", help="upload and list dataset files").add_subparsers(
        dest="action", required=True
    )
    p = common(files.add_parser("upload"))
    p.add_argument("path")
    p.add_argument("--purpose", default="fine-tune")
    p.set_defaults(func=files_upload)
    common(files.add_parser("list")).set_defaults(func=files_list)

    jobs = sub.add_parser("jobs", help="submit and follow fine-tuning jobs").add_subparsers(
        dest="action", required=True
    )
    p = common(
        jobs.add_parser(
            "submit",
            help="POST a job body from a JSON or YAML file, uploading the local files it names",
        )
    )
    given = p.add_mutually_exclusive_group(required=True)
    given.add_argument("spec", nargs="?", help="the job file (JSON or YAML)")
    given.add_argument("--config", help="the job file, as `lco train --config` takes it")
    p.add_argument("--watch", action="store_true")
    p.add_argument("--interval", type=float, default=2.0)
    p.set_defaults(func=jobs_submit)
    p = common(jobs.add_parser("list"))
    p.add_argument("--limit", type=int, default=20)
    p.set_defaults(func=jobs_list)
    p = common(sub.add_parser("pools", help="the GPU pools: capacity, running and queued jobs"))
    p.add_argument("name", nargs="?")
    p.set_defaults(func=pools_show)
    for name, func in (("get", jobs_get), ("cancel", jobs_cancel), ("watch", jobs_watch)):
        p = common(jobs.add_parser(name))
        p.add_argument("job_id")
        p.add_argument("--interval", type=float, default=2.0)
        p.set_defaults(func=func)

    admin = sub.add_parser("admin", help="admin key: any team's jobs").add_subparsers(
        dest="resource", required=True
    )
    admin_jobs = admin.add_parser(
        "jobs", help="list, cancel, pause and resume any team's jobs"
    ).add_subparsers(dest="action", required=True)
    p = common(admin_jobs.add_parser("list", help="every team's jobs, newest first"))
    p.add_argument("--team", help="only this team's (a name or an id)")
    p.add_argument("--status", choices=[s.value for s in JobStatus])
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--after", help="the last job id of the previous page")
    p.set_defaults(func=admin_jobs_list)
    for action in ("cancel", "pause", "resume"):
        p = common(admin_jobs.add_parser(action, help=f"{action} any team's job"))
        p.add_argument("job_id")
        p.set_defaults(func=_admin_job_action(action))
