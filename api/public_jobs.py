"""Job objects as the API shows them: `JobPublic`, with its place in the queue while queued
and its estimated finish while queued or running.

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
    """Job objects; queued ones with their place in the queue, queued and running ones with
    their estimated finish (one plan for all of them)."""
    found = places.places(
        session,
        queued=[j.id for j in jobs if j.status == JobStatus.QUEUED],
        running=[j.id for j in jobs if j.status == JobStatus.RUNNING],
    )
    return [JobPublic.from_row(j, found.slots.get(j.id), found.finishes.get(j.id)) for j in jobs]
