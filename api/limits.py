"""Request body limits: uploads may reach `max_upload_bytes`, every other body `max_json_bytes`.

Starlette's body limiter counts streamed bytes (chunked uploads included) and raises an
HTTP 413 that our handlers turn into the error envelope.
"""

from __future__ import annotations

from starlette.middleware.body_limit import RequestBodyLimitMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

# Multipart boundaries and headers around the file itself.
_MULTIPART_SLACK = 64 * 1024


class BodyLimitByRoute:
    def __init__(self, app: ASGIApp, *, upload_path: str, max_upload: int, max_json: int):
        self.upload_path = upload_path
        self.uploads = RequestBodyLimitMiddleware(app, max_upload + _MULTIPART_SLACK)
        self.others = RequestBodyLimitMiddleware(app, max_json)
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
        elif scope["method"] == "POST" and scope["path"].rstrip("/") == self.upload_path:
            await self.uploads(scope, receive, send)
        else:
            await self.others(scope, receive, send)
