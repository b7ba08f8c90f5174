"""Admins act on any team's jobs (`/v1/admin/jobs`, `lco admin jobs ...`): list them across
teams, and cancel, pause and resume them by the lifecycle's rules, each action named in the
job's events; other keys are refused as on every admin route."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from cli import client as client_commands
from cli.main import main as lco
from jobs.auth import create_api_key, create_team, get_team_by_name
from jobs.db import make_engine, make_session_factory, transaction
from jobs.models import Job
from jobs.settings import Settings
from jobs.states import JobStatus
from tests.service_fixtures import ApiClient, sft_body, sft_lines


def _admin(settings: Settings) -> tuple[dict[str, str], str]:
    """Headers of a new admin key `night-ops` of the `ops` team, and the key's id."""
    with transaction(make_session_factory(make_engine(settings))) as session:
        row, key = create_api_key(session, create_team(session, "ops"), "night-ops", is_admin=True)
    return {"Authorization": f"Bearer {key}"}, row.id


def _team_id(settings: Settings, name: str) -> str:
    with transaction(make_session_factory(make_engine(settings))) as session:
        return get_team_by_name(session, name).id


def _submit(api: ApiClient, headers: dict[str, str]) -> dict[str, Any]:
    file_id = api.upload(sft_lines(), headers=headers).json()["id"]
    response = api.post("/v1/fine_tuning/jobs", json=sft_body(file_id), headers=headers)
    assert response.status_code == 200, response.text
    return dict(response.json())


def _set_status(settings: Settings, job_id: str, status: JobStatus) -> None:
    with transaction(make_session_factory(make_engine(settings))) as session:
        session.execute(update(Job).where(Job.id == job_id).values(status=status))


def _messages(api: ApiClient, job_id: str, headers: dict[str, str]) -> list[str]:
    events = api.get(f"/v1/fine_tuning/jobs/{job_id}/events", headers=headers).json()["data"]
    return [e["message"] for e in reversed(events)]  # oldest first


def test_admin_lists_and_stops_any_teams_jobs(api: ApiClient) -> None:
    admin, admin_key_id = _admin(api.settings)
    mine, theirs = _submit(api, api.headers), _submit(api, api.other_headers)
    team_b = _team_id(api.settings, "team-b")

    listed = api.get("/v1/admin/jobs", headers=admin).json()
    assert [j["id"] for j in listed["data"]] == [theirs["id"], mine["id"]]  # newest first
    assert listed["data"][0]["organization_id"] == team_b and not listed["has_more"]
    only_b = api.get("/v1/admin/jobs", params={"team_id": team_b}, headers=admin).json()
    assert [j["id"] for j in only_b["data"]] == [theirs["id"]]
    first = api.get("/v1/admin/jobs", params={"limit": 1}, headers=admin).json()
    assert first["has_more"] and first["data"][0]["id"] == theirs["id"]
    rest = api.get(
        "/v1/admin/jobs", params={"limit": 1, "after": theirs["id"]}, headers=admin
    ).json()
    assert [j["id"] for j in rest["data"]] == [mine["id"]] and not rest["has_more"]
    got = api.get(f"/v1/admin/jobs/{theirs['id']}", headers=admin).json()
    assert got["id"] == theirs["id"] and got["status"] == "queued"

    # Team B's queued job: cancelled by the admin, and team B's events say who did it.
    cancelled = api.post(f"/v1/admin/jobs/{theirs['id']}/cancel", headers=admin)
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    said = _messages(api, theirs["id"], api.other_headers)
    assert said[-2:] == [
        "Fine-tuning job cancelled",
        f"Cancelled by admin key night-ops ({admin_key_id})",
    ]
    events = api.get(f"/v1/fine_tuning/jobs/{theirs['id']}/events", headers=api.other_headers)
    assert events.json()["data"][0]["data"]["admin_key_id"] == admin_key_id
    # The state machine still rules: a cancelled job cannot be cancelled or resumed again.
    again = api.post(f"/v1/admin/jobs/{theirs['id']}/resume", headers=admin)
    assert again.status_code == 409
    by_status = api.get("/v1/admin/jobs", params={"status": "cancelled"}, headers=admin).json()
    assert [j["id"] for j in by_status["data"]] == [theirs["id"]]

    # Team A's queued job: paused at once, resumed to the queue.
    paused = api.post(f"/v1/admin/jobs/{mine['id']}/pause", headers=admin).json()
    assert paused["status"] == "paused"
    resumed = api.post(f"/v1/admin/jobs/{mine['id']}/resume", headers=admin).json()
    assert resumed["status"] == "queued"
    assert _messages(api, mine["id"], api.headers)[-2:] == [
        "Fine-tuning job resumed",
        f"Resumed by admin key night-ops ({admin_key_id})",
    ]

    # A running job stops between steps: the admin's request is recorded, once.
    _set_status(api.settings, mine["id"], JobStatus.RUNNING)
    for _ in range(2):
        pausing = api.post(f"/v1/admin/jobs/{mine['id']}/pause", headers=admin).json()
        assert (pausing["status"], pausing["status_details"]["reason"]) == ("running", "pause")
    said = _messages(api, mine["id"], api.headers)
    assert said[-2:] == [
        "Pause requested",
        f"Pause requested by admin key night-ops ({admin_key_id})",
    ]
    cancelling = api.post(f"/v1/admin/jobs/{mine['id']}/cancel", headers=admin).json()
    assert cancelling["status_details"]["reason"] == "cancel"
    assert _messages(api, mine["id"], api.headers)[-1].startswith("Cancellation requested by admin")


