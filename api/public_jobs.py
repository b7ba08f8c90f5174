"""Job objects as the API shows them: `JobPublic`, with its place in the queue while queued.

The jobs, admin and stream routers all answer with these, so they are built here, outside
any router (a router imports services and schemas, never another router).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Row
from sqlalchemy.orm import Session

from api.schemas.jobs import JobPublic
from jobs.models import Job
from jobs.queue import QueueSlots
from jobs.states import JobStatus


def public_jobs(
    session: Session, places: QueueSlots, jobs: Sequence[Job | Row[Any]]
) -> list[JobPublic]:
    """Job objects; queued ones with their place in the queue (one plan for all of them)."""
    slots = places.slots(session, [j.id for j in jobs if j.status == JobStatus.QUEUED])
    return [JobPublic.from_row(j, slots.get(j.id)) for j in jobs]
