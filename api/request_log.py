"""A request id per HTTP request, bound to every log line the request writes, returned in
`x-request-id`, and one `http.request` line per request.

An incoming `x-request-id` is kept when it is well formed (1-128 characters of
`[A-Za-z0-9._:-]`, so a proxy's or a client's id ties their logs to ours); anything else is
replaced by a fresh one, never echoed (it would let a client write arbitrary text into the
logs and headers). The middleware is outermost, so refusals by the guards (413, 429, 431)
carry an id too. Successful probes and scrapes log at DEBUG (they come every few seconds).
"""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.metrics import route_template
from jobs.logs import log_context

log = logging.getLogger("api.request")

HEADER = "x-request-id"
_WELL_FORMED = re.compile(r"[A-Za-z0-9._:-]{1,128}")
QUIET_ROUTES = frozenset({"/livez", "/readyz", "/healthz", "/metrics"})


def request_id_from(scope: Scope) -> str:
    """The caller's id when it is well formed, else a new one."""
    for name, value in scope.get("headers") or ():
        if name == HEADER.encode():
            text = value.decode("latin-1")
            if _WELL_FORMED.fullmatch(text):
                return text
            break
    return uuid.uuid4().hex


class RequestLog:
    """Pure ASGI (no BaseHTTPMiddleware: it would buffer the job stream)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_from(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)[HEADER] = request_id
            await send(message)

        with log_context(request_id=request_id):
            try:
                await self.app(scope, receive, send_with_id)
            finally:
                route = route_template(scope)
                # Probes and scrapes come every few seconds: a line each only when they fail.
                quiet = route in QUIET_ROUTES and status < 400
                log.log(
                    logging.DEBUG if quiet else logging.INFO,
                    "http.request",
                    extra={
                        "method": scope["method"],
                        "route": route,
                        "status": status,
                        "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                    },
                )
