"""`lco files ...`, `lco jobs ...`, `lco pools` and `lco admin jobs ...`: client commands
against a running service (`admin` ones with an admin key: any team's jobs).

    lco files upload PATH [--purpose fine-tune] | list | get ID | delete ID
    lco files content ID [--out PATH|-]
    lco jobs submit [--config] JOB.json|yaml [--watch]
    lco jobs list | get ID | cancel ID | pause ID | resume ID
    lco jobs events ID | checkpoints ID           newest first; --limit N --after ID pages
    lco jobs download ID [CHECKPOINT] [--out PATH|-]   a checkpoint's files as a tar
    lco jobs watch ID                             its progress, from the job's event stream
    lco pools [NAME]                              capacity, running and queued jobs
    lco admin jobs list [--team T --status S] | cancel ID | pause ID | resume ID

Settings: `--base-url` (or LCO_BASE_URL) and `--api-key` (or LCO_API_KEY), see `cli.client`.
List commands print a line per item and `--json` the API's page; the others print the
API's JSON object (`--json` is accepted there too, so a script can pass it everywhere).
`jobs submit --config job.yaml` takes the same file as `lco train`: local paths in
`training_file`/`validation_file` are uploaded first and replaced by their file ids. It
sends an `Idempotency-Key`, and resends with the same key when the answer was lost, so a
retry never makes a second job.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from cli import client
from cli.client import ClientError, check, show
from cli.options import CLIENT, JSON
from jobs.states import JobStatus

Command = Callable[[argparse.Namespace], int]


def _one(method: str, path: str) -> Command:
    """A command that sends one request, `path` filled in from its arguments (`{job_id}`),
    and prints the JSON object the service answers."""

    def run(args: argparse.Namespace) -> int:
        with client._client(args) as http:
            show(check(http.request(method, path.format(**vars(args)))))
        return 0

    return run


def _page(args: argparse.Namespace, page: dict[str, Any], line: Callable[[Any], str]) -> None:
    """A list's page: a line per item (and, on stderr, how to get the next page), or with
    `--json` the page as the API sent it."""
    if args.json:
        show(page)
        return
    for item in page["data"]:
        print(line(item))
    if page.get("has_more") and page["data"]:
        print(f"(more: --after {page['data'][-1]['id']})", file=sys.stderr)


def _params(args: argparse.Namespace, **more: Any) -> dict[str, Any]:
    """The paging query (`limit`, and `after` when given) plus `more`'s set values."""
    params = {"limit": args.limit, "after": args.after, **more}
    return {name: value for name, value in params.items() if value is not None}


def _when(epoch: int | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(epoch)) if epoch else "-"


def _upload(http: httpx.Client, path: Path, purpose: str = "fine-tune") -> Any:
    """POST /files; the file object (`status` is `error` for a dataset that failed checks)."""
    try:
        f = path.open("rb")
    except OSError as exc:
        raise ClientError(f"cannot read {path}: {exc.strerror}") from None
    with f:
        return check(http.post("/files", files={"file": (path.name, f)}, data={"purpose": purpose}))


def files_upload(args: argparse.Namespace) -> int:
    with client._client(args) as http:
        body = _upload(http, Path(args.path), args.purpose)
    show(body)
    return 0 if body.get("status") == "processed" else 1


def files_list(args: argparse.Namespace) -> int:
    with client._client(args) as http:
        page = check(http.get("/files", params=_params(args)))
    _page(
        args,
        page,
        lambda f: (
            f"{f['id']}  {f['status']:<9} {f['purpose']:<10} {f['bytes']:>10,} B  "
            f"{_when(f['created_at'])}  {f['filename']}"
        ),
    )
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


# Failures after which the job may have been created: the retry carries the same
# Idempotency-Key, so the service answers it with the first job instead of a second one.
# (A refused connection sent nothing: it is not retried.)
RETRIED = (httpx.ReadTimeout, httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError)
SUBMIT_ATTEMPTS = 3


def _create_job(http: httpx.Client, spec: dict[str, Any]) -> Any:
    key = f"lco-cli-{uuid.uuid4()}"
    for attempt in range(1, SUBMIT_ATTEMPTS + 1):
        try:
            return check(
                http.post("/fine_tuning/jobs", json=spec, headers={"Idempotency-Key": key})
            )
        except RETRIED:
            if attempt == SUBMIT_ATTEMPTS:
                raise
            time.sleep(attempt)


