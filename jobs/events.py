"""Job events: the human-readable history of a job (`GET .../events`)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from jobs.ids import new_id
from jobs.models import JobEvent

# Event type of a step's rollout samples: served by `.../samples` and the live stream,
# kept out of OpenAI's event list (one per step would bury the messages).
SAMPLES_EVENT = "samples"


def add_event(
    session: Session,
    job_id: str,
    message: str,
    *,
    level: str = "info",
    type: str = "message",
    data: dict[str, Any] | None = None,
) -> JobEvent:
    """Append one event (the caller commits). Unknown levels become `info`."""
    if level not in ("info", "warn", "error"):
        level = "warn" if level == "warning" else "info"
    event = JobEvent(
        id=new_id("ftevent"),
        job_id=job_id,
        level=level,
        type=type,
        message=message[:4000],
        data=data,
    )
    session.add(event)
    return event
