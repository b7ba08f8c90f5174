"""`Idempotency-Key` on every POST: the first response is stored and replayed to retries.

    POST /v1/fine_tuning/jobs   Idempotency-Key: k1   -> runs, stores the response
    same key, same body                               -> the stored response again
                                                         (header `Idempotent-Replayed: true`)
    same key, another body                            -> 409 idempotency_key_reused
    same key while the first is still running         -> 409 idempotency_key_in_use
    same key after `request_timeout_s` with the first
    never finished (its process died)                 -> runs again, as a first request
    same key after a response marked `Cache-Control: no-store` (it carried a secret, such as
    a new API key)                                    -> 409 idempotency_key_secret

Keys are scoped to the caller's bearer key and kept `idempotency_ttl_s`. A reservation
whose request never finished (the process was killed, so no response was stored and none
was forgotten) blocks retries only for `request_timeout_s`; a request that outlives it
still answers its own client, but stores nothing over its successor's record. Responses the
server could not complete (5xx) and refusals that did nothing (401, 429) are not stored, so
a retry runs again. The request is read whole first (to hash it; large uploads spill to a
temporary file) and handed on unchanged.
"""

from __future__ import annotations

import hashlib
import tempfile
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.deps import Services
from api.errors import error_response
from api.ratelimit import bearer_key
from jobs.ids import utcnow
from jobs.models import IdempotencyRecord
from jobs.settings import Settings

HEADER = b"idempotency-key"
_CHUNK = 1024 * 1024
_MAX_STORED = 1024 * 1024
_NOT_STORED = frozenset({401, 429})


def _boundary(content_type: bytes) -> bytes:
    kind, _, params = content_type.partition(b";")
    if kind.strip().lower() != b"multipart/form-data":
        return b""
    for param in params.split(b";"):
        name, _, value = param.strip().partition(b"=")
        if name.lower() == b"boundary" and value:
            return b"--" + value.strip(b'"')
    return b""


def _valid_key(key: bytes) -> bool:
    return 0 < len(key) <= 255 and all(0x21 <= c <= 0x7E for c in key)


async def _known_key(scope: Scope, auth: bytes) -> bool:
    """Whether the Authorization header carries a live API key (the auth cache, else the
    database in a worker thread, as `api.deps.get_current_key` does)."""
    key = bearer_key(auth.decode("latin-1"))
    if key is None:
        return False
    cache = scope["app"].state.services.auth
    return (cache.get(key) or await run_in_threadpool(cache.load, key)) is not None


class Idempotency:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = dict(scope.get("headers") or [])
        key = headers.get(HEADER)
        if scope["type"] != "http" or scope["method"] != "POST" or key is None:
            await self.app(scope, receive, send)
            return
        if not _valid_key(key):
            response = error_response(
                400,
                "Idempotency-Key must be 1 to 255 printable ASCII characters.",
                param="Idempotency-Key",
                code="invalid_idempotency_key",
            )
            await response(scope, receive, send)
            return
        auth = headers.get(b"authorization")
        # The key is checked before the body is read (spooled, up to a whole upload): a
        # request with no valid key passes on untouched and is answered 401 below, its body
        # never read. Nothing to remember for it either.
        if not auth or not await _known_key(scope, auth):
            await self.app(scope, receive, send)
            return
        principal = hashlib.sha256(auth).hexdigest()
        try:
            body, digest = await self._read(scope, receive)
        except HTTPException as exc:  # the body limit
            await error_response(exc.status_code, str(exc.detail), code="request_too_large")(
                scope, receive, send
            )
            return
        try:
            services: Services = scope["app"].state.services
            claim = await run_in_threadpool(_reserve, services, principal, key.decode(), digest)
            if not isinstance(claim, Claim):
                await claim(scope, receive, send)
                return
            await self._run_and_store(scope, send, body, services, claim)
        finally:
            body.close()

    @staticmethod
    async def _read(scope: Scope, receive: Receive) -> tuple[Any, str]:
        """Spool the body; hash method, path, query and body. A multipart body is hashed
        without its boundary, which clients draw at random for every attempt."""
        digest = hashlib.sha256()
        query = scope.get("query_string", b"")
        digest.update(scope["method"].encode() + b" " + scope["path"].encode() + b"?" + query)
        boundary = _boundary(dict(scope["headers"]).get(b"content-type", b""))
        spool = tempfile.SpooledTemporaryFile(max_size=_CHUNK)  # noqa: SIM115 (closed by the caller)
        tail = b""
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            spool.write(chunk)
            more = message.get("more_body", False)
            if not boundary:
                digest.update(chunk)
                continue
            # Keep the last len-1 bytes back: a boundary may straddle two chunks.
            data = (tail + chunk).replace(boundary, b"")
            keep = min(len(data), len(boundary) - 1) if more else 0
            digest.update(data[: len(data) - keep])
            tail = data[len(data) - keep :]
        digest.update(tail)
        spool.seek(0)
        return spool, digest.hexdigest()

    async def _run_and_store(
        self, scope: Scope, send: Send, body: Any, services: Services, claim: Claim
    ) -> None:
        """Run the request; store its response in the row it reserved (`claim`)."""

        async def replay_receive() -> Message:
            chunk = body.read(_CHUNK)
            return {"type": "http.request", "body": chunk, "more_body": len(chunk) == _CHUNK}

        status = 500
        secret = False  # `Cache-Control: no-store`: the body carries a secret
        content_type = None
        parts: list[bytes] = []
        size = 0

        async def capture(message: Message) -> None:
            nonlocal status, content_type, size, secret
            if message["type"] == "http.response.start":
                status = message["status"]
                for name, value in message.get("headers", []):
                    if name.lower() == b"content-type":
                        content_type = value.decode()
                    elif name.lower() == b"cache-control" and b"no-store" in value.lower():
                        secret = True
            elif message["type"] == "http.response.body":
                size += len(message.get("body", b""))
                if size <= _MAX_STORED:
                    parts.append(message.get("body", b""))
            await send(message)

        stored = False
        try:
            await self.app(scope, replay_receive, capture)
            if status < 500 and status not in _NOT_STORED and size <= _MAX_STORED:
                if secret and status < 400:
                    # Never kept: retries learn that it happened, not what it returned.
                    tombstone = _conflict("secret")
                    status, content_type, parts = 409, "application/json", [tombstone.body]
                await run_in_threadpool(
                    _store, services, claim, status, content_type, b"".join(parts)
                )
                stored = True
        finally:
            if not stored:
                await run_in_threadpool(_forget, services, claim)


