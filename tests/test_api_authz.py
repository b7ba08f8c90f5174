"""The authorization matrix, walked over every route of the app (`app.routes`), so a new
route is covered the day it is added: without a key or with a revoked one, 401; a
non-admin key on an admin route, 403; another team's key on a route that names one of
this team's objects, 404 (never 403: existence does not leak); the owner gets through; a
forged credential in a path (a signed download link), 404 with or without a key.

A route whose path names an id this test does not know fails the test: add the id below.
"""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
from fastapi.routing import APIRoute
from sqlalchemy import select, update

from jobs.auth import create_api_key, create_team, get_team_by_name, revoke_api_key
from jobs.db import make_engine, make_session_factory, transaction
from jobs.leases import claim, fenced, record_checkpoint
from jobs.models import Job
from jobs.storage import Storage
from tests.service_fixtures import ApiClient, sft_body, sft_lines

ADMIN_PREFIX = "/v1/admin"
SHARED = {"pool"}  # ids of objects every team may see (the pools are shared)
# No key needed: the probes and Prometheus scrapes (an orchestrator holds no API key), the
# dashboard page (it asks for a key in the browser).
PUBLIC = {"/healthz", "/livez", "/readyz", "/metrics", "/dashboard"}
# Path parts that are themselves the credential (signed links): a forged one is a 404 with
# or without a key.
CREDENTIALS = {"token"}


def _keys(api: ApiClient) -> dict[str, Any]:
    """An admin key, a revoked key of team-a, a spare team-a key id, team-a's id."""
    with transaction(make_session_factory(make_engine(api.settings))) as session:
        team_a = get_team_by_name(session, "team-a")
        _, admin = create_api_key(session, create_team(session, "ops"), is_admin=True)
        revoked_row, revoked = create_api_key(session, team_a)
        revoke_api_key(session, revoked_row.id)
        spare, _ = create_api_key(session, team_a, name="spare")
        return {"admin": admin, "revoked": revoked, "spare_key_id": spare.id, "team": team_a.id}


def _objects(api: ApiClient) -> dict[str, str]:
    """One of each team-a object a path can name: a file, a job, its checkpoint and its
    fine-tuned model."""
    file_id = api.upload(sft_lines()).json()["id"]
    job_id = api.post("/v1/fine_tuning/jobs", json=sft_body(file_id)).json()["id"]
    sessions = make_session_factory(make_engine(api.settings))
    with sessions() as session, session.begin():
        lease = claim(session, job_id, owner="authz", ttl_s=60)
        team_id = session.scalar(select(Job.team_id).where(Job.id == job_id))
    assert lease is not None and team_id is not None
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
            model_name="ft:x",
        )
    # Terminal, so the live stream sends its history and ends; succeeded, so its fine-tuned
    # model is one of team-a's models (`/v1/models/{model}`).
    model = f"ft:lco-tiny:team-a::{job_id}"
    with sessions() as session, session.begin():
        session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(status="succeeded", fine_tuned_model=model, final_checkpoint_id=ckpt.id)
        )
    return {"file_id": file_id, "job_id": job_id, "checkpoint_id": ckpt.id, "model": model}


def _routes(api: ApiClient) -> list[tuple[str, str, list[str]]]:
    found = []
    for route in api.client.app.routes:  # type: ignore[attr-defined]
        if not isinstance(route, APIRoute):
            continue
        for method in sorted(route.methods - {"HEAD"}):
            found.append((method, route.path, re.findall(r"{(\w+)}", route.path)))
    assert len(found) >= 25  # the walk really sees the app
    return found


def _call(api: ApiClient, method: str, path: str, key: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    body = json.dumps({}).encode() if method in ("POST", "PATCH") else None
    if body is not None:
        headers["Content-Type"] = "application/json"
    return api.client.request(method, path, headers=headers, content=body)


def test_every_route_answers_401_403_404_as_the_matrix_says(api: ApiClient) -> None:
    keys = _keys(api)
    ids = {
        **_objects(api),
        "team_id": keys["team"],
        "key_id": keys["spare_key_id"],
        "pool": "default",
        "token": "forged-" + "x" * 40,
    }
    routes = _routes(api)
    unknown = {p for _, _, params in routes for p in params} - set(ids)
    assert not unknown, f"routes name ids this matrix does not know: {unknown}; add them"

    owner_calls = []
    for method, template, params in routes:
        path = template.format(**{p: ids[p] for p in params})
        where = f"{method} {template}"
        if template in PUBLIC:
            assert _call(api, method, path, None).status_code == 200, where
            continue
        if CREDENTIALS & set(params):
            for key in (None, api.key, api.other_key):
                response = _call(api, method, path, key)
                assert response.status_code == 404, (where, key, response.text)
                assert set(response.json()["error"]) == {"message", "type", "param", "code"}
            continue
        for key in (None, keys["revoked"], "lco-" + "x" * 48):
            response = _call(api, method, path, key)
            assert response.status_code == 401, (where, key, response.text)
            assert response.json()["error"]["code"] == "invalid_api_key"
        if template.startswith(ADMIN_PREFIX):
            for key in (api.key, api.other_key):
                response = _call(api, method, path, key)
                assert response.status_code == 403, (where, response.text)
                assert response.json()["error"]["code"] == "admin_required"
            owner_calls.append((method, path, where, keys["admin"]))
            continue
        owned = [p for p in params if p not in SHARED]
        if owned:
            response = _call(api, method, path, api.other_key)
            assert response.status_code == 404, (where, response.text)
            assert set(response.json()["error"]) == {"message", "type", "param", "code"}
        owner_calls.append((method, path, where, api.key))

    # The owner (or an admin, on admin routes) gets through; deletions go last.
    for method, path, where, key in sorted(owner_calls, key=lambda c: c[0] == "DELETE"):
        response = _call(api, method, path, key)
        assert response.status_code not in (401, 403, 404), (where, response.text)
        assert response.status_code < 500, (where, response.text)
