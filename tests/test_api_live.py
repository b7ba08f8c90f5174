"""The dashboard's API in-process (no worker): the job stream (Server-Sent Events) replays
history in order and ends at a terminal state, rollout samples per step stay out of
OpenAI's event list, tenancy holds for both, signed checkpoint download links open one
checkpoint for a few minutes and die with their key, and `/dashboard` is served from the
package with nothing from another origin."""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
import time
from typing import Any

from sqlalchemy import select

from jobs.auth import revoke_api_key
from jobs.db import make_engine, make_session_factory
from jobs.events import SAMPLES_EVENT, add_event
from jobs.leases import Lease, claim, fenced, finish, record_checkpoint, record_metrics
from jobs.links import load_link_secret, sign_download
from jobs.models import ApiKey, Job
from jobs.states import JobStatus
from jobs.storage import Storage
from tests.service_fixtures import STRING_CHECK, ApiClient, rl_lines

SAMPLE = {"prompt": "user: 1+1?", "completion": "2", "reward": 1.0}


def _running_rl_job(api: ApiClient) -> tuple[str, str, Lease, Any]:
    file_id = api.upload(rl_lines()).json()["id"]
    body = {
        "model": "lco-tiny",
        "training_file": file_id,
        "method": {"type": "lco", "lco": {"grader": STRING_CHECK}},
    }
    job_id = api.post("/v1/fine_tuning/jobs", json=body).json()["id"]
    sessions = make_session_factory(make_engine(api.settings))
    with sessions() as session, session.begin():
        lease = claim(session, job_id, owner="test", ttl_s=60)
        team_id = session.scalar(select(Job.team_id).where(Job.id == job_id))
    assert lease is not None and team_id is not None
    return job_id, team_id, lease, sessions


