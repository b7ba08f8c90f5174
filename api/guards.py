"""Cheap checks on a request before any work is done for it (no routing, no database).

`RequestGuard` (outermost) looks only at the request head:

- headers larger than `max_header_bytes` in total (names and values) answer 431;
- a NUL byte (`%00`) in the path answers 404: no id contains one, so no object is named;
- a NUL byte in a query parameter or a header answers 400 naming it (`param`).

`JsonTextGuard` reads a JSON body (already bounded by `api.limits`) before the route does
and answers 400 naming the field when a string in it holds a NUL (`\\u0000`) or a lone
surrogate (`\\ud800`).

Why: PostgreSQL's text type cannot hold NUL (a query carrying one fails with a DataError,
a 500) and no database can store a lone surrogate. Every id, query value and body string
that reaches the database passes one of these first, so the routes need no checks of
their own. The server bounds the header read itself too (`lco serve` sets uvicorn's
`h11_max_incomplete_event_size`): the check here only runs once the head has been read.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import error_response

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def header_bytes(scope: Scope) -> int:
    """The size of the request's headers, as sent (name, ': ', value, CRLF)."""
    return sum(len(name) + len(value) + 4 for name, value in scope["headers"])


def nul_query_param(query_string: bytes) -> str | None:
    """The name of the first query parameter whose name or value holds a NUL, else None."""
    if b"%00" not in query_string and b"\x00" not in query_string:
        return None  # the only spellings of a NUL in a URL: the common case costs one scan
    for name, value in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True):
        if "\x00" in name or "\x00" in value:
            return name.replace("\x00", "\\x00")
    return None


def _storable(text: str) -> bool:
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate
        return False
    return True


def _printable(text: str) -> str:
    """`text` with NULs and lone surrogates escaped, safe to echo in a JSON response."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")


def bad_text_field(value: Any, path: str = "") -> str | None:
    """The dotted path of the first string (key or value) in decoded JSON that the database
    cannot store, else None. The root itself is named `body`."""
    if isinstance(value, str):
        return None if _storable(value) else path or "body"
    if isinstance(value, dict):
        for key, item in value.items():
            here = f"{path}.{key}" if path else str(key)
            if not _storable(key):
                return _printable(here)
            found = bad_text_field(item, here)
            if found is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = bad_text_field(item, f"{path}.{index}" if path else str(index))
            if found is not None:
                return found
    return None


def server_header_bound(max_header_bytes: int) -> int:
    """What `lco serve` gives uvicorn's h11 as the most it buffers for a request head: room
    for the request line and headers up to the limit, so a head over the limit but under
    this bound gets the 431 envelope here; one over it (a 64 MB header) is cut off by the
    server after this many bytes (a plain 400, connection closed)."""
    return 2 * max_header_bytes + 16 * 1024


class RequestGuard:
    def __init__(self, app: ASGIApp, *, max_header_bytes: int):
        self.app = app
        self.max_header_bytes = max_header_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        response = None
        if header_bytes(scope) > self.max_header_bytes:
            response = error_response(
                431,
                f"The request's headers are too large (limit {self.max_header_bytes} bytes).",
                code="request_header_fields_too_large",
            )
        elif "\x00" in scope["path"]:
            response = error_response(
                404,
                "No such object: an id never contains a NUL byte.",
                code="not_found",
            )
        elif (param := nul_query_param(scope["query_string"])) is not None:
            response = error_response(
                400, f"Invalid value for '{param}': it contains a NUL byte.", param=param
            )
        else:
            for name, value in scope["headers"]:
                if b"\x00" in value:
                    header = name.decode("latin-1")
                    response = error_response(
                        400,
                        f"Invalid value for header '{header}': it contains a NUL byte.",
                        param=header,
                    )
                    break
        if response is not None:
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


class JsonTextGuard:
    """Install inside the body limit: it keeps a JSON body in memory to check it."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _BODY_METHODS:
            await self.app(scope, receive, send)
            return
        content_type = dict(scope["headers"]).get(b"content-type", b"")
        if not content_type.split(b";")[0].strip().lower().endswith(b"json"):
            await self.app(scope, receive, send)
            return
        messages: list[Message] = []
        body = bytearray()
        try:
            while True:
                message = await receive()
                messages.append(message)
                if message["type"] != "http.request":
                    break
                body += message.get("body", b"")
                if not message.get("more_body", False):
                    break
        except HTTPException as exc:  # the body limit, raised from its receive
            response = error_response(
                exc.status_code,
                "The request body is too large." if exc.status_code == 413 else str(exc.detail),
                code="request_too_large" if exc.status_code == 413 else None,
            )
            await response(scope, receive, send)
            return
        # Only a `\u` escape can spell a NUL or a lone surrogate in JSON text (a raw NUL is a
        # parse error the route reports): most bodies skip the parse here.
        if b"\\u" in body:
            try:
                param = bad_text_field(json.loads(bytes(body)))
            except ValueError:
                param = None  # not JSON: the route answers it
            if param is not None:
                response = error_response(
                    400,
                    f"Invalid value for '{param}': text may not contain a NUL character "
                    "or a lone surrogate.",
                    param=param,
                    code="invalid_text",
                )
                await response(scope, receive, send)
                return
        pending = iter(messages)

        async def replay() -> Message:
            message = next(pending, None)
            return message if message is not None else await receive()

        await self.app(scope, replay, send)
