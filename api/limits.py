"""Request body limits: uploads may reach `max_upload_bytes`, every other body `max_json_bytes`.

A declared Content-Length over the limit is refused before the body is read; a streamed
(chunked) body is counted as it arrives and refused once it passes the limit. Both answer
413 in OpenAI's error envelope.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import error_response

# Multipart boundaries and headers around the file itself.
MULTIPART_SLACK = 64 * 1024


def _too_large() -> HTTPException:
    return HTTPException(status_code=413, detail="The request body is too large.")


class BodyLimitByRoute:
    def __init__(self, app: ASGIApp, *, upload_path: str, max_upload: int, max_json: int):
        self.app = app
        self.upload_path = upload_path
        self.max_upload = max_upload + MULTIPART_SLACK
        self.max_json = max_json

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        upload = scope["method"] == "POST" and scope["path"].rstrip("/") == self.upload_path
        limit = self.max_upload if upload else self.max_json
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            response = error_response(
                413,
                f"The request body is too large (limit {limit} bytes).",
                code="request_too_large",
            )
            await response(scope, receive, send)
            return
        seen = 0

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _too_large()
            return message

        await self.app(scope, counting_receive, send)
