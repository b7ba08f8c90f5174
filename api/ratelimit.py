"""Rate limits: a token bucket per authenticated API key, and one per client address for
traffic that is not (yet) authenticated; over the limit answers 429 with `Retry-After`.

    buckets = Buckets(per_minute=1200, burst=300)
    app.add_middleware(RateLimit, buckets=buckets, auth=auth_cache)

Keyed on who the request is, never on how the header is spelled: `Bearer K`, `bearer K` and
`Bearer   K ` share K's bucket, whose name is the key's id. Every `/v1/` request is
charged before any database lookup:

- a key the in-memory `AuthCache` already knows is charged to its key id;
- anything else (no key, a malformed or unknown key, a key not cached yet) is charged to
  the client address, so rotating fake keys from one address reach a 429 after `burst`
  requests and cost no more database lookups. When the lookup (`api.deps`) then finds the
  key, `settle` gives the address its token back and charges the key instead.

The buckets live in this API process, with no shared store on the request path: with N
API processes (or uvicorn workers) a key gets up to N times the rate. The address is the
connection's peer (`scope["client"]`): behind a reverse proxy, run uvicorn with
`--proxy-headers` so it is the caller's, not the proxy's.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from api.errors import error_response
from jobs.auth import AuthCache
from jobs.errors import QuotaExceeded

_MAX_BUCKETS = 10_000
# Where the middleware notes which bucket it charged, for `settle`.
_CHARGED = "lco.rate_bucket"


def bearer_key(header: str | None) -> str | None:
    """The credential of an `Authorization: Bearer <key>` header: the scheme in any case,
    any whitespace around and between; None for no header or another scheme."""
    parts = (header or "").split(None, 1)
    if len(parts) != 2 or parts[0].lower() != "bearer":
        return None
    return parts[1].strip() or None


def client_address(scope: Scope) -> str:
    client = scope.get("client")
    return client[0] if client else "unknown"


def _message(wait_s: float) -> str:
    return (
        "Rate limit reached for requests with this API key (or, without a valid key, from "
        f"this address); retry after {max(1, math.ceil(wait_s))} s."
    )


class Buckets:
    """Token buckets by name (`key:<id>`, `addr:<ip>`), all with the same rate and burst.
    Used from the event loop only, so it needs no lock."""

    def __init__(self, *, per_minute: int, burst: int, clock: Callable[[], float] = time.monotonic):
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self.clock = clock
        self.buckets: dict[str, tuple[float, float]] = {}  # name -> (tokens, at)

    def _tokens(self, name: str, now: float) -> float:
        tokens, at = self.buckets.get(name, (self.burst, now))
        return min(self.burst, tokens + (now - at) * self.rate)

    def take(self, name: str) -> float:
        """Take one token; returns 0 if allowed, else the seconds until one is available."""
        now = self.clock()
        tokens = self._tokens(name, now)
        if tokens >= 1.0:
            self.buckets[name] = (tokens - 1.0, now)
            self._prune(now)
            return 0.0
        self.buckets[name] = (tokens, now)
        return (1.0 - tokens) / self.rate

    def give_back(self, name: str) -> None:
        """Return a token taken by mistake (the request turned out to be someone else's)."""
        now = self.clock()
        self.buckets[name] = (min(self.burst, self._tokens(name, now) + 1.0), now)

    def _prune(self, now: float) -> None:
        if len(self.buckets) > _MAX_BUCKETS:
            # Buckets that have refilled are the same as no bucket.
            self.buckets = {
                k: v
                for k, v in self.buckets.items()
                if v[0] + (now - v[1]) * self.rate < self.burst
            }


def settle(request: Request, key_id: str) -> None:
    """After the database authenticated `key_id` for a request the middleware charged to its
    address: give the address its token back and charge the key (when the key's bucket is
    empty: QuotaExceeded, a 429 with Retry-After). A request charged to the key already,
    or not limited at all (outside `/v1/`), is left as is."""
    buckets: Buckets | None = getattr(request.app.state, "rate_buckets", None)
    charged = request.scope.get(_CHARGED)
    if buckets is None or charged is None or not charged.startswith("addr:"):
        return
    buckets.give_back(charged)
    request.scope[_CHARGED] = name = f"key:{key_id}"
    wait = buckets.take(name)
    if wait > 0:
        raise QuotaExceeded(
            _message(wait), code="rate_limit_exceeded", retry_after_s=max(1, math.ceil(wait))
        )


class RateLimit:
    """The middleware: charges every `/v1/` request to its key or its address (see above)."""

    def __init__(self, app: ASGIApp, *, buckets: Buckets, auth: AuthCache):
        self.app = app
        self.buckets = buckets
        self.auth = auth

    def bucket(self, scope: Scope) -> str:
        """The bucket to charge, with no I/O: the key's id when the cache knows the key."""
        header = dict(scope["headers"]).get(b"authorization")
        key = bearer_key(header.decode("latin-1")) if header else None
        found = self.auth.get(key) if key else None
        return f"key:{found.id}" if found is not None else f"addr:{client_address(scope)}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        name = self.bucket(scope)
        wait = self.buckets.take(name)
        if wait > 0:
            response = error_response(
                429,
                _message(wait),
                code="rate_limit_exceeded",
                headers={"Retry-After": str(max(1, math.ceil(wait)))},
            )
            await response(scope, receive, send)
            return
        scope[_CHARGED] = name
        await self.app(scope, receive, send)
