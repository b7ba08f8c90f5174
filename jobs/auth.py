"""Teams and API keys: keys are random, shown once, stored as sha256, checked in constant time.

A key looks like `lco-<16 id chars><32 secret chars>`; the first 20 characters (the
prefix) find the row, and the hash of the whole key must match it. Admin keys
(`is_admin`) may also manage teams, keys and quotas.

    found = authenticate_key(session, key)     # AuthenticatedKey | None, one query
    cache = AuthCache(read_sessions, ttl_s=1)  # the API's: cache.get(key) or cache.load(key)

`AuthCache` keeps authenticated keys for at most `ttl_s` (<= 2 s, `Settings.auth_cache_s`)
so a request usually needs no query to authenticate. Revocation stays prompt: a commit in
this process that writes api_keys or teams (the admin route, the CLI, a direct call of
`revoke_api_key`) empties it at once (`jobs.changes`); a key revoked by another process
stops working within `ttl_s`.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from jobs.changes import track_writes, version
from jobs.errors import Conflict, NotFound
from jobs.ids import new_id, utcnow
from jobs.models import ApiKey, Team

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
    # An id of 48 characters: drawn with `secrets`, so as unguessable as a secret must be.
    key = new_id("lco", 48)
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


@dataclass(frozen=True)
class AuthenticatedKey:
    """What a request's key grants: the key's id, its team (which exists), whether it is an
    admin key, and its stored hash (the auth cache's index). Immutable, so the
    API may share one between requests."""

    id: str
    team_id: str
    is_admin: bool
    key_hash: str


def _well_formed(key: str) -> bool:
    return key.startswith("lco-") and PREFIX_LEN + 8 <= len(key) <= 256


def authenticate_key(session: Session, key: str) -> AuthenticatedKey | None:
    """The key with its team, in one query; None for an unknown, malformed or revoked key, or
    one whose team is gone."""
    if not _well_formed(key):
        return None
    row = session.execute(
        select(ApiKey.id, ApiKey.team_id, ApiKey.is_admin, ApiKey.key_hash, ApiKey.revoked_at)
        .join(Team, Team.id == ApiKey.team_id)
        .where(ApiKey.prefix == key[:PREFIX_LEN])
    ).first()
    if row is None or row.revoked_at is not None:
        return None
    if not hmac.compare_digest(row.key_hash, _hash(key)):
        return None
    return AuthenticatedKey(row.id, row.team_id, row.is_admin, row.key_hash)


class AuthCache:
    """Authenticated keys, each kept at most `ttl_s` and dropped at once when a commit in this
    process writes api_keys or teams (see the module docstring). `get` never does I/O; `load`
    queries (call it off the event loop). Only successes are kept, so a new key works at once
    and unknown keys cannot fill memory; entries are found by the sha256 of the presented key,
    which is what the table stores, so the cache holds nothing the database does not."""

    _TABLES = ("api_keys", "teams")

    def __init__(
        self,
        sessions: sessionmaker[Session],
        ttl_s: float,
        *,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.sessions = sessions
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.clock = clock
        track_writes()
        self._lock = threading.Lock()
        # sha256 of the key -> (what it grants, when it was read, changes.version then)
        self._entries: dict[str, tuple[AuthenticatedKey, float, int]] = {}

    def get(self, key: str) -> AuthenticatedKey | None:
        """The cached grant for `key`; None when not cached or no longer fresh."""
        entry = self._entries.get(_hash(key)) if self.ttl_s > 0 and _well_formed(key) else None
        if entry is None:
            return None
        found, at, seen = entry
        if self.clock() - at >= self.ttl_s or seen != version(*self._TABLES):
            return None
        return found

    def load(self, key: str) -> AuthenticatedKey | None:
        """Authenticate against the database (blocking) and keep a success."""
        seen = version(*self._TABLES)  # before reading: a commit meanwhile makes it stale
        at = self.clock()
        with self.sessions() as session:
            found = authenticate_key(session, key)
        if found is not None and self.ttl_s > 0:
            with self._lock:
                if len(self._entries) >= self.max_entries:
                    now = self.clock()
                    self._entries = {
                        k: v for k, v in self._entries.items() if now - v[1] < self.ttl_s
                    }
                    if len(self._entries) >= self.max_entries:
                        self._entries.clear()
                self._entries[found.key_hash] = (found, at, seen)
        return found


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
