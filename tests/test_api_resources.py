"""The HTTP surface in-process (no worker): files, job listing with cursor pages, tenancy,
events, metrics, checkpoint download, and that the API process never imports torch."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile

from sqlalchemy import select

from jobs.db import make_engine, make_session_factory
from jobs.leases import claim, fenced, record_checkpoint, record_metrics
from jobs.models import Job
from jobs.storage import Storage
from tests.service_fixtures import ROOT, STRING_CHECK, ApiClient, rl_lines, sft_body, sft_lines


def test_file_lifecycle(api: ApiClient) -> None:
    data = sft_lines(3)
    file = api.upload(data, name="../../etc/passwd").json()
    assert file["object"] == "file" and file["id"].startswith("file-")
    assert file["status"] == "processed" and file["bytes"] == len(data)
    assert file["filename"] == "passwd"  # user text never becomes a path
    assert api.get(f"/v1/files/{file['id']}").json() == file
    assert api.get(f"/v1/files/{file['id']}/content").content == data
    listed = api.get("/v1/files").json()
    assert listed["object"] == "list" and [f["id"] for f in listed["data"]] == [file["id"]]
    deleted = api.delete(f"/v1/files/{file['id']}").json()
    assert deleted == {"id": file["id"], "object": "file", "deleted": True}
    assert api.get(f"/v1/files/{file['id']}").status_code == 404


def test_file_in_use_by_an_active_job_cannot_be_deleted(api: ApiClient) -> None:
    file_id = api.upload(sft_lines()).json()["id"]
    api.post("/v1/fine_tuning/jobs", json=sft_body(file_id))
    assert api.delete(f"/v1/files/{file_id}").status_code == 409


def test_jobs_cursor_pagination_newest_first(api: ApiClient) -> None:
    file_id = api.upload(sft_lines()).json()["id"]
    ids = [api.post("/v1/fine_tuning/jobs", json=sft_body(file_id)).json()["id"] for _ in range(5)]
    seen, after = [], None
    while True:
        page = api.get(
            "/v1/fine_tuning/jobs", params={"limit": 2, **({"after": after} if after else {})}
        ).json()
        seen += [j["id"] for j in page["data"]]
        if not page["has_more"]:
            break
        after = page["data"][-1]["id"]
    assert seen == ids[::-1]


def test_other_teams_objects_answer_404(api: ApiClient) -> None:
    file_id = api.upload(sft_lines()).json()["id"]
    job_id = api.post("/v1/fine_tuning/jobs", json=sft_body(file_id)).json()["id"]
    other = api.other_headers
    for path in (
        f"/v1/files/{file_id}",
        f"/v1/files/{file_id}/content",
        f"/v1/fine_tuning/jobs/{job_id}",
        f"/v1/fine_tuning/jobs/{job_id}/events",
    ):
        assert api.get(path, headers=other).status_code == 404
    assert api.post(f"/v1/fine_tuning/jobs/{job_id}/cancel", headers=other).status_code == 404
    assert api.delete(f"/v1/files/{file_id}", headers=other).status_code == 404
    assert api.get("/v1/fine_tuning/jobs", headers=other).json()["data"] == []
    # Another team cannot train on this team's file either.
    response = api.post("/v1/fine_tuning/jobs", json=sft_body(file_id), headers=other)
    assert response.status_code == 400 and response.json()["error"]["param"] == "training_file"


def test_reinforcement_job_shape(api: ApiClient) -> None:
    file_id = api.upload(rl_lines()).json()["id"]
    body = {
        "model": "lco-tiny",
        "training_file": file_id,
        "suffix": "adder",
        "seed": 7,
        "metadata": {"team": "a"},
        "method": {
            "type": "lco",
            "lco": {"grader": STRING_CHECK, "hyperparameters": {"beta": 1.5}},
        },
    }
    job = api.post("/v1/fine_tuning/jobs", json=body).json()
    assert job["object"] == "fine_tuning.job" and job["id"].startswith("ftjob-")
    assert job["status"] == "queued" and job["seed"] == 7 and job["metadata"] == {"team": "a"}
    # `lco` is shorthand for reinforcement with algorithm lco.
    assert job["method"]["type"] == "reinforcement"
    hp = job["method"]["reinforcement"]["hyperparameters"]
    assert hp["algorithm"] == "lco" and hp["beta"] == 1.5
    assert job["method"]["reinforcement"]["grader"]["type"] == "string_check"
    assert job["user_provided_suffix"] == "adder"
    events = api.get(f"/v1/fine_tuning/jobs/{job['id']}/events").json()
    assert events["data"][0]["object"] == "fine_tuning.job.event"


def test_pause_and_resume_a_queued_job(api: ApiClient) -> None:
    file_id = api.upload(sft_lines()).json()["id"]
    job_id = api.post("/v1/fine_tuning/jobs", json=sft_body(file_id)).json()["id"]
    assert api.post(f"/v1/fine_tuning/jobs/{job_id}/pause").json()["status"] == "paused"
    assert api.post(f"/v1/fine_tuning/jobs/{job_id}/resume").json()["status"] == "queued"


def test_metrics_checkpoints_and_download(api: ApiClient) -> None:
    file_id = api.upload(sft_lines()).json()["id"]
    job_id = api.post("/v1/fine_tuning/jobs", json=sft_body(file_id)).json()["id"]
    sessions = make_session_factory(make_engine(api.settings))
    with sessions() as session, session.begin():
        lease = claim(session, job_id, owner="test", ttl_s=60)
        team_id = session.scalar(select(Job.team_id).where(Job.id == job_id))
    assert lease is not None and team_id is not None
    ckpt_dir = Storage(api.settings).job_dir(team_id, job_id) / "checkpoints" / "step-2"
    ckpt_dir.mkdir(parents=True)
    (ckpt_dir / "config.json").write_text(json.dumps({"model_type": "qwen2"}))
    (ckpt_dir / "manifest.json").write_text("{}")
    with fenced(sessions, lease) as session:
        for step in (1, 2, 3):
            record_metrics(session, lease, step, {"loss": 1.0 / step, "total_steps": 3})
        record_checkpoint(
            session,
            lease,
            team_id=team_id,
            step=2,
            rel_path="checkpoints/step-2",
            metrics={"loss": 0.5},
            model_name="ft:lco-tiny:team-a::" + job_id,
        )
    job = api.get(f"/v1/fine_tuning/jobs/{job_id}").json()
    assert job["status"] == "running" and job["progress"] == {
        "step": 3,
        "total_steps": 3,
        "percent": 100.0,
    }
    metrics = api.get(f"/v1/fine_tuning/jobs/{job_id}/metrics", params={"from_step": 2}).json()
    assert [m["step"] for m in metrics["data"]] == [2, 3]
    ckpts = api.get(f"/v1/fine_tuning/jobs/{job_id}/checkpoints").json()["data"]
    assert len(ckpts) == 1 and ckpts[0]["object"] == "fine_tuning.job.checkpoint"
    assert ckpts[0]["step_number"] == 2 and ckpts[0]["metrics"]["step"] == 2
    response = api.get(f"/v1/fine_tuning/jobs/{job_id}/checkpoints/{ckpts[0]['id']}/download")
    assert response.status_code == 200 and response.headers["content-type"] == "application/x-tar"
    with tarfile.open(fileobj=io.BytesIO(response.content)) as tar:
        names = sorted(tar.getnames())
    assert names == [f"{job_id}-step-2/config.json", f"{job_id}-step-2/manifest.json"]
    # Another team cannot download it.
    other = api.get(
        f"/v1/fine_tuning/jobs/{job_id}/checkpoints/{ckpts[0]['id']}/download",
        headers=api.other_headers,
    )
    assert other.status_code == 404


def test_healthz(api: ApiClient) -> None:
    assert api.client.get("/healthz").json() == {"status": "ok"}


def test_api_process_never_imports_torch() -> None:
    code = (
        "import sys; from jobs.settings import Settings; from api.app import create_app; "
        "import tempfile, pathlib; create_app(Settings(data_dir=pathlib.Path(tempfile.mkdtemp()))); "
        "import cli.main; "
        "bad = [m for m in ('torch', 'transformers', 'lco_core', 'worker') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
