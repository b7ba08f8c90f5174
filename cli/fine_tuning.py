"""`lco files ...`, `lco jobs ...`, `lco pools` and `lco admin jobs ...`: client commands
against a running service (`admin` ones with an admin key: any team's jobs).

    lco files upload PATH [--purpose fine-tune] | list
    lco jobs submit [--config] JOB.json|yaml [--watch] | list | get ID | watch ID | cancel ID
    lco pools [NAME]                                  capacity, running and queued jobs
    lco admin jobs list [--team T --status S] | cancel ID | pause ID | resume ID

Settings: `--base-url` (or LCO_BASE_URL) and `--api-key` (or LCO_API_KEY), see `cli.client`.
Responses are printed as JSON; `jobs list` and `admin jobs list` print a line per job and
`jobs watch` progress lines. `jobs submit --config job.yaml` takes the same file as
`lco train`: local paths in `training_file`/`validation_file` are uploaded first and
replaced by their file ids.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from cli import client
from cli.client import ClientError, check, show
from cli.options import CLIENT
from jobs.states import JobStatus


def _upload(http: httpx.Client, path: Path, purpose: str = "fine-tune") -> Any:
    """POST /files; the file object (`status` is `error` for a dataset that failed checks)."""
    with path.open("rb") as f:
        return check(http.post("/files", files={"file": (path.name, f)}, data={"purpose": purpose}))


def files_upload(args: argparse.Namespace) -> int:
    with client._client(args) as http:
        body = _upload(http, Path(args.path), args.purpose)
    show(body)
    return 0 if body.get("status") == "processed" else 1


def files_list(args: argparse.Namespace) -> int:
    with client._client(args) as http:
        show(check(http.get("/files")))
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
    with client._client(args) as http:
        _upload_local_files(http, spec, spec_path)
        job = check(http.post("/fine_tuning/jobs", json=spec))
    if args.watch:  # the job's id, then its progress (not the whole job object)
        print(f"{job['id']}: {job['status']}", flush=True)
        return client.watch(args, job["id"])
    show(job)
    return 0


def jobs_list(args: argparse.Namespace) -> int:
    with client._client(args) as http:
        page = check(http.get("/fine_tuning/jobs", params={"limit": args.limit}))
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
    with client._client(args) as http:
        show(check(http.get(f"/pools/{args.name}" if args.name else "/pools")))
    return 0


def jobs_get(args: argparse.Namespace) -> int:
    with client._client(args) as http:
        show(check(http.get(f"/fine_tuning/jobs/{args.job_id}")))
    return 0


def jobs_cancel(args: argparse.Namespace) -> int:
    with client._client(args) as http:
        show(check(http.post(f"/fine_tuning/jobs/{args.job_id}/cancel")))
    return 0


def _team_id(http: httpx.Client, team: str) -> str:
    """The id of the team named `team` (a name or an id), from the admin team list."""
    for row in check(http.get("/admin/teams"))["data"]:
        if team in (row["id"], row["name"]):
            return str(row["id"])
    raise ClientError(f"no team named {team!r}")


def admin_jobs_list(args: argparse.Namespace) -> int:
    params: dict[str, Any] = {"limit": args.limit}
    if args.status:
        params["status"] = args.status
    if args.after:
        params["after"] = args.after
    with client._client(args) as http:
        if args.team:
            params["team_id"] = _team_id(http, args.team)
        page = check(http.get("/admin/jobs", params=params))
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
        with client._client(args) as http:
            show(check(http.post(f"/admin/jobs/{args.job_id}/{action}")))
        return 0

    return run


def jobs_watch(args: argparse.Namespace) -> int:
    return client.watch(args, args.job_id)


def add_parsers(sub: Any) -> None:
    """`files ...`, `jobs ...`, `pools` and `admin jobs ...`, on the top-level subparsers."""
    files = sub.add_parser("files", help="upload and list dataset files").add_subparsers(
        dest="action", required=True
    )
    p = files.add_parser("upload", parents=[CLIENT])
    p.add_argument("path")
    p.add_argument("--purpose", default="fine-tune")
    p.set_defaults(func=files_upload)
    files.add_parser("list", parents=[CLIENT]).set_defaults(func=files_list)

    jobs = sub.add_parser("jobs", help="submit and follow fine-tuning jobs").add_subparsers(
        dest="action", required=True
    )
    p = jobs.add_parser(
        "submit",
        parents=[CLIENT],
        help="POST a job body from a JSON or YAML file, uploading the local files it names",
    )
    given = p.add_mutually_exclusive_group(required=True)
    given.add_argument("spec", nargs="?", help="the job file (JSON or YAML)")
    given.add_argument("--config", help="the job file, as `lco train --config` takes it")
    p.add_argument("--watch", action="store_true")
    p.add_argument("--interval", type=float, default=2.0)
    p.set_defaults(func=jobs_submit)
    p = jobs.add_parser("list", parents=[CLIENT])
    p.add_argument("--limit", type=int, default=20)
    p.set_defaults(func=jobs_list)
    p = sub.add_parser(
        "pools", parents=[CLIENT], help="the GPU pools: capacity, running and queued jobs"
    )
    p.add_argument("name", nargs="?")
    p.set_defaults(func=pools_show)
    for name, func in (("get", jobs_get), ("cancel", jobs_cancel), ("watch", jobs_watch)):
        p = jobs.add_parser(name, parents=[CLIENT])
        p.add_argument("job_id")
        p.add_argument("--interval", type=float, default=2.0)
        p.set_defaults(func=func)

    admin = sub.add_parser("admin", help="admin key: any team's jobs").add_subparsers(
        dest="resource", required=True
    )
    admin_jobs = admin.add_parser(
        "jobs", help="list, cancel, pause and resume any team's jobs"
    ).add_subparsers(dest="action", required=True)
    p = admin_jobs.add_parser("list", parents=[CLIENT], help="every team's jobs, newest first")
    p.add_argument("--team", help="only this team's (a name or an id)")
    p.add_argument("--status", choices=[s.value for s in JobStatus])
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--after", help="the last job id of the previous page")
    p.set_defaults(func=admin_jobs_list)
    for action in ("cancel", "pause", "resume"):
        p = admin_jobs.add_parser(action, parents=[CLIENT], help=f"{action} any team's job")
        p.add_argument("job_id")
        p.set_defaults(func=_admin_job_action(action))
