"""Teams and API keys: keys are random, shown once, stored as sha256, checked in constant time.

A key looks like `lco-<16 id chars><32 secret chars>`; the first 20 characters (the
prefix) find the row, and the hash of the whole key must match it. Admin keys
(`is_admin`) may also manage teams, keys and quotas.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string

from sqlalchemy import select
from sqlalchemy.orm import Session

from jobs.errors import Conflict, NotFound
from jobs.ids import new_id, utcnow
from jobs.models import ApiKey, Team

_ALPHABET = string.ascii_letters + string.digits
PREFIX_LEN = 20


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_team(session: Session, name: str) -> Team:
    """Add a team (the caller commits). Names are unique."""
    if session.scalar(select(Team).where(Team.name == name)) is not None:
        raise Conflict(f"team {name!r} already exists", param="name")
    team = Team(id=new_id("team"), name=name)
    session.add(team)
    session.flush()
    return team


def get_team_by_name(session: Session, name: str) -> Team:
    team = session.scalar(select(Team).where(Team.name == name))
    if team is None:
        raise NotFound(f"no team named {name!r}", param="team")
    return team


def get_team(session: Session, team_id: str) -> Team:
    team = session.get(Team, team_id)
    if team is None:
        raise NotFound(f"no team {team_id!r}", param="team_id")
    return team


def list_teams(session: Session) -> list[Team]:
    return list(session.scalars(select(Team).order_by(Team.name)))


def create_api_key(
    session: Session, team: Team, name: str | None = None, *, is_admin: bool = False
) -> tuple[ApiKey, str]:
    """A new key for `team`: returns the row and the plaintext key (shown once, never stored)."""
    key = "lco-" + "".join(secrets.choice(_ALPHABET) for _ in range(48))
    row = ApiKey(
        id=new_id("key"),
        team_id=team.id,
        prefix=key[:PREFIX_LEN],
        key_hash=_hash(key),
        name=name,
        is_admin=is_admin,
    )
    session.add(row)
    session.flush()
    return row, key


def authenticate_key(session: Session, key: str) -> ApiKey | None:
    """The key's row, or None for an unknown, malformed or revoked key."""
    if not key.startswith("lco-") or len(key) < PREFIX_LEN + 8 or len(key) > 256:
        return None
    row = session.scalar(select(ApiKey).where(ApiKey.prefix == key[:PREFIX_LEN]))
    if row is None or row.revoked_at is not None:
        return None
    if not hmac.compare_digest(row.key_hash, _hash(key)):
        return None
    return row


def authenticate(session: Session, key: str) -> Team | None:
    """The team owning `key`, or None for an unknown, malformed or revoked key."""
    row = authenticate_key(session, key)
    return None if row is None else session.get(Team, row.team_id)


def list_api_keys(session: Session, team_id: str | None = None) -> list[ApiKey]:
    stmt = select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)
    if team_id is not None:
        stmt = stmt.where(ApiKey.team_id == team_id)
    return list(session.scalars(stmt))


def revoke_api_key(session: Session, key_id: str) -> ApiKey:
    """Revoke a key (idempotent: a revoked key stays revoked at its first time)."""
    row = session.get(ApiKey, key_id)
    if row is None:
        raise NotFound(f"no API key {key_id!r}", param="key_id")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
    return row
