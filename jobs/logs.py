"""Structured logs for every process: one JSON object per line on stderr.

    configure_logging()                      # once, at a process's entry point
    with log_context(job_id=job.id, team_id=job.team_id, attempt=2, fencing_token=7):
        log.info("job.child_started", extra={"pid": pid})

A line carries `time` (ISO 8601, UTC), `level`, `logger`, `message`, every `extra={...}`
field of the call, and the fields of the enclosing `log_context` (the API binds
`request_id` per request; a worker binds the job it runs). Formatting is python-json-logger's;
this module only decides the field names and where the lines go.

The level is `LCO_LOG_LEVEL` (default INFO). Uvicorn's own loggers are routed through the
same handler, and its access log is quieted to WARNING: the API writes its own `http.request`
line, with the request id and the route template (api.request_log).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import IO, Any

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

HANDLER_NAME = "lco-json"

# Fields bound for the current request or job; asyncio tasks and threads started with
# `contextvars.copy_context()` inherit them.
_context: ContextVar[dict[str, Any] | None] = ContextVar("lco_log_context", default=None)

# Libraries whose INFO lines are one per HTTP call or connection: noise at INFO.
_QUIET = ("httpx", "httpcore", "uvicorn.access", "amqp", "kombu", "multipart")


@contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Add `fields` to every log line written inside the block (nested blocks add up)."""
    token = _context.set({**(_context.get() or {}), **fields})
    try:
        yield
    finally:
        _context.reset(token)


def context_fields() -> dict[str, Any]:
    """The fields bound now (a copy)."""
    return dict(_context.get() or {})


class _ContextFilter(logging.Filter):
    """Copies the bound fields onto each record, without overriding a call's own `extra`."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in (_context.get() or {}).items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


def json_handler(stream: IO[str] | None = None) -> logging.Handler:
    """A handler writing JSON lines to `stream` (stderr by default)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.set_name(HANDLER_NAME)
    handler.setFormatter(
        JsonFormatter(
            "{levelname}{name}{message}",
            style="{",
            rename_fields={"levelname": "level", "name": "logger"},
            timestamp="time",
            # Uvicorn's copy of its message with terminal colour codes.
            reserved_attrs=[*RESERVED_ATTRS, "color_message"],
        )
    )
    handler.addFilter(_ContextFilter())
    return handler


def configure_logging(level: str | int | None = None, stream: IO[str] | None = None) -> None:
    """Send every logger's records, as JSON lines, to `stream` (stderr). Safe to call more
    than once: it replaces its own handler rather than adding a second one."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(json_handler(stream))
    root.setLevel(level or os.environ.get("LCO_LOG_LEVEL", "INFO").upper())
    # Uvicorn installs handlers of its own on these (before our factory runs): drop them so
    # its lines come out once, as JSON.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    for name in _QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