class Claim(NamedTuple):
    """One request's reservation: its row, told from a later row of the same key by both
    fields (SQLite reuses the pk of a deleted last row; a retry is reserved later)."""

    pk: int
    created_at: datetime


def _mine(claim: Claim) -> Any:
    return (IdempotencyRecord.pk == claim.pk) & (IdempotencyRecord.created_at == claim.created_at)


def _expired(row: IdempotencyRecord, settings: Settings, now: datetime) -> bool:
    """A stored response past `idempotency_ttl_s`, or a reservation past `request_timeout_s`
    (its request died without storing or forgetting: it must not hold the key all day)."""
    if row.status_code is None:
        return row.created_at < now - timedelta(seconds=settings.request_timeout_s)
    return row.created_at < now - timedelta(seconds=settings.idempotency_ttl_s)


def _reserve(services: Services, principal: str, key: str, digest: str) -> Any:
    """Claim the key for this request; or the response to give instead (a replay or a 409)."""
    now = utcnow()
    with services.sessions() as session, session.begin():
        row = session.scalar(
            select(IdempotencyRecord).where(
                IdempotencyRecord.principal == principal, IdempotencyRecord.key == key
            )
        )
        if row is not None and _expired(row, services.settings, now):
            session.delete(row)
            session.flush()
            row = None
        if row is None:
            try:
                with session.begin_nested():
                    mine = IdempotencyRecord(
                        principal=principal, key=key, request_hash=digest, created_at=now
                    )
                    session.add(mine)
                    session.flush()
                return Claim(mine.pk, now)
            except IntegrityError:  # a concurrent first request won
                return _conflict("in_use")
        if row.request_hash != digest:
            return _conflict("reused")
        if row.status_code is None:
            return _conflict("in_use")
        from starlette.responses import Response

        return Response(
            content=(row.body or "").encode(),
            status_code=row.status_code,
            media_type=row.content_type,
            headers={"Idempotent-Replayed": "true"},
        )


def _conflict(kind: str) -> Any:
    if kind == "reused":
        message = "This Idempotency-Key was used with a different request; use a new key."
    elif kind == "secret":
        message = (
            "The request with this Idempotency-Key succeeded, and its response carried a "
            "secret, which is never stored; list the objects to find what it created."
        )
    else:
        message = "A request with this Idempotency-Key is still being processed; retry later."
    return error_response(409, message, param="Idempotency-Key", code=f"idempotency_key_{kind}")


def _store(
    services: Services, claim: Claim, status: int, content_type: str | None, body: bytes
) -> None:
    """Fill in this request's own reservation. Not found by key: a request that outlived
    `request_timeout_s` may have lost its key to a retry, whose row is not its to write."""
    with services.sessions() as session, session.begin():
        row = session.scalar(select(IdempotencyRecord).where(_mine(claim)))
        if row is not None and row.status_code is None:
            row.status_code = status
            row.content_type = content_type
            row.body = body.decode(errors="replace")


def _forget(services: Services, claim: Claim) -> None:
    """Drop this request's own reservation (nothing was stored), so a retry runs again."""
    with services.sessions() as session, session.begin():
        session.execute(
            delete(IdempotencyRecord).where(_mine(claim), IdempotencyRecord.status_code.is_(None))
        )
