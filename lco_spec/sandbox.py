"""Grader calls under a hard, killable time limit: a small, long-lived pool of processes.

sympy (behind `math_verify` and many reasoning-gym scorers) can run for days on a short
hostile input (`(x+1)^{2000}` against `(x+2)^{2000}`) and offers no timeout that works off
the main thread, so such calls run in worker processes that pebble kills and replaces
when a call passes its limit. The caller gets `GraderTimeout` (a `GraderError`: the
sample scores 0 and is counted). The cost is one pickled round trip per call, about
0.1-0.2 ms (`tests/test_grader_limits.py::test_pool_overhead_is_small` measures it).

Workers are forked from this process, so they start warm (the parent imports what its
graders need first, see `warm`) and a replacement costs milliseconds, not the seconds of
importing sympy; a forkserver or spawn would re-import the `__main__` module (the
training child, with torch) in every worker. The workers run only pure-Python grading,
never torch or CUDA, and a worker that hangs on a lock inherited from another thread is
killed at the limit like any other. Settings, read when the pool starts:
`LCO_GRADER_WORKERS` (processes, default min(4, CPUs)) and `LCO_GRADER_MEMORY_MB`
(address space a worker may add to what it inherited, default 4096, 0 for no limit: a
call that would build a giant number fails with MemoryError instead of swapping).

    >>> call(pow, (2, 10), timeout_s=2.0, what="demo")
    1024
"""

from __future__ import annotations

import atexit
import contextlib
import multiprocessing
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, TypeVar

from pebble import ProcessExpired, ProcessPool

from lco_spec.errors import GraderError, GraderTimeout

T = TypeVar("T")

_lock = threading.Lock()
_pool: ProcessPool | None = None
_pool_pid = 0


def _workers() -> int:
    default = min(4, os.cpu_count() or 1)
    return max(1, int(os.environ.get("LCO_GRADER_WORKERS", default)))


def _init_worker(memory_mb: int) -> None:
    """Runs once in each worker before its first call (not counted in any call's limit).
    The limit is on address space added to what the fork inherited: a trainer maps many
    GB (CUDA reserves far more), and a flat limit below that would fail every call."""
    import resource
    import signal

    # pebble stops an overdue worker with SIGTERM, then SIGKILL 3 s later; its own SIGTERM
    # handler is Python code, which cannot run while sympy sits in one long C call (a big
    # integer product), so every timeout would cost 3 s more. The default action kills at
    # once, whatever the worker is doing.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if memory_mb <= 0:
        return
    try:
        with open("/proc/self/statm") as f:
            inherited = int(f.read().split()[0]) * resource.getpagesize()
    except (OSError, ValueError, IndexError):
        return  # no /proc: no limit rather than a guess
    limit = inherited + memory_mb * 1024 * 1024
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


_warmed: set[str] = set()


def warm(key: str, warm_up: Callable[[], object]) -> None:
    """Run `warm_up` once in this process (per `key`), before workers are forked from it,
    so that no call pays for imports and first-use setup (sympy's parser, nltk's stemmer,
    ...) inside its time limit: a worker replaced after a timeout starts warm too. A
    warm-up that fails is left for the calls themselves to report."""
    if key in _warmed:
        return
    _warmed.add(key)
    # e.g. an optional library missing: each call then reports it as its error.
    with contextlib.suppress(Exception):
        warm_up()


def pool() -> ProcessPool:
    """The process's grader pool, started on first use (and again in a forked child)."""
    global _pool, _pool_pid
    with _lock:
        if _pool is None or _pool_pid != os.getpid() or not _pool.active:
            context = multiprocessing.get_context("fork")
            memory_mb = int(os.environ.get("LCO_GRADER_MEMORY_MB", "4096"))
            _pool = ProcessPool(
                max_workers=_workers(),
                context=context,
                initializer=_init_worker,
                initargs=(memory_mb,),
            )
            _pool_pid = os.getpid()
        return _pool


def submit(fn: Callable[..., T], args: tuple[Any, ...], timeout_s: float) -> Future[T]:
    """Start `fn(*args)` in a worker; it is killed `timeout_s` after it starts running.
    `fn` must be a module-level function (it is pickled by name)."""
    return pool().schedule(fn, args=args, timeout=timeout_s)


def result(future: Future[T], what: str, timeout_s: float) -> T:
    """The call's value; GraderTimeout if it ran out of time, GraderError if its worker
    died (segfault, out of memory), and the call's own GraderError as raised."""
    try:
        return future.result()
    except FutureTimeout:
        raise GraderTimeout(f"{what}: timed out after {timeout_s:g} s") from None
    except ProcessExpired as exc:
        raise GraderError(f"{what}: the grading process died ({exc})") from None
    except MemoryError:
        raise GraderError(f"{what}: out of memory") from None


def call(fn: Callable[..., T], args: tuple[Any, ...], *, timeout_s: float, what: str) -> T:
    """`fn(*args)` in a worker, at most `timeout_s` seconds (see `result`)."""
    return result(submit(fn, args, timeout_s), what, timeout_s)


def shutdown() -> None:
    """Stop the workers (at exit, and in tests that want a fresh pool)."""
    global _pool
    with _lock:
        if _pool is not None and _pool_pid == os.getpid():
            _pool.stop()
            _pool.join(timeout=5)
        _pool = None


atexit.register(shutdown)
