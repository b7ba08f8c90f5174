"""Probes for an orchestrator, unauthenticated and cheap:

    GET /livez    200 while the process answers (nothing else is checked: a liveness probe
                  that fails on a database outage would restart every API process at once)
    GET /readyz   200 when the database answers, its schema is at the migrations' head and
                  the broker accepts a connection; else 503. The body names every check:
                  {"status": "ready" | "unready", "checks": {"database": "ok", ...}}
    GET /healthz  the older probe: 200 when the database answers (kept for deployments
                  that point at it)

`/readyz` holds no lock and writes nothing; a check that cannot connect gives up after
`CHECK_TIMEOUT_S`, so a probe never hangs past an orchestrator's timeout.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from api.deps import ServicesDep, SessionDep
from jobs.migrate import current_revision, head_revisions

log = logging.getLogger(__name__)

router = APIRouter(tags=["health"])

CHECK_TIMEOUT_S = 2.0
OK = "ok"


@router.get("/healthz")
def healthz(session: SessionDep) -> dict[str, str]:
    session.execute(text("SELECT 1"))
    return {"status": "ok"}


@router.get("/livez")
async def livez() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    responses={503: {"description": "A dependency is unreachable or the schema is not at head"}},
)
def readyz(services: ServicesDep) -> JSONResponse:
    checks = {**_database(services), "broker": _broker(services)}
    ready = all(value == OK for value in checks.values())
    if not ready:
        log.warning("readyz.unready", extra={"checks": checks})
    return JSONResponse(
        {"status": "ready" if ready else "unready", "checks": checks},
        status_code=200 if ready else 503,
    )


def _database(services: ServicesDep) -> dict[str, str]:
    """`database` (a round trip) and `migrations` (the schema's revision against the code's)."""
    try:
        with services.read_sessions() as session:
            session.execute(text("SELECT 1"))
            revision = current_revision(session.connection())
    except SQLAlchemyError as exc:
        cause = getattr(exc, "orig", None) or exc  # the driver's error, when there is one
        reason = f"unreachable: {type(cause).__name__}"
        return {"database": reason, "migrations": "unknown: the database is unreachable"}
    heads = head_revisions()
    if revision in heads:
        migrations = OK
    else:
        migrations = f"at {revision or 'no schema'}, expected {', '.join(sorted(heads))}"
    return {"database": OK, "migrations": migrations}


def _broker(services: ServicesDep) -> str:
    try:
        with services.dispatcher.producer.connection_for_write() as conn:
            conn.ensure_connection(
                max_retries=1, interval_start=0, interval_step=0, timeout=CHECK_TIMEOUT_S
            )
    except Exception as exc:  # kombu raises per transport; any failure is "not ready"
        return f"unreachable: {type(exc).__name__}"
    return OK
