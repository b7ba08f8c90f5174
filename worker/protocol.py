"""The pipe protocol between the supervisor and the training child: one JSON object per line.

child -> supervisor (events fd):
    {"t": "metrics", "step": 3, "metrics": {...}}
    {"t": "event", "level": "info", "message": "...", "data": {...}}
    {"t": "phase", "phase": "preparing_model", "message": "loading lco-tiny onto cpu"}
    {"t": "samples", "step": 3, "samples": [{"prompt": "...", "completion": "...", "reward": 1.0}]}
    {"t": "checkpoint", "path": "/abs/dir", "step": 3, "metrics": {...}}
    {"t": "result", "status": "succeeded", "step": 4, "total_steps": 4,
     "final_checkpoint": "/abs/dir" | null, "trained_tokens": 123, "summary": {...}}
    {"t": "error", "category": "user" | "system" | "out_of_memory", "message": "...",
     "param": null}
supervisor -> child (control fd): one word per line: cancel | pause | preempt
"""

from __future__ import annotations

import json
import math
from typing import Any

# The error category of a run that ran out of memory: the job's fault, failed at once.
OUT_OF_MEMORY = "out_of_memory"


def clean(value: Any) -> Any:
    """JSON-safe copy: non-finite floats become None (PostgreSQL's JSON has no NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean(v) for v in value]
    if isinstance(value, str | int | bool) or value is None:
        return value
    if hasattr(value, "item"):  # numpy / torch scalars
        return clean(value.item())
    return str(value)


def encode(message: dict[str, Any]) -> str:
    return json.dumps(clean(message), allow_nan=False) + "\n"


def decode(line: str) -> dict[str, Any] | None:
    try:
        message = json.loads(line)
    except ValueError:
        return None
    return message if isinstance(message, dict) and "t" in message else None
