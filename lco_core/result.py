"""What a run returns to its caller (the worker or `lco train`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

RunStatus = Literal["succeeded", "cancelled", "paused", "preempted"]


@dataclass
class RunResult:
    status: RunStatus
    step: int
    total_steps: int
    final_checkpoint: Path | None
    trained_tokens: int = 0
    summary: dict[str, float] = field(default_factory=dict)
