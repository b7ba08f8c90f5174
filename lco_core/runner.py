"""Run one fine-tuning job end to end: the single entry point the worker and `lco train` call.

    result = run_job(spec, training_file=Path("train.jsonl"), validation_file=None,
                     output_dir=Path("runs/job-1"), callbacks=Callbacks())

`output_dir` receives `metrics.jsonl` (one JSON object per step) and
`checkpoints/step-N/` (Hugging Face model dirs with a manifest). If `output_dir` already
holds a complete checkpoint, the run resumes from the newest one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from lco_core.callbacks import Callbacks
from lco_spec.job import JobSpec

RunStatus = Literal["succeeded", "cancelled", "paused", "preempted"]


@dataclass
class RunResult:
    status: RunStatus
    step: int
    total_steps: int
    final_checkpoint: Path | None
    trained_tokens: int = 0
    summary: dict[str, float] = field(default_factory=dict)


def run_job(
    spec: JobSpec,
    *,
    training_file: Path,
    validation_file: Path | None,
    output_dir: Path,
    callbacks: Callbacks | None = None,
    model_path: str | None = None,
    device: str = "auto",
) -> RunResult:
    """Train `spec` (already validated). `model_path` overrides how `spec.model` is resolved
    (the service passes the checkpoint dir of a fine-tuned model name)."""
    raise NotImplementedError("being written")
