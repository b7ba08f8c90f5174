"""Typed dependencies, so a route's signature reads as its contract:
`SessionDep` (a DB session; the route commits), `CurrentKey` and `CurrentTeam` (from the
bearer key), `AdminKey` (403 unless the key is an admin key), `ScopeDep` (team-scoped
queries), `SettingsDep`, `ServicesDep`."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session, sessionmaker

from jobs.auth import authenticate_key
from jobs.dispatch import Dispatcher
from jobs.errors import Forbidden, Unauthorized
from jobs.models import ApiKey, Team
from jobs.scope import TeamScope
from jobs.settings import Settings
from jobs.storage import Storage


@dataclass
class Services:
    """What the app factory builds once per app and routes share."""

    settings: Settings
    sessions: sessionmaker[Session]
    read_sessions: sessionmaker[Session]
    storage: Storage
    dispatcher: Dispatcher


_READS = frozenset({"GET", "HEAD"})


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def get_settings(services: ServicesDep) -> Settings:
    return services.settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


def get_session(request: Request, services: ServicesDep) -> Iterator[Session]:
    # The route owns the transaction (commits explicitly); leaving rolls back the rest.
    # GETs only read, so they use sessions that take no write lock on SQLite.
    factory = services.read_sessions if request.method in _READS else services.sessions
    with factory() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def get_current_key(request: Request, session: SessionDep) -> ApiKey:
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    row = authenticate_key(session, key.strip()) if scheme.lower() == "bearer" else None
    if row is None:
        raise Unauthorized(
            "Incorrect API key provided. You can create one with `lco key create --team NAME`.",
            code="invalid_api_key",
        )
    return row


CurrentKey = Annotated[ApiKey, Depends(get_current_key)]


def get_current_team(session: SessionDep, key: CurrentKey) -> Team:
    team = session.get(Team, key.team_id)
    if team is None:  # deleted under a live key
        raise Unauthorized("Incorrect API key provided.", code="invalid_api_key")
    return team


CurrentTeam = Annotated[Team, Depends(get_current_team)]


def get_admin_key(key: CurrentKey) -> ApiKey:
    if not key.is_admin:
        raise Forbidden("This route needs an admin API key.", code="admin_required")
    return key


AdminKey = Annotated[ApiKey, Depends(get_admin_key)]


def get_scope(session: SessionDep, team: CurrentTeam) -> TeamScope:
    return TeamScope(session, team.id)


ScopeDep = Annotated[TeamScope, Depends(get_scope)]
