"""Per-step measurement helpers: phase timers, peak memory, grad norms, the metrics.jsonl log.

The metric names written every step are the ones in docs/method.md ("Metrics every
step"); the dashboard and the stability report read them by these names.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch


class PhaseTimer:
    """Wall-clock seconds per named phase of one step (rollout, reward, update, sync...)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start

    def as_metrics(self) -> dict[str, float]:
        return {f"time_{k}": round(v, 6) for k, v in self.seconds.items()}


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory so far: the CUDA allocator's peak on GPU, the process's max RSS on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10  # bytes on macOS, KiB on Linux


def grad_norm(params: Iterable[torch.nn.Parameter]) -> float:
    """The L2 norm of the parameters' gradients taken together (0.0 when there are none)."""
    return grad_norm_of(p.grad for p in params if p.grad is not None)


def grad_norm_of(tensors: Iterable[torch.Tensor]) -> float:
    """The L2 norm of the tensors taken together, as one vector."""
    tensors = list(tensors)
    if any(type(t).__name__ == "DTensor" for t in tensors):
        from lco_core.distributed import grad_norm_of as sharded_norm

        return sharded_norm(tensors)
    norms = [t.detach().float().norm() for t in tensors]
    return float(torch.linalg.vector_norm(torch.stack(norms))) if norms else 0.0


class MetricsLog:
    """`metrics.jsonl`: one JSON object per step. On resume the lines past the checkpoint's
    step are dropped, so steps stay strictly increasing with no duplicates."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def truncate_after(self, step: int) -> int:
        """Keep only steps <= `step`; returns how many later lines were dropped."""
        if not self.path.exists():
            return 0
        kept, dropped = [], 0
        for line in self.path.read_text().splitlines():
            if line.strip() and json.loads(line)["step"] <= step:
                kept.append(line)
            elif line.strip():
                dropped += 1
        self.path.write_text("".join(f"{line}\n" for line in kept))
        return dropped

    def append(self, metrics: dict[str, float]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(metrics) + "\n")

    def read(self) -> list[dict[str, float]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]
