"""How many ranks a job's training child runs on this worker, and on which devices.

A GPU worker runs a job that asked for `resources: {gpus: N}` as N ranks, one per GPU,
pinned with CUDA_VISIBLE_DEVICES (NCCL). A CPU worker runs every job as
`worker_cpu_ranks` gloo ranks (`LCO_WORKER_CPU_RANKS`), which is how the multi-rank path
is tested without GPUs. The child (`worker.child`) starts the ranks with torchrun's
launcher in its own process group, so the supervisor's group kill reaches every rank.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from jobs.settings import Settings


def _gpu_worker(settings: Settings) -> bool:
    if settings.device == "cpu":
        return False
    if settings.device.startswith("cuda"):
        return True
    # "auto": without torch imported here, a machine with an NVIDIA driver counts as GPU.
    return importlib.util.find_spec("torch") is not None and Path("/dev/nvidia0").exists()


def training_ranks(settings: Settings, gpus: int) -> int:
    """How many ranks a job's training child runs: one per GPU the job asked for on a GPU
    worker, `worker_cpu_ranks` gloo ranks on a CPU worker."""
    return max(1, gpus) if _gpu_worker(settings) else settings.worker_cpu_ranks


def rank_env(settings: Settings, ranks: int) -> dict[str, str]:
    """The child's environment: a GPU job's ranks pinned to the first `ranks` of this
    worker's GPUs (the worker runs one job at a time, so they are free)."""
    env = dict(os.environ)
    if ranks > 1 and _gpu_worker(settings):
        visible = env.get("CUDA_VISIBLE_DEVICES")
        devices = visible.split(",") if visible else [str(i) for i in range(ranks)]
        env["CUDA_VISIBLE_DEVICES"] = ",".join(devices[:ranks])
    return env