def _read_spec(path: Path) -> dict[str, Any]:
    import yaml

    try:
        text = path.read_text()
        spec = yaml.safe_load(text) if path.suffix in (".yaml", ".yml") else json.loads(text)
    except OSError as exc:
        raise ClientError(f"cannot read {path}: {exc.strerror}") from None
    except (ValueError, yaml.YAMLError) as exc:  # both say where
        raise ClientError(f"{path}: {' '.join(str(exc).split())}") from None
    if not isinstance(spec, dict):
        raise ClientError(f"{path}: a job spec is a mapping (model, training_file, ...)")
    return spec


def jobs_submit(args: argparse.Namespace) -> int:
    spec_path = Path(args.config or args.spec)
    spec = _read_spec(spec_path)
    with client._client(args) as http:
        _upload_local_files(http, spec, spec_path)
        job = _create_job(http, spec)
    if args.watch:  # the job's id, then its progress (not the whole job object)
        print(f"{job['id']}: {job['status']}", flush=True)
        return client.watch(args, job["id"])
    show(job)
    return 0


def jobs_list(args: argparse.Namespace) -> int:
    with client._client(args) as http:
        page = check(http.get("/fine_tuning/jobs", params=_params(args)))
    _page(
        args,
        page,
        lambda job: (
            f"{job['id']}  {job['status']:<10} {job['model']}  "
            f"{job.get('fine_tuned_model') or ''}" + _queue_text(job)
        ),
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
    with client._client(args) as http:
        show(check(http.get(f"/pools/{args.name}" if args.name else "/pools")))
    return 0


def jobs_events(args: argparse.Namespace) -> int:
    with client._client(args) as http:
        page = check(http.get(f"/fine_tuning/jobs/{args.job_id}/events", params=_params(args)))
    _page(
        args,
        page,
        lambda e: f"{_when(e['created_at'])}  {e['level']:<5} {e['message']}",
    )
    return 0


def jobs_checkpoints(args: argparse.Namespace) -> int:
    with client._client(args) as http:
        path = f"/fine_tuning/jobs/{args.job_id}/checkpoints"
        page = check(http.get(path, params=_params(args)))

    def line(c: dict[str, Any]) -> str:
        shown = "  ".join(
            f"{k}={v:.4g}"
            for k, v in c["metrics"].items()
            if k != "step" and isinstance(v, int | float)
        )
        return f"{c['id']}  step {c['step_number']:<6} {_when(c['created_at'])}  {shown}".rstrip()

    _page(args, page, line)
    return 0


def jobs_download(args: argparse.Namespace) -> int:
    """A checkpoint's files as a tar; without a checkpoint id, the job's newest."""
    with client._client(args) as http:
        jobs_path = f"/fine_tuning/jobs/{args.job_id}/checkpoints"
        checkpoint = args.checkpoint
        if checkpoint is None:
            newest = check(http.get(jobs_path, params={"limit": 1}))["data"]
            if not newest:
                raise ClientError(f"{args.job_id} has no checkpoints yet")
            checkpoint = newest[0]["id"]
        client.save(http, f"{jobs_path}/{checkpoint}/download", args.out, f"{checkpoint}.tar")
    return 0


def files_content(args: argparse.Namespace) -> int:
    with client._client(args) as http:
        client.save(http, f"/files/{args.file_id}/content", args.out, f"{args.file_id}.jsonl")
    return 0


def _team_id(http: httpx.Client, team: str) -> str:
    """The id of the team named `team` (a name or an id), from the admin team list."""
    for row in check(http.get("/admin/teams"))["data"]:
        if team in (row["id"], row["name"]):
            return str(row["id"])
    raise ClientError(f"no team named {team!r}")


def admin_jobs_list(args: argparse.Namespace) -> int:
    with client._client(args) as http:
        team_id = _team_id(http, args.team) if args.team else None
        page = check(
            http.get("/admin/jobs", params=_params(args, status=args.status, team_id=team_id))
        )
    _page(
        args,
        page,
        lambda job: (
            f"{job['id']}  {job['status']:<10} team {job['organization_id']}  "
            f"{job['model']}" + _queue_text(job)
        ),
    )
    return 0


def jobs_watch(args: argparse.Namespace) -> int:
    return client.watch(args, args.job_id)


OUT_HELP = "a file, or a directory (default: here) for the service's file name; - for stdout"


def _paged(p: argparse.ArgumentParser, limit: int) -> argparse.ArgumentParser:
    p.add_argument("--limit", type=int, default=limit, help=f"items per page (default {limit})")
    p.add_argument("--after", help="the last id of the previous page")
    return p


def add_parsers(sub: Any) -> None:
    """`files ...`, `jobs ...`, `pools` and `admin jobs ...`, on the top-level subparsers."""
    files = sub.add_parser("files", help="upload, list and delete dataset files").add_subparsers(
        dest="action", required=True
    )
    p = files.add_parser("upload", parents=[CLIENT, JSON], help="upload and validate a JSONL file")
    p.add_argument("path")
    p.add_argument("--purpose", default="fine-tune")
    p.set_defaults(func=files_upload)
    p = _paged(
        files.add_parser("list", parents=[CLIENT, JSON], help="the team's files, newest first"), 20
    )
    p.set_defaults(func=files_list)
    for action, method in (("get", "GET"), ("delete", "DELETE")):
        p = files.add_parser(action, parents=[CLIENT, JSON], help=f"{action} a file object")
        p.add_argument("file_id")
        p.set_defaults(func=_one(method, "/files/{file_id}"))
    p = files.add_parser("content", parents=[CLIENT], help="download a file's contents")
    p.add_argument("file_id")
    p.add_argument("--out", help=OUT_HELP)
    p.set_defaults(func=files_content)

    jobs = sub.add_parser("jobs", help="submit and follow fine-tuning jobs").add_subparsers(
        dest="action", required=True
    )
    p = jobs.add_parser(
        "submit",
        parents=[CLIENT, JSON],
        help="POST a job body from a JSON or YAML file, uploading the local files it names",
    )
    given = p.add_mutually_exclusive_group(required=True)
    given.add_argument("spec", nargs="?", help="the job file (JSON or YAML)")
    given.add_argument("--config", help="the job file, as `lco train --config` takes it")
    p.add_argument("--watch", action="store_true", help="then follow it, as `jobs watch` does")
    p.set_defaults(func=jobs_submit)
    p = _paged(
        jobs.add_parser("list", parents=[CLIENT, JSON], help="the team's jobs, newest first"), 20
    )
    p.set_defaults(func=jobs_list)
    path = "/fine_tuning/jobs/{job_id}"
    for action, func, about in (
        ("get", _one("GET", path), "the job object"),
        ("cancel", _one("POST", f"{path}/cancel"), "cancel a job"),
        ("pause", _one("POST", f"{path}/pause"), "pause a job (a running one stops)"),
        (
            "resume",
            _one("POST", f"{path}/resume"),
            "queue a paused job again (from its newest checkpoint)",
        ),
        ("watch", jobs_watch, "follow a job to its end (exit 0 if it succeeded)"),
    ):
        p = jobs.add_parser(
            action, parents=[CLIENT] if action == "watch" else [CLIENT, JSON], help=about
        )
        p.add_argument("job_id")
        p.set_defaults(func=func)
    for action, func, limit in (("events", jobs_events, 20), ("checkpoints", jobs_checkpoints, 10)):
        about = f"a job's {action}, newest first"
        p = _paged(jobs.add_parser(action, parents=[CLIENT, JSON], help=about), limit)
        p.add_argument("job_id")
        p.set_defaults(func=func)
    p = jobs.add_parser("download", parents=[CLIENT], help="a checkpoint's files, as a tar")
    p.add_argument("job_id")
    p.add_argument("checkpoint", nargs="?", help="a checkpoint id (default: the newest)")
    p.add_argument("--out", help=OUT_HELP)
    p.set_defaults(func=jobs_download)
    p = sub.add_parser(
        "pools", parents=[CLIENT, JSON], help="the GPU pools: capacity, running and queued jobs"
    )
    p.add_argument("name", nargs="?")
    p.set_defaults(func=pools_show)

    admin = sub.add_parser("admin", help="admin key: any team's jobs").add_subparsers(
        dest="resource", required=True
    )
    admin_jobs = admin.add_parser(
        "jobs", help="list, cancel, pause and resume any team's jobs"
    ).add_subparsers(dest="action", required=True)
    p = admin_jobs.add_parser(
        "list", parents=[CLIENT, JSON], help="every team's jobs, newest first"
    )
    p.add_argument("--team", help="only this team's (a name or an id)")
    p.add_argument("--status", choices=[s.value for s in JobStatus])
    _paged(p, 20)
    p.set_defaults(func=admin_jobs_list)
    for action in ("cancel", "pause", "resume"):
        p = admin_jobs.add_parser(action, parents=[CLIENT, JSON], help=f"{action} any team's job")
        p.add_argument("job_id")
        p.set_defaults(func=_one("POST", f"/admin/jobs/{{job_id}}/{action}"))
