"""Per-key rate limits: a token bucket per bearer key (per client address without one), on
every `/v1/` request; over the limit answers 429 with `Retry-After`.

    app.add_middleware(RateLimit, per_minute=1200, burst=300)

The buckets live in this process: with N API processes a key gets up to N times the rate,
which bounds abuse without a shared store on the request path.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable

from starlette.types import ASGIApp, Receive, Scope, Send

from api.errors import error_response

_MAX_BUCKETS = 10_000


def principal(scope: Scope) -> str:
    """Who is asking: a hash of the bearer credential, else the client address."""
    auth = dict(scope["headers"]).get(b"authorization")
    if auth:
        return "k:" + hashlib.sha256(auth).hexdigest()
    client = scope.get("client")
    return "ip:" + (client[0] if client else "unknown")


class RateLimit:
    def __init__(
        self,
        app: ASGIApp,
        *,
        per_minute: int,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.app = app
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self.clock = clock
        self.buckets: dict[str, tuple[float, float]] = {}  # who -> (tokens, at)

    def take(self, who: str) -> float:
        """Take one token; returns 0 if allowed, else the seconds until one is available."""
        now = self.clock()
        tokens, at = self.buckets.get(who, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        if tokens >= 1.0:
            self.buckets[who] = (tokens - 1.0, now)
            return 0.0
        self.buckets[who] = (tokens, now)
        return (1.0 - tokens) / self.rate

    def _prune(self) -> None:
        if len(self.buckets) > _MAX_BUCKETS:
            now = self.clock()
            # Buckets that have refilled are the same as no bucket.
            self.buckets = {
                k: v
                for k, v in self.buckets.items()
                if v[0] + (now - v[1]) * self.rate < self.burst
            }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        wait = self.take(principal(scope))
        self._prune()
        if wait > 0:
            response = error_response(
                429,
                "Rate limit reached for requests with this API key; retry after "
                f"{math.ceil(wait)} s.",
                code="rate_limit_exceeded",
                headers={"Retry-After": str(max(1, math.ceil(wait)))},
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)
