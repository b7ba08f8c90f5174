"""`/v1/admin/...`: teams with their quotas and shares, API keys, and every team's jobs.
Admin keys only (403 for any other key); the same operations as `lco team ...`,
`lco key ...` and `lco admin jobs ...`.

    GET/POST   /v1/admin/teams                    list / create (with a policy)
    GET/PATCH  /v1/admin/teams/{team_id}          read / change share, quotas, policy
    GET/POST   /v1/admin/teams/{team_id}/keys     list / create (the secret shown once)
    DELETE     /v1/admin/keys/{key_id}            revoke
    GET        /v1/admin/jobs[?team_id&status]    every team's jobs, newest first (paginated)
    GET        /v1/admin/jobs/{job_id}            any team's job
    POST       /v1/admin/jobs/{job_id}/cancel     cancel, pause, resume any team's job, by
    POST       /v1/admin/jobs/{job_id}/pause        the lifecycle's rules; the job's events
    POST       /v1/admin/jobs/{job_id}/resume       name the admin key (`jobs.admin_jobs`)
"""

from __future__ import annotations

from fastapi import APIRouter, Response

from api.deps import AdminKey, ServicesDep, SessionDep
from api.routers.jobs import _changed, public_jobs
from api.schemas.admin import (
    KeyCreate,
    KeyCreated,
    KeyPublic,
    KeysPublic,
    TeamCreate,
    TeamPolicyFields,
    TeamPublic,
    TeamsPublic,
    TeamUpdate,
)
from api.schemas.common import After, Limit
from api.schemas.jobs import JobPublic, JobsPublic
from jobs.admin_jobs import act_on_job, list_all_jobs, scope_of_job
from jobs.auth import (
    create_api_key,
    create_team,
    get_team,
    list_api_keys,
    list_teams,
    revoke_api_key,
)
from jobs.models import Team
from jobs.quotas import set_policy
from jobs.states import Action, JobStatus

router = APIRouter(prefix="/v1/admin", tags=["admin"])


def _apply(team: Team, fields: TeamPolicyFields) -> None:
    sent = fields.model_dump(exclude_unset=True)
    set_policy(
        team,
        share=sent.get("share"),
        max_priority=sent.get("max_priority"),
        quota_policy=sent.get("quota_policy"),
        **{k: sent[k] for k in ("max_gpus", "max_queued_jobs") if k in sent},
    )


@router.get("/teams", response_model=TeamsPublic)
def teams(session: SessionDep, _: AdminKey) -> TeamsPublic:
    return TeamsPublic(data=[TeamPublic.from_row(t) for t in list_teams(session)])


@router.post("/teams", response_model=TeamPublic)
def new_team(session: SessionDep, _: AdminKey, body: TeamCreate) -> TeamPublic:
    team = create_team(session, body.name)
    _apply(team, body)
    session.commit()
    return TeamPublic.from_row(team)


@router.get("/teams/{team_id}", response_model=TeamPublic)
def team(session: SessionDep, _: AdminKey, team_id: str) -> TeamPublic:
    return TeamPublic.from_row(get_team(session, team_id))


@router.patch("/teams/{team_id}", response_model=TeamPublic)
def update_team(session: SessionDep, _: AdminKey, team_id: str, body: TeamUpdate) -> TeamPublic:
    row = get_team(session, team_id)
    _apply(row, body)
    session.commit()
    return TeamPublic.from_row(row)


@router.get("/teams/{team_id}/keys", response_model=KeysPublic)
def keys(session: SessionDep, _: AdminKey, team_id: str) -> KeysPublic:
    row = get_team(session, team_id)
    return KeysPublic(data=[KeyPublic.from_row(k) for k in list_api_keys(session, row.id)])


@router.post("/teams/{team_id}/keys", response_model=KeyCreated)
def new_key(
    session: SessionDep, _: AdminKey, team_id: str, body: KeyCreate, response: Response
) -> KeyCreated:
    row, secret = create_api_key(
        session, get_team(session, team_id), body.name, is_admin=body.is_admin
    )
    session.commit()
    # The secret is shown once: no cache keeps it, nor the Idempotency-Key replay store.
    response.headers["Cache-Control"] = "no-store"
    return KeyCreated(**KeyPublic.from_row(row).model_dump(), key=secret)


@router.delete("/keys/{key_id}", response_model=KeyPublic)
def revoke_key(session: SessionDep, _: AdminKey, key_id: str) -> KeyPublic:
    row = revoke_api_key(session, key_id)
    session.commit()
    return KeyPublic.from_row(row)


# Jobs: what follows a state change (commit, scheduler pass, fresh read) and the job objects
# with their queue place come from the team's own job routes, so both answer alike.
@router.get("/jobs", response_model=JobsPublic)
def jobs(
    session: SessionDep,
    _: AdminKey,
    services: ServicesDep,
    team_id: str | None = None,
    status: JobStatus | None = None,
    after: After = None,
    limit: Limit = 20,
) -> JobsPublic:
    page = list_all_jobs(session, team_id=team_id, status=status, after=after, limit=limit)
    return JobsPublic(
        data=public_jobs(session, services.queue_slots, page.items), has_more=page.has_more
    )


@router.get("/jobs/{job_id}", response_model=JobPublic)
def job(session: SessionDep, _: AdminKey, services: ServicesDep, job_id: str) -> JobPublic:
    row = scope_of_job(session, job_id).job(job_id)
    return public_jobs(session, services.queue_slots, [row])[0]


@router.post("/jobs/{job_id}/cancel", response_model=JobPublic)
def cancel_job(session: SessionDep, key: AdminKey, services: ServicesDep, job_id: str) -> JobPublic:
    return _changed(session, services, act_on_job(session, key, job_id, Action.CANCEL))


@router.post("/jobs/{job_id}/pause", response_model=JobPublic)
def pause_job(session: SessionDep, key: AdminKey, services: ServicesDep, job_id: str) -> JobPublic:
    return _changed(session, services, act_on_job(session, key, job_id, Action.PAUSE))


@router.post("/jobs/{job_id}/resume", response_model=JobPublic)
def resume_job(session: SessionDep, key: AdminKey, services: ServicesDep, job_id: str) -> JobPublic:
    return _changed(session, services, act_on_job(session, key, job_id, Action.RESUME))
