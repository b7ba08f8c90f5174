"""What a run returns to its caller (the worker or `lco train`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from lco_core.callbacks import StopReason

RunStatus = Literal["succeeded", "cancelled", "paused", "preempted"]
# The status of a run that stopped between steps because its caller asked it to.
STATUS_FOR_STOP: dict[StopReason, RunStatus] = {
    "cancel": "cancelled",
    "pause": "paused",
    "preempt": "preempted",
}


@dataclass
class RunResult:
    status: RunStatus
    step: int
    total_steps: int
    final_checkpoint: Path | None
    trained_tokens: int = 0
    summary: dict[str, float] = field(default_factory=dict)