def _read_stream(api: ApiClient, job_id: str) -> list[tuple[str, Any]]:
    """Every message of the stream, until the server closes it."""
    messages = []
    with api.client.stream(
        "GET", f"/v1/fine_tuning/jobs/{job_id}/stream", headers=api.headers
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for block in response.read().decode().split("\n\n"):
            fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
            if "event" in fields:
                messages.append((fields["event"], json.loads(fields["data"])))
    return messages


def test_stream_replays_history_in_order_and_ends_at_a_terminal_state(api: ApiClient) -> None:
    job_id, team_id, lease, sessions = _running_rl_job(api)
    with fenced(sessions, lease) as session:
        for step in (1, 2, 3):
            add_event(
                session,
                job_id,
                f"Samples at step {step}",
                type=SAMPLES_EVENT,
                data={"step": step, "samples": [SAMPLE]},
            )
            record_metrics(session, lease, step, {"reward_mean": step / 10, "total_steps": 3})
        record_checkpoint(
            session,
            lease,
            team_id=team_id,
            step=2,
            rel_path="checkpoints/step-2",
            metrics={"loss": 0.5},
            model_name="ft:lco-tiny:team-a::" + job_id,
        )
    with fenced(sessions, lease) as session:
        finish(session, lease, JobStatus.CANCELLED, message="Fine-tuning job cancelled")

    messages = _read_stream(api, job_id)
    kinds = [kind for kind, _ in messages]
    assert kinds[0] == "job" and messages[0][1]["status"] == "cancelled"
    assert kinds[-1] == "end" and messages[-1][1] == {"status": "cancelled"}
    assert kinds.count("job") == 1 and kinds.count("end") == 1
    metrics = [data for kind, data in messages if kind == "metrics"]
    assert [m["step"] for m in metrics] == [1, 2, 3]
    assert metrics[2]["metrics"]["reward_mean"] == 0.3
    samples = [data for kind, data in messages if kind == "samples"]
    assert [s["step"] for s in samples] == [1, 2, 3] and samples[0]["samples"] == [SAMPLE]
    assert [data["step_number"] for kind, data in messages if kind == "checkpoint"] == [2]
    events = [data["message"] for kind, data in messages if kind == "event"]
    assert "Fine-tuning job cancelled" in events
    assert not any(m.startswith("Samples at step") for m in events)


def test_samples_are_listed_per_step_and_kept_out_of_the_event_list(api: ApiClient) -> None:
    job_id, _, lease, sessions = _running_rl_job(api)
    with fenced(sessions, lease) as session:
        for step in (1, 2, 3):
            add_event(
                session,
                job_id,
                f"Samples at step {step}",
                type=SAMPLES_EVENT,
                data={"step": step, "samples": [SAMPLE, {**SAMPLE, "reward": 0.0}]},
            )
    first = api.get(f"/v1/fine_tuning/jobs/{job_id}/samples", params={"limit": 2}).json()
    assert [s["step"] for s in first["data"]] == [3, 2] and first["has_more"]
    assert first["data"][0]["object"] == "fine_tuning.job.samples"
    assert [s["reward"] for s in first["data"][0]["samples"]] == [1.0, 0.0]
    rest = api.get(
        f"/v1/fine_tuning/jobs/{job_id}/samples", params={"after": first["data"][-1]["id"]}
    ).json()
    assert [s["step"] for s in rest["data"]] == [1] and not rest["has_more"]
    events = api.get(f"/v1/fine_tuning/jobs/{job_id}/events", params={"limit": 100}).json()
    assert events["data"] and all(e["type"] != SAMPLES_EVENT for e in events["data"])


def test_stream_and_samples_are_team_scoped(api: ApiClient) -> None:
    job_id, *_ = _running_rl_job(api)
    for path in ("stream", "samples"):
        url = f"/v1/fine_tuning/jobs/{job_id}/{path}"
        assert api.get(url, headers=api.other_headers).status_code == 404
        assert api.get(url, headers={}).status_code == 401


def test_signed_download_links(api: ApiClient) -> None:
    job_id, team_id, lease, sessions = _running_rl_job(api)
    ckpt_dir = Storage(api.settings).job_dir(team_id, job_id) / "checkpoints" / "step-1"
    ckpt_dir.mkdir(parents=True)
    (ckpt_dir / "config.json").write_text("{}")
    with fenced(sessions, lease) as session:
        ckpt = record_checkpoint(
            session,
            lease,
            team_id=team_id,
            step=1,
            rel_path="checkpoints/step-1",
            metrics={},
            model_name="ft:lco-tiny:team-a::" + job_id,
        )
        ckpt_id = ckpt.id
    path = f"/v1/fine_tuning/jobs/{job_id}/checkpoints/{ckpt_id}/download_link"
    assert api.post(path, headers=api.other_headers).status_code == 404
    link = api.post(path).json()
    assert link["url"].startswith("/v1/downloads/") and link["expires_at"] > time.time()
    assert api.settings.data_dir.name not in link["url"] and api.key not in link["url"]
    response = api.client.get(link["url"])  # no Authorization header: the link is enough
    assert response.status_code == 200, response.text
    with tarfile.open(fileobj=io.BytesIO(response.content)) as tar:
        assert tar.getnames() == [f"{job_id}-step-1/config.json"]
    token = link["url"].removeprefix("/v1/downloads/")
    key_id, _, expires, signature = token.split(".")
    forged = [
        f"{key_id}.ftckpt-other.{expires}.{signature}",  # another checkpoint
        f"{key_id}.{ckpt_id}.{int(expires) + 3600}.{signature}",  # a later expiry
        token[:-1] + ("0" if token[-1] != "0" else "1"),  # a bad signature
        "not-a-token",
    ]
    for bad in forged:
        assert api.client.get(f"/v1/downloads/{bad}").status_code == 404, bad
    with sessions() as session, session.begin():
        key = session.get(ApiKey, key_id)
        assert key is not None
        secret = load_link_secret(api.settings)  # the app's: both read data_dir/link_secret
        expired, _ = sign_download(secret, key, ckpt_id, now=time.time() - 3600)
        assert api.client.get(f"/v1/downloads/{expired}").status_code == 404
        # The link does not depend on the key's stored hash (rehashed, rotated in place).
        key.key_hash = hashlib.sha256(b"another").hexdigest()
    assert api.client.get(link["url"]).status_code == 200
    with sessions() as session, session.begin():
        revoke_api_key(session, key_id)
    assert api.client.get(link["url"]).status_code == 404  # dies with its key


def test_dashboard_is_served_from_the_package_with_nothing_from_elsewhere(
    api: ApiClient,
) -> None:
    page = api.client.get("/dashboard")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "connect-src 'self'" in csp
    # Every asset the page names is local, and is served.
    refs = re.findall(r'(?:src|href)="([^"#]+)"', page.text)
    assert refs and all(r.startswith("/dashboard/static/") or r == "data:," for r in refs)
    for ref in refs:
        if ref.startswith("/"):
            assert api.client.get(ref).status_code == 200, ref
    scripts = ["app.js", "api.js", "charts.js", "compare.js", "format.js", "job.js", "jobs.js"]
    for name in [*scripts, "pools.js"]:
        text = api.client.get(f"/dashboard/static/js/{name}").text
        assert not re.search(r"https?://", text), name  # no CDN, no remote calls
    assert "MIT" in api.client.get("/dashboard/static/vendor/uPlot.LICENSE").text
    # The vendored files are the ones vendor.sh fetched (npm verified them on the way).
    sums = api.client.get("/dashboard/static/vendor/SHA256SUMS").text.splitlines()
    assert len(sums) == 3
    for line in sums:
        digest, name = line.split()
        served = api.client.get(f"/dashboard/static/vendor/{name}").content
        assert hashlib.sha256(served).hexdigest() == digest, name
