"""Sharing the pools through the API, in-process with a scripted training child: queue
place and ETA on every queued job (and how they move as jobs finish), quotas (429 or
waiting), priority ceilings, the pool view, admin routes and CLI, per-key rate limits and
Idempotency-Key replay."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from api.app import create_app
from cli import client as client_commands
from cli.main import main as lco
from jobs.auth import create_api_key, create_team, get_team_by_name
from jobs.db import make_engine, make_session_factory, transaction
from jobs.errors import NotFound
from jobs.models import IdempotencyRecord
from jobs.settings import Settings
from tests.service_fixtures import (
    ApiClient,
    new_key,
    register_worker,
    sft_body,
    sft_lines,
)
from tests.worker_fakes import FAKE_CHILD
from worker.context import WorkerContext
from worker.tasks import run_job


def _submit(api: ApiClient, headers: dict[str, str] | None = None, **extra: Any) -> dict[str, Any]:
    file_id = api.upload(sft_lines(), headers=headers or api.headers).json()["id"]
    body = {**sft_body(file_id), "metadata": {"steps": "2", "delay": "0.05"}, **extra}
    response = api.post("/v1/fine_tuning/jobs", json=body, headers=headers or api.headers)
    assert response.status_code == 200, response.text
    return dict(response.json())


def _get(api: ApiClient, job_id: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    return dict(api.get(f"/v1/fine_tuning/jobs/{job_id}", headers=headers or api.headers).json())


def _admin_headers(settings: Settings) -> dict[str, str]:
    """A new admin key of the `ops` team."""
    with transaction(make_session_factory(make_engine(settings))) as session:
        try:
            team = get_team_by_name(session, "ops")
        except NotFound:
            team = create_team(session, "ops")
        _, key = create_api_key(session, team, is_admin=True)
    return {"Authorization": f"Bearer {key}"}


def _team_id(settings: Settings, name: str) -> str:
    with transaction(make_session_factory(make_engine(settings))) as session:
        return get_team_by_name(session, name).id


def _set_policy(api: ApiClient, team: str, **policy: Any) -> dict[str, Any]:
    admin = _admin_headers(api.settings)
    response = api.client.patch(
        f"/v1/admin/teams/{_team_id(api.settings, team)}", json=policy, headers=admin
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


@pytest.fixture
def one_gpu(api: ApiClient) -> ApiClient:
    register_worker(api.settings, gpus=1, hours=24)  # the fixture's worker, now 1 GPU
    return api


def test_every_queued_job_shows_its_place_and_eta_which_move_as_jobs_finish(
    one_gpu: ApiClient,
) -> None:
    api = one_gpu
    jobs = [_submit(api) for _ in range(3)]
    first, second, third = (_get(api, j["id"]) for j in jobs)
    # The first is admitted and waits for its worker; the others wait for the GPU.
    assert first["queue"]["position"] == 1 and first["queue"]["ahead"] == 0
    assert first["status_details"]["reason"] == "waiting_for_worker"
    assert [second["queue"]["position"], third["queue"]["position"]] == [2, 3]
    assert [second["queue"]["ahead"], third["queue"]["ahead"]] == [1, 2]
    for job in (second, third):
        assert job["status"] == "queued"
        assert job["status_details"]["phase"] == "queued"
        assert job["status_details"]["reason"] == "waiting_for_capacity"
        assert job["status_details"]["since"] >= job["created_at"]
    # No run has finished yet: each waits the default run length per job ahead of it.
    default = int(api.settings.default_job_duration_s)
    assert second["queue"]["estimated_start_at"] >= first["created_at"] + default
    assert third["queue"]["estimated_start_at"] >= second["queue"]["estimated_start_at"] + default
    listed = {j["id"]: j for j in api.get("/v1/fine_tuning/jobs").json()["data"]}
    assert all(listed[j["id"]]["queue"] is not None for j in jobs)

    ctx = WorkerContext(api.settings, child_command=FAKE_CHILD)
    assert run_job(ctx, third["id"]) is False  # not admitted: its message would do nothing
    assert run_job(ctx, first["id"]) is True
    done, second_after, third_after = (_get(api, j["id"]) for j in jobs)
    assert done["status"] == "succeeded" and done["queue"] is None
    # Finishing freed the GPU and admitted the next one at once (no scheduler loop here).
    assert second_after["queue"]["position"] == 1
    assert second_after["status_details"]["reason"] == "waiting_for_worker"
    assert third_after["queue"]["position"] == 2 and third_after["queue"]["ahead"] == 1
    # ETAs now follow the pool's measured run length (about a second), not the default.
    assert (
        third_after["queue"]["estimated_start_at"]
        < third["queue"]["estimated_start_at"] - default // 2
    )
    assert run_job(ctx, second["id"]) is True
    assert _get(api, third["id"])["queue"]["position"] == 1


def test_gpu_quota_with_queue_policy_holds_jobs_waiting_for_quota(api: ApiClient) -> None:
    _set_policy(api, "team-a", max_gpus=1)
    first, second = _submit(api), _submit(api)
    assert _get(api, first["id"])["status_details"]["reason"] == "waiting_for_worker"
    held = _get(api, second["id"])
    assert held["status_details"]["reason"] == "waiting_for_quota"
    # Another team is not held by team-a's quota.
    other = _submit(api, headers=api.other_headers)
    reason = _get(api, other["id"], api.other_headers)["status_details"]["reason"]
    assert reason == "waiting_for_worker"


def test_gpu_quota_with_reject_policy_answers_429(api: ApiClient) -> None:
    _set_policy(api, "team-a", max_gpus=1, quota_policy="reject")
    _submit(api)
    file_id = api.upload(sft_lines()).json()["id"]
    response = api.post("/v1/fine_tuning/jobs", json=sft_body(file_id))
    assert response.status_code == 429, response.text
    assert int(response.headers["Retry-After"]) > 0
    error = response.json()["error"]
    assert error["code"] == "gpu_quota_exceeded" and error["type"] == "rate_limit_error"
    assert "1 of its 1 GPUs" in error["message"]


def test_queued_jobs_quota_answers_429_with_a_clear_message(api: ApiClient) -> None:
    _set_policy(api, "team-a", max_queued_jobs=2)
    _submit(api), _submit(api)
    file_id = api.upload(sft_lines()).json()["id"]
    response = api.post("/v1/fine_tuning/jobs", json=sft_body(file_id))
    assert response.status_code == 429
    error = response.json()["error"]
    assert error["code"] == "queued_jobs_quota_exceeded"
    assert "2 queued jobs, its quota is 2" in error["message"]


def test_a_job_bigger_than_the_gpu_quota_is_a_400_on_resources_gpus(api: ApiClient) -> None:
    _set_policy(api, "team-a", max_gpus=2)
    file_id = api.upload(sft_lines()).json()["id"]
    body = {**sft_body(file_id), "resources": {"gpus": 4}}
    error = api.post("/v1/fine_tuning/jobs", json=body).json()["error"]
    assert (error["param"], error["code"]) == ("resources.gpus", "exceeds_quota")


def test_a_job_bigger_than_every_worker_stays_queued_and_says_why(one_gpu: ApiClient) -> None:
    job = _submit(one_gpu, resources={"gpus": 2})
    details = _get(one_gpu, job["id"])["status_details"]
    assert (details["phase"], details["reason"]) == ("queued", "waiting_for_larger_worker")
    assert "asks for 2 GPUs" in details["message"] and "has 1" in details["message"]


def test_unknown_pool_is_a_400_on_pool(api: ApiClient) -> None:
    file_id = api.upload(sft_lines()).json()["id"]
    body = {**sft_body(file_id), "pool": "h100"}
    response = api.post("/v1/fine_tuning/jobs", json=body)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "pool"


def test_priority_is_clamped_to_the_team_ceiling(api: ApiClient) -> None:
    _set_policy(api, "team-a", max_priority="normal")
    job = _submit(api, priority="high")
    assert job["priority"] == "normal"
    events = api.get(f"/v1/fine_tuning/jobs/{job['id']}/events").json()["data"]
    assert any("lowered to normal" in e["message"] for e in events)
    assert _submit(api, priority="low")["priority"] == "low"


def test_pool_view_lists_jobs_per_team_and_usage_against_quota(one_gpu: ApiClient) -> None:
    api = one_gpu
    _set_policy(api, "team-a", max_gpus=4, share=2.0)
    mine = [_submit(api) for _ in range(2)]
    theirs = _submit(api, headers=api.other_headers)
    page = api.get("/v1/pools").json()
    assert page["object"] == "list" and [p["name"] for p in page["data"]] == ["default"]
    pool = api.get("/v1/pools/default").json()
    assert pool == page["data"][0]
    assert (pool["capacity_gpus"], pool["used_gpus"], pool["workers"]) == (1, 1, 1)
    queued = {q["id"]: q for q in pool["queued"]}
    assert {mine[0]["id"], mine[1]["id"], None} == set(queued)  # theirs: id hidden
    assert [q["position"] for q in pool["queued"]] == [1, 2, 3]
    teams = {t["team"]: t for t in pool["teams"]}
    assert teams["team-a"]["gpus"] == {"used": 1.0, "limit": 4.0}
    assert teams["team-a"]["share"] == 2.0 and teams["team-a"]["queued_jobs"] == 2
    assert teams["team-b"]["queued_quota"] == {"used": 1.0, "limit": None}
    admin_view = api.get("/v1/pools/default", headers=_admin_headers(api.settings)).json()
    assert theirs["id"] in {q["id"] for q in admin_view["queued"]}
    missing = api.get("/v1/pools/nope")
    assert missing.status_code == 404 and missing.json()["error"]["param"] == "pool"


def test_admin_routes_manage_teams_keys_and_quotas(api: ApiClient) -> None:
    admin = _admin_headers(api.settings)
    assert api.get("/v1/admin/teams").status_code == 403
    created = api.post(
        "/v1/admin/teams", json={"name": "vision", "share": 3, "max_gpus": 8}, headers=admin
    ).json()
    assert (created["name"], created["share"], created["max_gpus"]) == ("vision", 3.0, 8)
    assert api.post("/v1/admin/teams", json={"name": "vision"}, headers=admin).status_code == 409
    team_url = f"/v1/admin/teams/{created['id']}"
    patched = api.client.patch(
        team_url, json={"max_gpus": None, "quota_policy": "reject"}, headers=admin
    ).json()
    assert (patched["max_gpus"], patched["quota_policy"], patched["share"]) == (None, "reject", 3.0)
    bad = api.client.patch(team_url, json={"share": 0}, headers=admin)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "share"
    key = api.post(f"{team_url}/keys", json={"name": "ci"}, headers=admin).json()
    assert key["key"].startswith("lco-") and not key["is_admin"]
    vision = {"Authorization": f"Bearer {key['key']}"}
    assert api.get("/v1/fine_tuning/jobs", headers=vision).status_code == 200
    listed = api.get(f"{team_url}/keys", headers=admin).json()["data"]
    assert [k["id"] for k in listed] == [key["id"]] and "key" not in listed[0]
    revoked = api.delete(f"/v1/admin/keys/{key['id']}", headers=admin).json()
    assert revoked["revoked_at"] is not None
    assert api.get("/v1/fine_tuning/jobs", headers=vision).status_code == 401
    names = [t["name"] for t in api.get("/v1/admin/teams", headers=admin).json()["data"]]
    assert {"team-a", "team-b", "ops", "vision"} <= set(names)


def test_admin_cli_teams_keys_quotas(
    sqlite_settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LCO_DATA_DIR", str(sqlite_settings.data_dir))

    def run(*argv: str) -> str:
        capsys.readouterr()
        assert lco(list(argv)) == 0
        return capsys.readouterr().out

    run("team", "create", "nlp", "--share", "2", "--max-gpus", "4", "--max-priority", "normal")
    # A team made by the CLI gets a bound on its queued jobs unless told otherwise.
    assert "share=2 max_gpus=4 max_queued_jobs=100 max_priority=normal" in run("team", "list")
    out = run("team", "set", "nlp", "--max-gpus", "none", "--max-queued-jobs", "10")
    assert "max_gpus=None max_queued_jobs=10" in out
    key = run("key", "create", "--team", "nlp", "--admin").strip().splitlines()[-1]
    assert key.startswith("lco-")
    listed = run("key", "list", "--team", "nlp")
    assert "active admin" in listed
    key_id = listed.split()[0]
    run("key", "revoke", key_id)
    assert "revoked" in run("key", "list")
    assert lco(["team", "set", "nlp", "--share", "0"]) == 1  # refused, with the reason


def test_idempotency_key_replays_the_first_response_and_creates_one_job(
    api: ApiClient,
) -> None:
    file_id = api.upload(sft_lines()).json()["id"]
    headers = {**api.headers, "Idempotency-Key": "create-job-1"}
    first = api.post("/v1/fine_tuning/jobs", json=sft_body(file_id), headers=headers)
    again = api.post("/v1/fine_tuning/jobs", json=sft_body(file_id), headers=headers)
    assert first.status_code == again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert len(api.get("/v1/fine_tuning/jobs").json()["data"]) == 1
    # The same key with another body is a conflict, not a second job.
    other = api.post("/v1/fine_tuning/jobs", json=sft_body(file_id, max_steps=5), headers=headers)
    assert other.status_code == 409
    assert other.json()["error"]["code"] == "idempotency_key_reused"
    # Keys belong to the caller: another team's identical key is its own request.
    theirs = api.post(
        "/v1/fine_tuning/jobs",
        json=sft_body(file_id),
        headers={**api.other_headers, "Idempotency-Key": "create-job-1"},
    )
    assert theirs.status_code == 400 and theirs.json()["error"]["param"] == "training_file"
    assert len(api.get("/v1/fine_tuning/jobs").json()["data"]) == 1


def test_idempotency_key_on_uploads_and_bad_keys(api: ApiClient) -> None:
    headers = {**api.headers, "Idempotency-Key": "upload-1"}
    first = api.upload(sft_lines(), headers=headers).json()
    again = api.upload(sft_lines(), headers=headers).json()
    assert again == first
    assert len(api.get("/v1/files").json()["data"]) == 1
    bad = api.upload(sft_lines(), headers={**api.headers, "Idempotency-Key": "x" * 300})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "Idempotency-Key"


@pytest.fixture
def limited(sqlite_settings: Settings, tmp_path: Path) -> Iterator[tuple[TestClient, str, str]]:
    settings = sqlite_settings.model_copy(
        update={"rate_limit_per_minute": 6, "rate_limit_burst": 3}
    )
    key, other = new_key(settings, "a"), new_key(settings, "b")
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client, key, other


def test_rate_limit_per_key_answers_429_with_retry_after(
    limited: tuple[TestClient, str, str],
) -> None:
    client, key, other = limited
    auth = {"Authorization": f"Bearer {key}"}
    assert [client.get("/v1/files", headers=auth).status_code for _ in range(3)] == [200] * 3
    response = client.get("/v1/files", headers=auth)
    assert response.status_code == 429
    assert int(response.headers["Retry-After"]) >= 1
    assert response.json()["error"]["code"] == "rate_limit_exceeded"
    # Each key has its own bucket.
    assert client.get("/v1/files", headers={"Authorization": f"Bearer {other}"}).status_code == 200


def test_an_oversized_post_with_an_idempotency_key_is_a_413_envelope(api: ApiClient) -> None:
    # Streamed (no Content-Length), so the limit fires while the body is read.
    chunks = iter([b"x" * (256 * 1024)] * 8)
    headers = {**api.headers, "Idempotency-Key": "big-1", "Content-Type": "application/json"}
    response = api.post("/v1/fine_tuning/jobs", content=chunks, headers=headers)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"
    # Nothing was remembered: the same key is free for a proper request.
    file_id = api.upload(sft_lines()).json()["id"]
    ok = api.post("/v1/fine_tuning/jobs", json=sft_body(file_id), headers=headers)
    assert ok.status_code == 200, ok.text


def test_a_new_api_key_is_never_kept_for_idempotent_replay(api: ApiClient) -> None:
    admin = {**_admin_headers(api.settings), "Idempotency-Key": "key-1"}
    url = f"/v1/admin/teams/{_team_id(api.settings, 'team-a')}/keys"
    first = api.post(url, json={"name": "ci"}, headers=admin)
    assert first.status_code == 200 and first.headers["Cache-Control"] == "no-store"
    secret = first.json()["key"]
    retry = api.post(url, json={"name": "ci"}, headers=admin)
    assert retry.status_code == 409
    assert retry.json()["error"]["code"] == "idempotency_key_secret"
    assert secret not in retry.text
    with transaction(make_session_factory(make_engine(api.settings))) as session:
        stored = list(session.scalars(select(IdempotencyRecord.body)))
    assert stored and not any(secret in (body or "") for body in stored)


def test_cli_shows_queue_places_and_pools(
    one_gpu: ApiClient, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    api = one_gpu
    jobs = [_submit(api) for _ in range(2)]
    # The commands' HTTP client, pointed at the in-process app.
    monkeypatch.setattr(
        client_commands,
        "_client",
        lambda args: TestClient(
            api.client.app, base_url="http://testserver/v1", headers=api.headers
        ),
    )
    capsys.readouterr()
    assert lco(["jobs", "list", "--api-key", "unused"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert "#1 in default, waiting_for_worker" in lines[jobs[0]["id"]]
    assert "#2 in default, waiting_for_capacity, starts ~" in lines[jobs[1]["id"]]
    assert lco(["pools", "default", "--api-key", "unused"]) == 0
    pool = json.loads(capsys.readouterr().out)
    assert pool["name"] == "default" and len(pool["queued"]) == 2