def test_admin_job_routes_refuse_other_keys_and_bad_input(api: ApiClient) -> None:
    admin, _ = _admin(api.settings)
    theirs = _submit(api, api.other_headers)
    for method, path in (
        ("GET", "/v1/admin/jobs"),
        ("GET", f"/v1/admin/jobs/{theirs['id']}"),
        ("POST", f"/v1/admin/jobs/{theirs['id']}/cancel"),
        ("POST", f"/v1/admin/jobs/{theirs['id']}/pause"),
        ("POST", f"/v1/admin/jobs/{theirs['id']}/resume"),
    ):
        # The answer of every admin route to a team key, its own job's team included.
        for headers in (api.headers, api.other_headers):
            refused = api.client.request(method, path, headers=headers)
            assert refused.status_code == 403, (method, path)
            assert refused.json()["error"]["code"] == "admin_required"
        assert api.client.request(method, path).status_code == 401
    # Another team's job is still not found through the team routes.
    assert api.post(f"/v1/fine_tuning/jobs/{theirs['id']}/cancel").status_code == 404
    # Untouched by the refusals.
    assert api.get(f"/v1/admin/jobs/{theirs['id']}", headers=admin).json()["status"] == "queued"

    missing = api.post("/v1/admin/jobs/ftjob-nope/cancel", headers=admin)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "job_not_found"
    bad = api.get("/v1/admin/jobs", params={"status": "stuck"}, headers=admin)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "status"
    no_team = api.get("/v1/admin/jobs", params={"team_id": "team-nope"}, headers=admin)
    assert no_team.status_code == 404 and no_team.json()["error"]["param"] == "team_id"
    no_cursor = api.get("/v1/admin/jobs", params={"after": "ftjob-nope"}, headers=admin)
    assert no_cursor.status_code == 404 and no_cursor.json()["error"]["param"] == "after"


def test_admin_cli_lists_cancels_pauses_and_resumes_jobs(
    api: ApiClient, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    admin, _ = _admin(api.settings)
    mine, theirs = _submit(api, api.headers), _submit(api, api.other_headers)
    # The commands' HTTP client, pointed at the in-process app with the admin key.
    monkeypatch.setattr(
        client_commands,
        "_client",
        lambda args: TestClient(api.client.app, base_url="http://testserver/v1", headers=admin),
    )

    def run(*argv: str) -> str:
        capsys.readouterr()
        assert lco([*argv, "--api-key", "unused"]) == 0
        return capsys.readouterr().out

    listed = run("admin", "jobs", "list")
    assert {line.split()[0] for line in listed.splitlines()} == {mine["id"], theirs["id"]}
    only_b = run("admin", "jobs", "list", "--team", "team-b", "--status", "queued")
    assert [line.split()[0] for line in only_b.splitlines()] == [theirs["id"]]
    assert json.loads(run("admin", "jobs", "cancel", theirs["id"]))["status"] == "cancelled"
    assert json.loads(run("admin", "jobs", "pause", mine["id"]))["status"] == "paused"
    assert json.loads(run("admin", "jobs", "resume", mine["id"]))["status"] == "queued"
    assert run("admin", "jobs", "list", "--status", "cancelled").split()[0] == theirs["id"]
    # Refused by the service or the client: an error line and exit status 1.
    assert lco(["admin", "jobs", "resume", theirs["id"], "--api-key", "unused"]) == 1
    assert lco(["admin", "jobs", "list", "--team", "nope", "--api-key", "unused"]) == 1
    assert "no team named 'nope'" in capsys.readouterr().err
