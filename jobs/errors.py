"""Typed control-plane errors; the API maps each to one HTTP status and OpenAI error code."""

from __future__ import annotations


class ControlError(Exception):
    """Base class: `message` is safe to show to the caller."""

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


class NotFound(ControlError):
    """The object does not exist for this team (other teams' objects included)."""


class IllegalTransition(ControlError):
    """The job cannot move from its current state to the requested one (HTTP 409)."""


class Conflict(ControlError):
    """The request conflicts with the current state of another object (HTTP 409)."""


class InvalidRequest(ControlError):
    """Well-formed but unacceptable input (HTTP 400), naming the offending `param`."""


class Unauthorized(ControlError):
    """No valid API key (HTTP 401)."""


class QuotaExceeded(ControlError):
    """Over the team's quota or the caller's rate (HTTP 429 with Retry-After)."""

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after_s: int = 30,
    ):
        super().__init__(message, param=param, code=code)
        self.retry_after_s = retry_after_s


class Forbidden(ControlError):
    """An authenticated key that may not use an admin route (HTTP 403)."""
