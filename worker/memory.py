"""The training process' memory: its limit, and how running out is recognised.

    apply_limit(4096)              # in the child, before the trainer loads: RLIMIT_AS, MiB
    is_out_of_memory(exc)          # MemoryError, torch's (CUDA) OutOfMemoryError, ENOMEM
    before = oom_kills()           # the supervisor, before starting the child ...
    oom_kills() > before           # ... after a SIGKILL: the kernel's OOM killer did it

Running out of memory is the job's fault (its model, batch or sequence length), so the
supervisor fails the job at once rather than spend its retries on the same outcome.

RLIMIT_AS caps the address space, not resident memory: CUDA and vLLM reserve far more
virtual memory than they use, so on GPU workers leave the limit off (0) and bound memory
with the container's cgroup instead. A child killed by the cgroup's OOM killer dies of
SIGKILL with no message; the cgroup's `oom_kill` counter (v2 `memory.events`, v1
`memory.oom_control`) going up while it ran tells that apart from any other SIGKILL. The
counter is the whole cgroup's, so on a worker sharing its cgroup with other memory-hungry
processes a kill of one of them during the run is read the same way.
"""

from __future__ import annotations

import contextlib
import errno
import resource
from pathlib import Path

_CGROUP_ROOT = Path("/sys/fs/cgroup")


def apply_limit(limit_mb: int) -> None:
    """Cap this process' address space at `limit_mb` MiB (0: no limit). Inherited by the
    processes it starts (vLLM's engine, data loader workers)."""
    if limit_mb <= 0:
        return
    limit = limit_mb * 1024 * 1024
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)  # an unprivileged process may only lower it
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def is_out_of_memory(exc: BaseException) -> bool:
    """MemoryError, torch's OutOfMemoryError (CUDA; recognised without importing torch), or
    an mmap refused for want of address space: under a tight limit, `import torch` itself
    fails with "libtorch_cpu.so: failed to map segment from shared object"."""
    if isinstance(exc, MemoryError):
        return True
    if any(cls.__name__ == "OutOfMemoryError" for cls in type(exc).__mro__):
        return True
    if isinstance(exc, OSError) and exc.errno == errno.ENOMEM:
        return True
    return isinstance(exc, ImportError) and "failed to map segment" in str(exc)


def _counter_files(cgroup_file: Path) -> list[Path]:
    """This process' cgroup files that hold an `oom_kill` count (v2 and v1)."""
    files = []
    with contextlib.suppress(OSError):
        for line in cgroup_file.read_text().splitlines():
            hierarchy, controllers, path = line.split(":", 2)
            rel = path.lstrip("/")
            if hierarchy == "0" and controllers == "":
                files.append(_CGROUP_ROOT / rel / "memory.events")
                files.append(_CGROUP_ROOT / "unified" / rel / "memory.events")
            elif "memory" in controllers.split(","):
                files.append(_CGROUP_ROOT / "memory" / rel / "memory.oom_control")
    return files


def oom_kills(cgroup_file: Path = Path("/proc/self/cgroup")) -> int:
    """How many processes the OOM killer has killed in this process' memory cgroup (the
    child's too: it inherits it); 0 where no counter can be read."""
    total = 0
    for path in _counter_files(cgroup_file):
        with contextlib.suppress(OSError, ValueError):
            for line in path.read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    total = max(total, int(value))
    return total
