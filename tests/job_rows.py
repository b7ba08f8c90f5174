"""Job rows written straight into the store, for tests of the queue, leases and caches that
need jobs without going through the API.

    session.add(job_row(team_id, gpus=2))       # a queued supervised job; override any column
"""

from __future__ import annotations

from typing import Any

from jobs.ids import new_id
from jobs.models import Job
from jobs.states import JobStatus


def job_row(team_id: str, **values: Any) -> Job:
    """A queued, never-dispatched supervised job on lco-tiny in the default pool."""
    columns: dict[str, Any] = {
        "id": new_id("ftjob"),
        "team_id": team_id,
        "spec": {},
        "model": "lco-tiny",
        "base_model": "lco-tiny",
        "training_file": "file-x",
        "method_type": "supervised",
        "seed": 1,
        "pool": "default",
        "gpus": 1,
        "priority": "normal",
        "status": JobStatus.QUEUED,
        "max_attempts": 3,
        "fencing_token": 0,
        "attempt": 0,
        "step": 0,
        "dispatch_count": 0,
    }
    return Job(**(columns | values))
