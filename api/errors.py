"""Every error leaves as OpenAI's envelope `{"error": {"message", "type", "param", "code"}}`.

Bad input is a 4xx with a message that names the offending field (`param`); a database
that cannot be reached (down, restarting) is a 503 with `Retry-After`; anything unexpected
is a 500 with a generic message: no stack trace ever reaches a response.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.schemas.common import ErrorEnvelope
from jobs.db import db_unreachable
from jobs.errors import (
    Conflict,
    ControlError,
    Forbidden,
    IllegalTransition,
    InvalidRequest,
    NotFound,
    QuotaExceeded,
    Unauthorized,
)
from lco_spec.errors import SpecError

log = logging.getLogger(__name__)

_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "invalid_request_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    503: "server_error",
}


# Declared on every route, so the OpenAPI schema (and clients generated from it) knows the
# envelope every error arrives in.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorEnvelope, "description": description}
    for status, description in (
        (400, "Invalid request (the `param` names the field)"),
        (401, "Missing, unknown or revoked API key"),
        (403, "An admin route called without an admin key, or a base model deleted"),
        (404, "No such object for this team"),
        (409, "Conflicts with the object's state (or a reused Idempotency-Key)"),
        (413, "Request body too large"),
        (429, "Rate limit or quota exceeded (see Retry-After)"),
    )
}


def error_response(
    status: int,
    message: str,
    *,
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = {
        "error": {
            "message": message,
            "type": _TYPES.get(
                status, "server_error" if status >= 500 else "invalid_request_error"
            ),
            "param": param,
            "code": code,
        }
    }
    return JSONResponse(body, status_code=status, headers=headers)


def _loc_to_param(loc: tuple[object, ...]) -> str | None:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header", "form")]
    return ".".join(parts) or None


async def _validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    first = errors[0] if errors else {}
    if first.get("type") == "json_invalid":
        return error_response(
            400, "We could not parse the JSON body of your request.", code="invalid_json"
        )
    param = _loc_to_param(tuple(first.get("loc", ())))
    message = str(first.get("msg", "invalid request"))
    if first.get("type") == "missing" and param:
        message = f"Missing required parameter: '{param}'."
    elif first.get("type") == "extra_forbidden" and param:
        message = f"Unrecognized request argument supplied: {param}"
    return error_response(400, message, param=param, code=str(first.get("type")) or None)


async def _http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    message = str(exc.detail) if exc.detail else "error"
    code = None
    if status == 404:
        message, code = f"Unknown request URL: {request.method} {request.url.path}", "unknown_url"
    elif status == 413:
        code = "request_too_large"
        message = "The request body is too large."
    elif status == 405:
        code = "method_not_allowed"
    elif status == 400 and message == "There was an error parsing the body":
        code = "invalid_body"
    return error_response(status, message, code=code, headers=getattr(exc, "headers", None))


async def _control(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ControlError)
    status = 400
    if isinstance(exc, NotFound):
        status = 404
    elif isinstance(exc, Unauthorized):
        status = 401
    elif isinstance(exc, IllegalTransition | Conflict):
        status = 409
    elif isinstance(exc, Forbidden):
        status = 403
    elif isinstance(exc, QuotaExceeded):
        return error_response(
            429,
            exc.message,
            param=exc.param,
            code=exc.code,
            headers={"Retry-After": str(exc.retry_after_s)},
        )
    elif isinstance(exc, InvalidRequest):
        status = 400
    return error_response(status, exc.message, param=exc.param, code=exc.code)


async def _spec(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, SpecError)
    return error_response(400, str(exc), param=exc.param, code="invalid_request")


async def _database(request: Request, exc: Exception) -> JSONResponse:
    # A database that is down or restarting is the server's problem, not the caller's (503,
    # retry); any other database error is a bug (500), not to be hidden behind a retry.
    assert isinstance(exc, DBAPIError)
    if not db_unreachable(exc):
        return await _unexpected(request, exc)
    log.warning("db.unavailable", exc_info=True)
    return error_response(
        503,
        "The service is temporarily unavailable; retry shortly.",
        code="service_unavailable",
        headers={"Retry-After": "5"},
    )


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("api.unhandled", extra={"path": request.url.path})
    return error_response(
        500, "The server had an error processing your request.", code="internal_error"
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(ControlError, _control)
    app.add_exception_handler(SpecError, _spec)
    app.add_exception_handler(OperationalError, _database)
    app.add_exception_handler(DBAPIError, _database)
    app.add_exception_handler(Exception, _unexpected)
