"""Public object ids (`file-...`, `ftjob-...`), API keys (`lco-...`, see `jobs.auth`) and
the one clock every row uses."""

from __future__ import annotations

import secrets
import string
from datetime import UTC, datetime

_ALPHABET = string.ascii_letters + string.digits


def new_id(prefix: str, n: int = 24) -> str:
    """`prefix-` plus n random base62 characters (OpenAI's id shape), drawn with `secrets`."""
    return f"{prefix}-" + "".join(secrets.choice(_ALPHABET) for _ in range(n))


def utcnow() -> datetime:
    return datetime.now(UTC)


def epoch(dt: datetime | None) -> int | None:
    """Unix seconds, as OpenAI's objects carry timestamps."""
    return None if dt is None else int(dt.timestamp())
