"""Typed dependencies, so a route's signature reads as its contract:
`SessionDep` (a DB session; the route commits), `CurrentTeam` (from the bearer key),
`ScopeDep` (team-scoped queries), `SettingsDep`, `ServicesDep`."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session, sessionmaker

from jobs.auth import authenticate
from jobs.dispatch import Dispatcher
from jobs.errors import Unauthorized
from jobs.models import Team
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


def get_current_team(request: Request, session: SessionDep) -> Team:
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    team = authenticate(session, key.strip()) if scheme.lower() == "bearer" else None
    if team is None:
        raise Unauthorized(
            "Incorrect API key provided. You can create one with `lco key create --team NAME`.",
            code="invalid_api_key",
        )
    return team


CurrentTeam = Annotated[Team, Depends(get_current_team)]


def get_scope(session: SessionDep, team: CurrentTeam) -> TeamScope:
    return TeamScope(session, team.id)


ScopeDep = Annotated[TeamScope, Depends(get_scope)]
