"""The job state machine: the states of OpenAI's job object plus `paused`, and the only
legal moves between them. Every status write goes through `check_transition`.

    validating_files -> queued | failed | cancelled
    queued  -> running | paused | cancelled | failed
    running -> succeeded | failed | cancelled | paused | queued (requeued after a crash
               or preemption; the next attempt resumes from the newest checkpoint)
    paused  -> queued | cancelled
    succeeded, failed, cancelled: terminal
"""

from __future__ import annotations

from enum import StrEnum

from jobs.errors import IllegalTransition


class JobStatus(StrEnum):
    VALIDATING_FILES = "validating_files"
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    PAUSED = "paused"


TERMINAL = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})

TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.VALIDATING_FILES: frozenset(
        {JobStatus.QUEUED, JobStatus.FAILED, JobStatus.CANCELLED}
    ),
    JobStatus.QUEUED: frozenset(
        {JobStatus.RUNNING, JobStatus.PAUSED, JobStatus.CANCELLED, JobStatus.FAILED}
    ),
    JobStatus.RUNNING: frozenset(
        {
            JobStatus.SUCCEEDED,
            JobStatus.FAILED,
            JobStatus.CANCELLED,
            JobStatus.PAUSED,
            JobStatus.QUEUED,
        }
    ),
    JobStatus.PAUSED: frozenset({JobStatus.QUEUED, JobStatus.CANCELLED}),
    JobStatus.SUCCEEDED: frozenset(),
    JobStatus.FAILED: frozenset(),
    JobStatus.CANCELLED: frozenset(),
}


def can_transition(current: str, target: str) -> bool:
    return JobStatus(target) in TRANSITIONS[JobStatus(current)]


def check_transition(current: str, target: str) -> None:
    """Raise IllegalTransition unless `current -> target` is a legal move."""
    if not can_transition(current, target):
        raise IllegalTransition(
            f"a job that is {current} cannot become {target}", code="invalid_state_transition"
        )


def is_terminal(status: str) -> bool:
    return JobStatus(status) in TERMINAL
