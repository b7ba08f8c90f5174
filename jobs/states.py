"""The job state machine: the states of OpenAI's job object plus `paused`, and the only
legal moves between them. Every status write goes through `check_transition`.

OpenAI's `validating_files` is not one: a job's files are checked while it is submitted
(`jobs.lifecycle.submit_job`), so a job starts `queued` or is refused with a 400.

    queued  -> running | paused | cancelled | failed
    running -> succeeded | failed | cancelled | paused | queued (requeued after a crash
               or preemption; the next attempt resumes from the newest checkpoint)
    paused  -> queued | cancelled
    succeeded, failed, cancelled: terminal

What a user may ask of a job (POST .../cancel, /pause, /resume) is `allowed_actions`: the
lifecycle refuses anything else and the job object lists them, so clients (the dashboard)
offer exactly those.
"""

from __future__ import annotations

from enum import StrEnum

from jobs.errors import IllegalTransition


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    PAUSED = "paused"


TERMINAL = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})

TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
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


class Action(StrEnum):
    CANCEL = "cancel"
    PAUSE = "pause"
    RESUME = "resume"


# The user's actions by status. A running job stops between steps, so there cancel and pause
# are requests its worker acts on (`Job.requested_action`), and resume withdraws a pending
# pause; elsewhere each is the move to cancelled, paused or queued.
ACTIONS: dict[JobStatus, frozenset[Action]] = {
    JobStatus.QUEUED: frozenset({Action.CANCEL, Action.PAUSE}),
    JobStatus.RUNNING: frozenset({Action.CANCEL, Action.PAUSE}),
    JobStatus.PAUSED: frozenset({Action.CANCEL, Action.RESUME}),
    JobStatus.SUCCEEDED: frozenset(),
    JobStatus.FAILED: frozenset(),
    JobStatus.CANCELLED: frozenset(),
}

# A running job with a pending request: a cancel settles everything, a pause can be
# overtaken by a cancel or withdrawn.
PENDING_ACTIONS: dict[str, frozenset[Action]] = {
    Action.CANCEL: frozenset(),
    Action.PAUSE: frozenset({Action.CANCEL, Action.RESUME}),
}


def allowed_actions(status: str, requested_action: str | None = None) -> list[str]:
    """The actions open to a job now, in the order cancel, pause, resume."""
    allowed = ACTIONS[JobStatus(status)]
    if status == JobStatus.RUNNING and requested_action is not None:
        allowed = PENDING_ACTIONS[requested_action]
    return [a.value for a in Action if a in allowed]


def check_action(status: str, requested_action: str | None, action: Action) -> None:
    """Raise IllegalTransition unless `action` is open to a job in this state."""
    if action not in allowed_actions(status, requested_action):
        pending = f" ({requested_action} requested)" if requested_action else ""
        raise IllegalTransition(
            f"cannot {action} a job that is {status}{pending}", code="invalid_state_transition"
        )
